"""The feedback snapshot of a run: the store's feedback rows as Parquet, named by its sha256, gated by its data contract."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from qdup.data import contracts
from qdup.data.feedback import RESOLUTION_RULE, resolve, write_feedback
from qdup.fileio import atomic_write_json, read_json, sha256_file

SNAPSHOT_FILE = "feedback.parquet"
MANIFEST_FILE = "snapshot.json"


def cached_snapshot(root: Path, sha256: str) -> dict[str, Any] | None:
    """The manifest of the snapshot `sha256` under `root` if its file is there with that sha256 (verified), else None."""
    folder = root / sha256
    try:
        manifest = read_json(folder / MANIFEST_FILE)
    except (OSError, ValueError):
        return None
    snapshot = folder / SNAPSHOT_FILE
    if manifest.get("sha256") == sha256 and snapshot.is_file() and sha256_file(snapshot) == sha256:
        return manifest
    return None


def build_feedback_snapshot(frame: pd.DataFrame, root: Path, suite: str, shown: int = 5) -> tuple[dict[str, Any], Path, bool]:
    """Validate `frame` (the store's feedback rows) with `suite`, write it under `root/<sha256>/`; (manifest, folder, reused).

    The same rows give the same bytes and so the same folder: a run with no new feedback finds its snapshot there
    (checked against its recorded sha256) and every stage keyed by it is reused. Raises `contracts.ContractViolation`
    when the rows fail the contract (nothing is written then).
    """
    report = contracts.validate_frame(frame, suite, "feedback", shown=shown)
    if not report.success:
        raise contracts.ContractViolation(report, "feedback snapshot", stem="validation-feedback")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=root))
    try:
        written = write_feedback(frame, tmp / SNAPSHOT_FILE)
        final = root / written["sha256"]
        # Reused things are verified before trusted: a damaged snapshot is written again.
        if (manifest := cached_snapshot(root, written["sha256"])) is not None:
            return manifest, final, True
        shutil.rmtree(final, ignore_errors=True)
        _, conflicts = resolve(frame)
        report.write(tmp, "validation-feedback")
        manifest = {
            "sha256": written["sha256"],
            "file": SNAPSHOT_FILE,
            "rows": written["rows"],
            "labels": written["labels"],
            "versions": sorted(set(frame["version"])),
            "first_at": min(frame["at"]) if len(frame) else None,
            "last_at": max(frame["at"]) if len(frame) else None,
            "conflicting_pairs": conflicts,
            "resolution": RESOLUTION_RULE,
            "suite": suite,
        }
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
        try:
            tmp.rename(final)
        except OSError:  # another run wrote the same snapshot meanwhile: theirs is the same bytes
            if not (final / MANIFEST_FILE).is_file():
                raise
        return manifest, final, False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
