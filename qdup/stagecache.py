"""Content-addressed stage outputs: a stage whose inputs and parameters are unchanged is skipped."""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from qdup import __version__
from qdup.fileio import atomic_dir, atomic_write_json, file_lock, read_json, sha256_file, sha256_json
from qdup.log import WARNING_MARK, LogFn
from qdup.memory import peak_rss_bytes, release_freed_memory, reset_peak_rss
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


# Packages whose modules count as the code a stage runs.
PROJECT_PACKAGES = ("qdup", "tasks", "flows")

# Keras computes with its backend, which its importers never name: code that imports keras runs TensorFlow too.
LIBRARY_IMPLIES = {"keras": ("tensorflow",)}


# The folder holding the project's packages; modules are found there by name, never imported,
# so fingerprinting a stage does not load TensorFlow for a stage that will be skipped.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(tree: ast.AST, package: str) -> set[str]:
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


def _module_trees(*roots: str) -> dict[str, tuple[Path, ast.AST, set[str]]]:
    """Each project module that `roots` import, transitively: its file, its AST and every name it imports."""
    seen: dict[str, tuple[Path, ast.AST, set[str]]] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] not in PROJECT_PACKAGES:
            continue
        path = _module_file(name)
        if path is None:  # `from qdup.x import function`: a name, not a module
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        imported = imported_names(tree, package)
        seen[name] = (path, tree, imported)
        # Importing a submodule runs its packages' __init__ too.
        todo.extend(".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1))
        todo.extend(imported)
    return dict(sorted(seen.items()))


def module_closure(*roots: str) -> dict[str, Path]:
    """The project modules that `roots` import, transitively (found in the source, without importing)."""
    return {name: path for name, (path, _, _) in _module_trees(*roots).items()}


@functools.cache
def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (None: not installed)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _distributions_by_import() -> Mapping[str, list[str]]:
    """Top-level import name -> the installed distributions that provide it (read once per process)."""
    return importlib.metadata.packages_distributions()


def imported_libraries(*roots: str, _trees: dict | None = None) -> list[str]:
    """Top-level names of the third-party modules the stage's modules import: neither the project's nor the standard library's."""
    used: set[str] = set()
    for _, _, imported in (_trees or _module_trees(*roots)).values():
        for name in imported:
            top = name.split(".")[0]
            if top and top not in PROJECT_PACKAGES and top not in sys.stdlib_module_names:
                used.add(top)
                used.update(LIBRARY_IMPLIES.get(top, ()))
    return sorted(used)


def library_versions(*roots: str, _trees: dict | None = None) -> dict[str, str | None]:
    """Installed version of every distribution whose modules the stage's modules import, by distribution name.

    Found from the imports themselves (import name -> distribution by importlib.metadata), so a library a stage
    starts to compute with is in its key without a list to keep; an import nothing installed provides counts by its
    name, with no version.
    """
    provided = _distributions_by_import()
    versions: dict[str, str | None] = {}
    for top in imported_libraries(*roots, _trees=_trees):
        for distribution in provided.get(top) or ():
            versions[distribution] = installed_version(distribution)
        if top not in provided:
            versions[f"import {top}"] = None
    return dict(sorted(versions.items()))


def resources_dir() -> Path:
    return PROJECT_ROOT / "qdup" / "resources"


def resource_files(*roots: str, _trees: dict | None = None) -> dict[str, Path]:
    """The files under qdup/resources that the stage's modules name (a string constant equal to an entry's name).

    A module reads a resource by naming it (`joinpath("resources", "drift.json")`); a named folder
    counts with every file in it.
    """
    root = resources_dir()
    entries = {p.name: p for p in root.iterdir()} if root.is_dir() else {}
    named: set[str] = set()
    for _, tree, _ in (_trees or _module_trees(*roots)).values():
        named.update(n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in entries)
    files: dict[str, Path] = {}
    for name in sorted(named):
        entry = entries[name]
        for path in sorted(entry.rglob("*")) if entry.is_dir() else [entry]:
            if path.is_file():
                files[path.relative_to(root).as_posix()] = path
    return files


def code_fingerprint(*roots: str) -> str:
    """Hash of everything a stage's code depends on, found from its imports.

    The source of every project module it runs, the versions of the third-party libraries those
    modules import, and the resource files (qdup/resources) they read. A stage's roots are its stage
    module and its Prefect task module; any edit to them, to a helper they import or to a resource
    file they name, or another version of a library they compute with, changes the key, so a stale
    stage output is never reused.
    """
    trees = _module_trees(*roots)
    h = hashlib.sha256(__version__.encode())
    for name, (path, _, _) in trees.items():
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for distribution, version in library_versions(_trees=trees).items():
        h.update(f"library:{distribution}=={version}".encode() + b"\0")
    for name, path in resource_files(_trees=trees).items():
        h.update(f"resource:{name}:{sha256_file(path)}".encode() + b"\0")
    return h.hexdigest()


def stage_key(stage: str, inputs: dict[str, Any]) -> str:
    """Key of a stage run: its name plus content hashes of its inputs and its parameters."""
    return sha256_json({"stage": stage, "inputs": inputs})


def stage_dir(stage: str, key: str, home: Path | None = None) -> Path:
    return runs_dir(home) / "stages" / stage / key[:24]


def stage_lock_path(stage: str, key: str, home: Path | None = None) -> Path:
    """The lock file of one stage key, beside its folder."""
    return stage_dir(stage, key, home).with_suffix(".lock")


@contextlib.contextmanager
def stage_lock(stage: str, key: str, log: LogFn, home: Path | None = None) -> Iterator[None]:
    """Hold the lock of (stage, key) while the body runs; wait, saying so and for which stage, while another run holds it.

    A file lock (`qdup.fileio.file_lock`): a lock left by a killed run is free at once, never judged by age.
    """
    path = stage_lock_path(stage, key, home)

    def waiting(holder: str) -> None:
        log(f"[{stage}] waiting: stage {stage} (key {key[:12]}) is being run by {holder}; its output will be reused ({path})")

    with file_lock(path, waiting):
        yield


def _remove_leftover_temps(final: Path) -> None:
    """Remove this key's temporary folders left by a run that died; only called with the key's lock held."""
    for tmp in final.parent.glob(f".{final.name}.*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def output_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file a stage wrote into `folder` (its stage.json aside), by path relative to the folder."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file() and p != folder / MANIFEST}


def damage(folder: Path) -> str | None:
    """Why a finished stage folder cannot be reused as it is (None: every output matches its stage.json).

    Each output file is re-hashed against the sha256 its stage.json recorded when the stage completed, as a
    cached data set is before reuse; a folder whose stage.json records none (older qdup) cannot be checked.
    """
    try:
        recorded = read_json(folder / MANIFEST).get("outputs")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        return f"{folder / MANIFEST} is unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(recorded, dict):
        return f"{folder / MANIFEST} records no output hashes (written by an older qdup), so its outputs cannot be verified"
    for name, digest in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if sha256_file(path) != digest:
            return f"{path} differs from the sha256 in {MANIFEST} (damaged or edited)"
    return None


def _reused(stage: str, key: str, final: Path, log: LogFn) -> StageResult:
    record = read_json(final / MANIFEST)
    log(f"[{stage}] unchanged inputs and parameters: skipping, reusing {final}")
    return StageResult(stage=stage, key=key, path=final, cached=True, manifest=record["manifest"], seconds=record.get("seconds"))


def _remove_damaged(stage: str, final: Path, why: str, log: LogFn) -> None:
    """Move a damaged stage folder out of the way (named like a leftover temp, then removed), warning with the reason.

    Only called with the key's lock held; a reader of the old folder keeps its open files (the folder is renamed,
    then removed), and the rebuild takes the final name.
    """
    log(f"[{stage}] {WARNING_MARK}stage output not reused: {why}; rebuilding it")
    aside = final.with_name(f".{final.name}.damaged-{os.getpid()}.tmp")
    os.rename(final, aside)
    shutil.rmtree(aside, ignore_errors=True)


def run_stage(
    stage: str,
    inputs: dict[str, Any],
    build: Callable[[Path], dict[str, Any]],
    log: LogFn,
    home: Path | None = None,
) -> StageResult:
    """Return the stored output of (stage, inputs) if present and intact, else build it atomically, under the key's lock.

    `build(tmp_dir)` writes the stage's files into `tmp_dir` and returns its manifest; the
    directory becomes visible under its final name only after `build` returned, so a crash
    never leaves a half-written stage that a later run would mistake for a finished one.
    Runs of the same key (other processes, other hosts on shared storage) take turns: the
    second waits for the first and reuses its folder; a run never removes another's files but a
    finished folder whose outputs no longer match the hashes its stage.json recorded: that one is
    rebuilt, with a warning naming the file.
    """
    key = stage_key(stage, inputs)
    final = stage_dir(stage, key, home)
    if (final / MANIFEST).is_file() and damage(final) is None:
        return _reused(stage, key, final, log)
    with stage_lock(stage, key, log, home):
        if (final / MANIFEST).is_file():  # finished, maybe by the run this one waited for
            if (why := damage(final)) is None:
                return _reused(stage, key, final, log)
            _remove_damaged(stage, final, why, log)
        _remove_leftover_temps(final)
        log(f"[{stage}] running (key {key[:12]})")
        release_freed_memory()
        peak_known = reset_peak_rss()
        started = dt.datetime.now(dt.UTC)
        with atomic_dir(final) as tmp:
            manifest = build(tmp)
            finished = dt.datetime.now(dt.UTC)
            # The process's peak while this stage ran (other stages running at the same time included).
            peak = peak_rss_bytes() if peak_known else None
            atomic_write_json(
                tmp / MANIFEST,
                {
                    "stage": stage,
                    "key": key,
                    "inputs": inputs,
                    "started": started.isoformat(),
                    "finished": finished.isoformat(),
                    "seconds": round((finished - started).total_seconds(), 3),
                    "peak_rss_bytes": peak,
                    "manifest": manifest,
                    # Checked before every reuse (`damage`).
                    "outputs": output_hashes(tmp),
                },
            )
    release_freed_memory()
    log(f"[{stage}] done in {(finished - started).total_seconds():.1f}s -> {final}")
    seconds = round((finished - started).total_seconds(), 3)
    return StageResult(stage=stage, key=key, path=final, cached=False, manifest=manifest, seconds=seconds)


def params(model: BaseModel) -> dict[str, Any]:
    """Parameters of a config section as plain JSON values, for stage keys and manifests."""
    return model.model_dump(mode="json", by_alias=True)
