"""Where a version's question index lives, in a module without heavy imports: the CLI finds (or misses) an index
before it loads faiss, the encoder or the reranker."""

from __future__ import annotations

from pathlib import Path

MANIFEST = "index.json"
VERSION_INDEX_DIR = "index"
# Versions published without an index get one here, beside `versions/`, so a published version's files never change.
LATE_INDEXES_DIR = "indexes"


def late_index_dir(store_root: Path, version: str) -> Path:
    return Path(store_root) / LATE_INDEXES_DIR / version


def find_index_dir(version_dir: Path) -> Path | None:
    """The index of a version: published with it (`index/`), else built later into `<store>/indexes/<version>/`."""
    version_dir = Path(version_dir)
    for candidate in (version_dir / VERSION_INDEX_DIR, late_index_dir(version_dir.parent.parent, version_dir.name)):
        if (candidate / MANIFEST).is_file():
            return candidate
    return None
