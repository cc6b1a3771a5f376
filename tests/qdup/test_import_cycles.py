"""No import cycles between the project's modules, counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

from qdup.stagecache import imported_names

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("qdup", "tasks", "flows", "deployments", "bench")


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its source)."""
    files: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {m for m in imported_names(ast.parse(path.read_text(), str(path)), package) if m in files and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_project_has_no_import_cycles():
    assert cycles(import_graph(REPO)) == []


def test_a_cycle_is_found(tmp_path):
    for package, source in (("qdup", "from tasks import b\n"), ("tasks", "def f():\n    from qdup import a\n")):
        (tmp_path / package).mkdir()
        (tmp_path / package / ("a.py" if package == "qdup" else "b.py")).write_text(source)
    assert cycles(import_graph(tmp_path)) == [["qdup.a", "tasks.b"]]
