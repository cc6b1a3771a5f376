"""The artifact store: immutable, atomically published versions and aliases with history (fsspec)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import posixpath
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from qdup.errors import ConfigError, QdupError
from qdup.fileio import sha256_file
from qdup.paths import qdup_home, store_dir, validate_name

MANIFEST = "manifest.json"
_VERSION_RE = re.compile(r"^\d{8}T\d{6}\d{3}Z-[0-9a-f]{6}$")
_STAGING_MAX_AGE_S = 3600.0


class StoreError(QdupError):
    """A store operation was refused: unknown version or alias, or an attempt to overwrite."""


def new_version_id(now: dt.datetime | None = None) -> str:
    """Sortable (UTC time to the millisecond) and unique (random suffix) version id."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(3)


def validate_version_id(version: str) -> str:
    validate_name(version, "version id")
    if not _VERSION_RE.fullmatch(version):
        raise ConfigError(f"invalid version id {version!r}: expected e.g. 20261123T010203456Z-a1b2c3")
    return version


def validate_alias(alias: str) -> str:
    validate_name(alias, "alias name")
    if _VERSION_RE.fullmatch(alias):
        raise ConfigError(f"invalid alias name {alias!r}: it looks like a version id")
    return alias


class ArtifactStore:
    """Versions under `<root>/versions/<id>/`, aliases under `<root>/aliases/<name>.json`.

    A version becomes visible when its folder, `manifest.json` included, is moved from
    `<root>/.staging/` into `versions/` (a rename on local disks); readers list only folders
    that hold a manifest, so a crash at any point leaves nothing visible. Alias moves happen
    under a lock and are appended to `aliases/history.jsonl`.
    """

    def __init__(self, url: str | None = None):
        self.url = url or str(store_dir())
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/") or "/"

    # ------------------------------------------------------------ paths

    def _p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def version_path(self, version: str) -> str:
        return self._p("versions", validate_version_id(version))

    def local_path(self, version: str) -> Path:
        """A local folder for the version (only for local stores; remote ones are downloaded)."""
        if not isinstance(self.fs, LocalFileSystem):
            target = qdup_home() / "cache" / "versions" / version
            if not (target / MANIFEST).is_file():
                self.fs.get(self.version_path(version), str(target), recursive=True)
            return target
        return Path(self.version_path(version))

    # ------------------------------------------------------------ publish

    def clean_staging(self, max_age_s: float = _STAGING_MAX_AGE_S) -> list[str]:
        """Remove leftovers of crashed publishes (staging folders untouched for `max_age_s`)."""
        staging = self._p(".staging")
        if not self.fs.exists(staging):
            return []
        removed = []
        now = dt.datetime.now(dt.UTC).timestamp()
        for entry in self.fs.ls(staging, detail=True):
            mtime = entry.get("mtime") or entry.get("LastModified") or entry.get("created")
            if isinstance(mtime, dt.datetime):
                mtime = mtime.timestamp()
            if mtime is not None and now - float(mtime) < max_age_s:
                continue
            self.fs.rm(entry["name"], recursive=True)
            removed.append(entry["name"])
        return removed

    def publish(self, files: dict[str, Path], manifest: dict[str, Any], version: str | None = None) -> str:
        """Publish `files` (name in version -> local path) with `manifest` as a new version.

        The manifest gains `id`, `created` and `files` (sha256 and size of every file).
        """
        version = validate_version_id(version or new_version_id())
        final = self.version_path(version)
        if self.fs.exists(final):
            raise StoreError(f"version {version} already exists; published versions are never overwritten")
        self.clean_staging()
        staging = self._p(".staging", f"{version}.{secrets.token_hex(4)}")
        entries: dict[str, Any] = {}
        try:
            for name, src in sorted(files.items()):
                if name == MANIFEST or name.startswith("/") or ".." in name.split("/"):
                    raise StoreError(f"refusing file name {name!r} in a version")
                self.fs.makedirs(posixpath.dirname(posixpath.join(staging, name)), exist_ok=True)
                self.fs.put_file(str(src), posixpath.join(staging, name))
                entries[name] = {"sha256": sha256_file(Path(src)), "bytes": Path(src).stat().st_size}
            record = {
                "id": version,
                "created": dt.datetime.now(dt.UTC).isoformat(),
                **manifest,
                "files": entries,
            }
            self.fs.pipe_file(posixpath.join(staging, MANIFEST), json.dumps(record, indent=2, sort_keys=True, default=str).encode())
            self.fs.makedirs(self._p("versions"), exist_ok=True)
            if self.fs.exists(final):
                raise StoreError(f"version {version} already exists; published versions are never overwritten")
            self._commit(staging, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm(staging, recursive=True)
            raise
        return version

    def _commit(self, staging: str, final: str) -> None:
        if isinstance(self.fs, LocalFileSystem):
            # rename(2) is atomic and fails if `final` is a non-empty directory: no overwrite.
            os.rename(staging, final)
        else:
            # Object stores have no rename: copy data first and the manifest last, so the
            # version is invisible to readers (no manifest) until the very last write.
            for path in self.fs.find(staging):
                rel = posixpath.relpath(path, staging)
                if rel != MANIFEST:
                    self.fs.copy(path, posixpath.join(final, rel))
            self.fs.copy(posixpath.join(staging, MANIFEST), posixpath.join(final, MANIFEST))
            self.fs.rm(staging, recursive=True)

    # ------------------------------------------------------------ read

    def versions(self) -> list[str]:
        """Visible versions, oldest first."""
        base = self._p("versions")
        if not self.fs.exists(base):
            return []
        out = []
        for path in self.fs.ls(base, detail=False):
            name = posixpath.basename(path.rstrip("/"))
            if _VERSION_RE.fullmatch(name) and self.fs.exists(posixpath.join(path, MANIFEST)):
                out.append(name)
        return sorted(out)

    def manifest(self, version: str) -> dict[str, Any]:
        path = posixpath.join(self.version_path(version), MANIFEST)
        if not self.fs.exists(path):
            raise StoreError(f"no version {version!r} in {self.url}")
        return json.loads(self.fs.cat_file(path))

    def resolve(self, ref: str) -> str:
        """A version id, or an alias name, to a version id."""
        if _VERSION_RE.fullmatch(ref or ""):
            self.manifest(ref)
            return ref
        alias = validate_alias(ref)
        target = self.aliases().get(alias)
        if target is None:
            raise StoreError(f"{ref!r} is neither a version nor an alias in {self.url} (aliases: {sorted(self.aliases())})")
        return target

    # ------------------------------------------------------------ aliases

    def aliases(self) -> dict[str, str]:
        base = self._p("aliases")
        if not self.fs.exists(base):
            return {}
        out = {}
        for path in self.fs.ls(base, detail=False):
            name = posixpath.basename(path)
            if name.endswith(".json"):
                out[name[: -len(".json")]] = json.loads(self.fs.cat_file(path))["version"]
        return out

    def aliases_of(self, version: str) -> list[str]:
        return sorted(a for a, v in self.aliases().items() if v == version)

    def history(self) -> list[dict[str, Any]]:
        path = self._p("aliases", "history.jsonl")
        if not self.fs.exists(path):
            return []
        return [json.loads(line) for line in self.fs.cat_file(path).decode().splitlines() if line.strip()]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise alias moves. Local stores lock the store itself; remote ones lock per host."""
        if isinstance(self.fs, LocalFileSystem):
            lock_path = Path(self._p(".lock"))
        else:
            lock_path = qdup_home() / "locks" / (re.sub(r"[^A-Za-z0-9]+", "_", self.url) + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write_atomic(self, path: str, data: bytes) -> None:
        if isinstance(self.fs, LocalFileSystem):
            from qdup.fileio import atomic_write_bytes

            atomic_write_bytes(Path(path), data)
        else:
            self.fs.pipe_file(path, data)  # a single object PUT is atomic on object stores

    def move_alias(self, alias: str, version: str, why: str, actor: str, action: str) -> dict[str, Any]:
        """Point `alias` at `version` and append the move to the history. Call under `lock()`."""
        alias = validate_alias(alias)
        self.manifest(version)
        previous = self.aliases().get(alias)
        entry = {
            "alias": alias,
            "from": previous,
            "to": version,
            "action": action,
            "why": why,
            "actor": actor,
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
        self.fs.makedirs(self._p("aliases"), exist_ok=True)
        history = self.history() + [entry]
        body = "".join(json.dumps(e, sort_keys=True) + "\n" for e in history).encode()
        self._write_atomic(self._p("aliases", "history.jsonl"), body)
        self._write_atomic(self._p("aliases", f"{alias}.json"), json.dumps({"version": version, **entry}, indent=2).encode())
        return entry

    def production_stack(self) -> list[str]:
        """Production's targets in order, with rolled-back ones removed (the last is current)."""
        stack: list[str] = []
        for e in self.history():
            if e["alias"] != "production":
                continue
            if e["action"] == "rollback":
                if stack:
                    stack.pop()
                if not stack or stack[-1] != e["to"]:
                    stack.append(e["to"])
            else:
                stack.append(e["to"])
        return stack

    def rollback(self, actor: str) -> dict[str, Any]:
        """Move production back to the version it pointed at before the current one."""
        with self.lock():
            stack = self.production_stack()
            if len(stack) < 2:
                raise StoreError("production has no previous version to roll back to")
            return self.move_alias("production", stack[-2], f"rollback from {stack[-1]}", actor, "rollback")

    def promote(self, version: str, actor: str, why: str = "manual promotion") -> dict[str, Any]:
        version = self.resolve(version)
        with self.lock():
            return self.move_alias("production", version, why, actor, "promote")


def actor() -> str:
    """Who moves an alias: the user and host, for the alias history."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
