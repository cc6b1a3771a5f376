"""Content-addressed stage outputs: a stage whose inputs and parameters are unchanged is skipped."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
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


# Packages whose modules count as the code a stage runs (third-party code is pinned by constraints.txt
# and recorded in each version's manifest instead).
PROJECT_PACKAGES = ("qdup", "tasks", "flows")


# The folder holding the project's packages; modules are found there by name, never imported,
# so fingerprinting a stage does not load TensorFlow for a stage that will be skipped.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(tree: ast.AST, package: str) -> set[str]:
    """Every module an AST imports, at top level or inside functions, as absolute dotted names."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            # `from qdup.model import vocab` imports the submodule qdup.model.vocab.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def module_closure(*roots: str) -> dict[str, Path]:
    """The project modules that `roots` import, transitively (found in the source, without importing)."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] not in PROJECT_PACKAGES:
            continue
        path = _module_file(name)
        if path is None:  # `from qdup.x import function`: a name, not a module
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        # Importing a submodule runs its packages' __init__ too.
        todo.extend(".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1))
        todo.extend(_imported_names(ast.parse(path.read_text(), str(path)), package))
    return dict(sorted(seen.items()))


def code_fingerprint(*roots: str) -> str:
    """Hash of the source of every project module the stage's code runs, found from its imports.

    A stage's roots are its stage module and its Prefect task module; any edit to them, or to
    a helper they import, changes the key, so a stale stage output is never reused.
    """
    h = hashlib.sha256(__version__.encode())
    for name, path in module_closure(*roots).items():
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
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
