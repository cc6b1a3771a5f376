"""The model `python -m bench.load` serves: a store of two versions of one model (the second: threshold + 0.01), from
a given store's production or from `qdup run` on the real 10k sample (`bench.shared_data.train_on_sample`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def _version_files(folder: Path) -> dict[str, Path]:
    """What serving reads of a version: its model export and its question index (published with it or built later)."""
    from qdup.search.service import VERSION_INDEX_DIR, find_index_dir

    files = {f"model/{p.relative_to(folder / 'model')}": p for p in sorted((folder / "model").rglob("*")) if p.is_file()}
    index_dir = find_index_dir(folder)
    if index_dir is not None:
        files |= {f"{VERSION_INDEX_DIR}/{p.relative_to(index_dir)}": p for p in sorted(index_dir.rglob("*")) if p.is_file()}
    return files


def build_store(root: Path, source_url: str, ref: str = "production") -> dict[str, Any]:
    """A fresh store with the source's `ref` version (same id, so its index still names it) and a second
    version of the same files whose threshold is 0.01 higher; production -> the first."""
    from qdup.registry.store import ArtifactStore, new_version_id
    from qdup.search.index import MANIFEST as INDEX_MANIFEST
    from qdup.search.service import VERSION_INDEX_DIR

    source = ArtifactStore(source_url)
    first = source.resolve(ref)
    folder = source.open_version(first)  # every file checked against the manifest
    manifest = {k: v for k, v in source.manifest(first).items() if k not in ("id", "created", "files")}
    files = _version_files(folder)
    store = ArtifactStore(str(root / "store"))
    store.publish(files, manifest, version=first)

    second = new_version_id()
    work = root / "second"
    copied: dict[str, Path] = {}
    for name, src in files.items():
        copied[name] = work / name
        copied[name].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, copied[name])
    meta_path = copied["model/threshold.json"]
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = min(1.0, float(meta["threshold"]) + 0.01)
    meta_path.write_text(json.dumps(meta, indent=2))
    second_manifest = json.loads(json.dumps(manifest))
    if isinstance(second_manifest.get("threshold"), dict):
        second_manifest["threshold"]["value"] = meta["threshold"]
    else:
        second_manifest["threshold"] = {"value": meta["threshold"]}
    index_manifest = copied.get(f"{VERSION_INDEX_DIR}/{INDEX_MANIFEST}")
    if index_manifest is not None:  # the index names the model version that built it
        index_meta = json.loads(index_manifest.read_text())
        index_meta["model_version"] = second
        index_manifest.write_text(json.dumps(index_meta, indent=2))
    store.publish(copied, second_manifest, version=second)
    store.promote(first, "bench.load", why="load test: first version")
    return {"store": store.url, "first": first, "second": second, "source": source_url}


# ---------------------------------------------------------------- questions
