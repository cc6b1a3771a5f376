"""Which data sets qdup generated itself (`qdup demo-data`), known by their sha256, so that no model trained on one
is taken for a model of real questions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from qdup.fileio import atomic_write_json
from qdup.paths import qdup_home

GENERATOR = "qdup demo-data"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def generated_dir(home: Path | None = None) -> Path:
    return (home or qdup_home()) / "generated"


def record_generated(info: dict[str, Any], home: Path | None = None) -> Path:
    """Remember a file the generator wrote, by its content's sha256: real data can only match it by a sha256 collision,
    and a copy or rename of the file is still recognised."""
    sha = str(info["sha256"])
    if not _SHA256.fullmatch(sha):
        raise ValueError(f"not a sha256: {sha!r}")
    path = generated_dir(home) / f"{sha}.json"
    atomic_write_json(path, {"generator": GENERATOR, **{k: info[k] for k in ("sha256", "rows", "seed") if k in info}})
    return path


def generated_record(sha256: str | None, home: Path | None = None) -> dict[str, Any] | None:
    """What the generator recorded about the file with this sha256, or None when qdup did not generate it (here)."""
    if not sha256 or not _SHA256.fullmatch(sha256):
        return None
    path = generated_dir(home) / f"{sha256}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
