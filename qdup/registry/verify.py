"""Verification of a version's files against its manifest (sha256 and size of every file), on any fsspec filesystem."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
import shutil
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from qdup.errors import TamperedVersionError

MANIFEST = "manifest.json"


def _hash_stream(handle) -> str:
    # Not hashlib.file_digest: fsspec's remote file objects are not guaranteed to offer readinto().
    h = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _runtime_file(rel: str) -> bool:
    """Whether a file is one a reader's library creates beside published files: tantivy takes a lock file in the
    folder it opens (`.tantivy-meta.lock`, `.tantivy-writer.lock`); it holds no data and is never hashed."""
    name = posixpath.basename(rel)
    return name.startswith(".tantivy-") and name.endswith(".lock")


def check_tree(fs: fsspec.AbstractFileSystem, root: str, files: dict[str, Any]) -> list[str]:
    """Problems of the folder `root` against a manifest's `files` (name -> sha256, bytes): missing,
    resized, altered or unexpected files. An empty list means every byte is as published."""
    root = root.rstrip("/")
    found = {}
    if fs.exists(root):
        for path, info in fs.find(root, detail=True).items():
            rel = posixpath.relpath(path, root)
            if rel != MANIFEST and not _runtime_file(rel):
                found[rel] = info.get("size")
    problems = []
    for name, entry in sorted(files.items()):
        if name not in found:
            problems.append(f"{name}: missing")
            continue
        if found[name] is not None and int(found[name]) != int(entry["bytes"]):
            problems.append(f"{name}: {found[name]} bytes, manifest says {entry['bytes']}")
            continue
        with fs.open(posixpath.join(root, name), "rb") as handle:
            digest = _hash_stream(handle)
        if digest != entry["sha256"]:
            problems.append(f"{name}: sha256 {digest[:12]}… differs from the manifest's {entry['sha256'][:12]}…")
    problems += [f"{name}: not in the manifest" for name in sorted(set(found) - set(files))]
    return problems


def version_problems(fs: fsspec.AbstractFileSystem, folder: str, expected: str | None) -> list[str]:
    """Every way the version folder differs from what was published (empty: intact): a manifest that is missing,
    unreadable or not the registered one (sha256 `expected`, None when not registered); files missing, resized,
    altered or unexpected."""
    problems = [] if expected is not None else ["not in the store's registry"]
    try:
        raw = fs.cat_file(posixpath.join(folder, MANIFEST))
    except FileNotFoundError:
        return problems + [f"{MANIFEST}: missing"]
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        problems.append(f"{MANIFEST}: sha256 differs from the one registered at publish")
    try:
        files = json.loads(raw)["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        return problems + [f"{MANIFEST}: unreadable ({exc})"]
    return problems + check_tree(fs, folder, files)


def cached_copy_ok(folder: Path, raw: bytes) -> bool:
    """Whether the local `folder` holds a version whose manifest is `raw` (bytes) and every file as that manifest says."""
    manifest_copy = folder / MANIFEST
    return (manifest_copy.is_file() and manifest_copy.read_bytes() == raw
            and not check_tree(LocalFileSystem(), str(folder), json.loads(raw)["files"]))


def download_verified(fs: fsspec.AbstractFileSystem, remote: str, version: str, raw: bytes, target: Path) -> Path:
    """Download the version folder `remote` (manifest bytes `raw`) into `target`, through a partial folder renamed
    once every file is checked; TamperedVersionError when the download differs from the manifest."""
    files = json.loads(raw)["files"]
    tmp = target.with_name(f".{version}.{secrets.token_hex(4)}.partial")
    try:
        for name in [*files, MANIFEST]:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(posixpath.join(remote, name), str(tmp / name))
        if not cached_copy_ok(tmp, raw):
            raise TamperedVersionError(version, check_tree(LocalFileSystem(), str(tmp), files) or ["download differs from the store"])
        try:
            os.rename(tmp, target)
        except OSError:
            if not cached_copy_ok(target, raw):  # another process's copy won the rename; it must be intact too
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
