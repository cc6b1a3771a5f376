"""Content-addressed stage outputs: a stage whose inputs and parameters are unchanged is skipped."""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from qdup import __version__
from qdup.fileio import atomic_dir, atomic_write_json, clean_stale_temps, read_json, sha256_json
from qdup.log import LogFn
from qdup.paths import runs_dir

MANIFEST = "stage.json"


class StageResult(BaseModel):
    """What a finished stage hands to the next: where its outputs are and what they are."""

    stage: str
    key: str
    path: Path
    cached: bool
    manifest: dict[str, Any]
    seconds: float | None = None

    def file(self, name: str) -> Path:
        return self.path / name


def code_fingerprint(*modules: ModuleType) -> str:
    """Hash of the source of the modules that implement a stage, so code changes invalidate it."""
    h = hashlib.sha256(__version__.encode())
    for m in modules:
        h.update(inspect.getsource(m).encode())
    return h.hexdigest()


def stage_key(stage: str, inputs: dict[str, Any]) -> str:
    """Key of a stage run: its name plus content hashes of its inputs and its parameters."""
    return sha256_json({"stage": stage, "inputs": inputs})


def stage_dir(stage: str, key: str, home: Path | None = None) -> Path:
    return runs_dir(home) / "stages" / stage / key[:24]


def run_stage(
    stage: str,
    inputs: dict[str, Any],
    build: Callable[[Path], dict[str, Any]],
    log: LogFn,
    home: Path | None = None,
) -> StageResult:
    """Return the stored output of (stage, inputs) if present, else build it atomically.

    `build(tmp_dir)` writes the stage's files into `tmp_dir` and returns its manifest; the
    directory becomes visible under its final name only after `build` returned, so a crash
    never leaves a half-written stage that a later run would mistake for a finished one.
    """
    key = stage_key(stage, inputs)
    final = stage_dir(stage, key, home)
    done = final / MANIFEST
    if done.is_file():
        record = read_json(done)
        log(f"[{stage}] unchanged inputs and parameters: skipping, reusing {final}")
        return StageResult(stage=stage, key=key, path=final, cached=True, manifest=record["manifest"], seconds=record.get("seconds"))
    clean_stale_temps(final.parent)
    log(f"[{stage}] running (key {key[:12]})")
    started = dt.datetime.now(dt.UTC)
    with atomic_dir(final) as tmp:
        manifest = build(tmp)
        finished = dt.datetime.now(dt.UTC)
        atomic_write_json(
            tmp / MANIFEST,
            {
                "stage": stage,
                "key": key,
                "inputs": inputs,
                "started": started.isoformat(),
                "finished": finished.isoformat(),
                "seconds": round((finished - started).total_seconds(), 3),
                "manifest": manifest,
            },
        )
    log(f"[{stage}] done in {(finished - started).total_seconds():.1f}s -> {final}")
    seconds = round((finished - started).total_seconds(), 3)
    return StageResult(stage=stage, key=key, path=final, cached=False, manifest=manifest, seconds=seconds)


def params(model: BaseModel) -> dict[str, Any]:
    """Parameters of a config section as plain JSON values, for stage keys and manifests."""
    return model.model_dump(mode="json", by_alias=True)
