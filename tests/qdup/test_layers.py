"""The layers of qdup/, enforced: no module imports a layer above its own, and no package cycle.

Layers, bottom to top (a module may import its own layer and any layer below it, never one above):

    0 base        the small top-level modules, qdup/*.py (config, errors, paths, fileio, log, runtime, ...)
    1 data        qdup/data        reading, validating, splitting and profiling the pairs
    2 model       qdup/model       the encoder, its training, its export files and fast form
    3 evaluation  qdup/evaluation  metrics, bootstrap, baseline, the pair reranker
    4 search      qdup/search      indexes, lexical and hybrid search, mining
    5 serving     qdup/serving     predictor, micro-batching, caches, following a store's alias
    6 registry    qdup/registry    the store, publishing and the gate, lineage, card, reproduction
    7 stages      qdup/stages      one public build_<stage> per pipeline stage
    8 app         qdup/cli and the HTTP app (qdup/serving/http.py and the routes it installs), which wire everything
                  together

Search sits below serving (the server wraps a version's searcher; search never needs the server), and serving
below the registry (the server is handed a store and names only the methods it calls, `VersionStore`). No module
outside the app layer imports Prefect, tasks, flows or deployments. Imports inside functions count as well.

Every import is read from the source with `ast`, so a failure names the importing module, the line and the target.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from qdup.stagecache import imported_names

REPO = Path(__file__).resolve().parents[2]

LAYERS = ("base", "data", "model", "evaluation", "search", "serving", "registry", "stages", "app")
PACKAGE_LAYERS = {"data": "data", "model": "model", "evaluation": "evaluation", "search": "search", "serving": "serving",
                  "registry": "registry", "stages": "stages", "cli": "app"}
# Modules whose layer is not their package's: the HTTP app and the routes it installs.
MODULE_LAYERS = {"qdup.serving.http": "app", "qdup.serving.feedback_api": "app"}
# Only the app layer may import the orchestration packages.
ORCHESTRATION = ("prefect", "tasks", "flows", "deployments")

@dataclass(frozen=True)
class Import:
    module: str
    path: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.target}"


def layer_of(module: str) -> str:
    """The layer of a qdup module, or of a name inside one (dotted)."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        if ".".join(parts[:n]) in MODULE_LAYERS:
            return MODULE_LAYERS[".".join(parts[:n])]
    return PACKAGE_LAYERS.get(parts[1], "base") if len(parts) > 1 else "base"


def qdup_imports(root: Path) -> list[Import]:
    """Every import statement of every module under root/qdup, one entry per imported name."""
    found = []
    for path in sorted((root / "qdup").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                # imported_names of the one statement: the stage cache's reading of imports, relative ones resolved.
                # `from a.b import c` reads as a.b and a.b.c: one entry per layer named, its shortest name.
                by_layer: dict[str | None, str] = {}
                for target in sorted(imported_names(node, package), key=len):
                    by_layer.setdefault(target_layer(target) if target.startswith("qdup.") else target.split(".")[0], target)
                found.extend(Import(module, path.relative_to(root), node.lineno, target) for target in sorted(by_layer.values()))
    return found


def target_layer(target: str) -> str | None:
    """The layer of an imported qdup module or name, None for anything outside qdup (and for the bare package)."""
    return layer_of(target) if target.startswith("qdup.") else None


def upward_imports(imports: list[Import]) -> list[Import]:
    """Imports of a layer above the importer's, and of orchestration packages outside the app layer."""
    bad = []
    for imp in imports:
        own = layer_of(imp.module)
        if imp.target.split(".")[0] in ORCHESTRATION:
            if own != "app":
                bad.append(imp)
            continue
        other = target_layer(imp.target)
        if other is not None and LAYERS.index(other) > LAYERS.index(own):
            bad.append(imp)
    return bad


def package_cycles(imports: list[Import]) -> list[list[str]]:
    """Cycles between layers (a layer that imports one that imports it back, however indirectly)."""
    edges: dict[str, set[str]] = {name: set() for name in LAYERS}
    for imp in imports:
        other = target_layer(imp.target)
        if other is not None and other != layer_of(imp.module):
            edges[layer_of(imp.module)].add(other)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(edges[node])
        return False

    return [[a, b] for a in LAYERS for b in edges[a] if LAYERS.index(a) < LAYERS.index(b) and reaches(b, a)]


def test_no_module_imports_a_layer_above_its_own():
    bad = [str(imp) for imp in upward_imports(qdup_imports(REPO))]
    assert bad == [], "upward imports (see the layer order in tests/qdup/test_layers.py):\n" + "\n".join(bad)


def test_no_cycle_between_layers():
    assert package_cycles(qdup_imports(REPO)) == []


def test_an_upward_import_is_named_with_its_line(tmp_path):
    (tmp_path / "qdup" / "data").mkdir(parents=True)
    (tmp_path / "qdup" / "serving").mkdir()
    (tmp_path / "qdup" / "data" / "fetch.py").write_text("import json\n\n\ndef f():\n    from qdup.registry.store import ArtifactStore\n")
    (tmp_path / "qdup" / "serving" / "app.py").write_text("from ..search import service\nfrom qdup.model import fast\nfrom qdup import stages\n")
    (tmp_path / "qdup" / "config.py").write_text("from flows import retrain\n")
    found = sorted(str(imp) for imp in upward_imports(qdup_imports(tmp_path)))
    assert found == [
        "qdup/config.py:1: qdup.config imports flows",
        "qdup/data/fetch.py:5: qdup.data.fetch imports qdup.registry.store",
        "qdup/serving/app.py:3: qdup.serving.app imports qdup.stages",
    ]


def test_a_cycle_between_layers_is_found(tmp_path):
    for package, source in (("search", "from qdup.serving.predictor import x\n"), ("serving", "from qdup.search import service\n")):
        (tmp_path / "qdup" / package).mkdir(parents=True)
        (tmp_path / "qdup" / package / "m.py").write_text(source)
    assert package_cycles(qdup_imports(tmp_path)) == [["search", "serving"]]
