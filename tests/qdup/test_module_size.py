"""Modules stay small, one concern each: no module of qdup/, tasks/ or flows/ is over MAX_LINES lines.

A module that grows past the limit is split along a seam (one idea per module), not raised past it.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("qdup", "tasks", "flows")
MAX_LINES = 450


def oversized(root: Path, limit: int = MAX_LINES) -> list[str]:
    """'path: N lines' for every module of PACKAGES under `root` with more than `limit` lines, longest first."""
    found = []
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > limit:
                found.append((lines, path.relative_to(root).as_posix()))
    return [f"{name}: {lines} lines" for lines, name in sorted(found, reverse=True)]


def test_no_module_is_over_the_limit():
    big = oversized(REPO)
    assert big == [], f"modules over {MAX_LINES} lines (split them by concern):\n" + "\n".join(big)


def test_a_module_over_the_limit_is_named(tmp_path):
    (tmp_path / "qdup" / "data").mkdir(parents=True)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "bench").mkdir()
    (tmp_path / "qdup" / "data" / "big.py").write_text("x = 1\n" * 11)
    (tmp_path / "qdup" / "small.py").write_text("x = 1\n" * 10)
    (tmp_path / "tasks" / "bigger.py").write_text("x = 1\n" * 12)
    (tmp_path / "bench" / "other.py").write_text("x = 1\n" * 50)  # not a package this test covers
    assert oversized(tmp_path, limit=10) == ["tasks/bigger.py: 12 lines", "qdup/data/big.py: 11 lines"]
