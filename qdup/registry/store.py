"""The artifact store: immutable, hash-verified versions on fsspec, and a SQL registry of versions, aliases and history."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import posixpath
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import sqlalchemy as sa
from fsspec.implementations.local import LocalFileSystem

# StoreError and TamperedVersionError live in qdup.errors so that the server can catch them without importing the
# registry (a layer above it); they, and the registry's StoreUnavailable and RegistryUnavailable, are part of this
# module's interface.
from qdup.errors import ConfigError, StoreError, TamperedVersionError
from qdup.fileio import sha256_file
from qdup.paths import qdup_home, store_dir, validate_name
from qdup.registry.sql_registry import ANY, SqlRegistry, StoreUnavailable, _now, _one_line
from qdup.registry.verify import MANIFEST, cached_copy_ok, check_tree, download_verified, version_problems

REGISTRY_FILE = "registry.sqlite"
REGISTRY_ENV = "QDUP_REGISTRY_URL"
_VERSION_RE = re.compile(r"^\d{8}T\d{6}\d{3}Z-[0-9a-f]{6}$")
# A publish's upload takes minutes; its staging folder is a leftover of a crash only long after.
_STAGING_MAX_AGE_S = 24 * 3600.0


def _unreachable(exc: BaseException) -> bool:
    """A failure to reach remote storage (connection refused, timeout, DNS), not an answer from it."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    kind = type(exc)
    # botocore's EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError... (S3 through s3fs) are not OSErrors.
    return kind.__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp") and any(
        word in kind.__name__ for word in ("Connect", "Connection", "Timeout", "HTTPClient"))


def _reaching_storage(method):
    """Name the store in one line when its storage cannot be reached, as StoreUnavailable."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            if _unreachable(exc):
                raise StoreUnavailable(f"store {self.url} cannot be reached: {_one_line(exc)}") from exc
            raise

    return wrapper


@dataclass(frozen=True)
class StagedVersion:
    """A version uploaded into the store but not registered yet: invisible until `ArtifactStore.register`."""

    version: str
    manifest_sha256: str


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
    """Version files under `<root>/versions/<id>/`; versions, aliases and alias history in a SQL registry.

    A version's files and `manifest.json` (sha256 and size of every file) are written under
    `<root>/.staging/` and moved into `versions/`; only then is the version registered, with the
    manifest's own sha256. Readers list versions from the registry, so they never see a
    half-written one, and every load checks the bytes against those hashes (`open_version`).

    The registry is a SQLite file in the store root by default; stores shared by several hosts
    (s3://, gs://, ...) need a server: `registry_url` (or $QDUP_REGISTRY_URL), e.g.
    `postgresql+psycopg://user@host/db`. An alias move is one transaction holding the registry's
    write lock (SQLite `BEGIN IMMEDIATE`, a PostgreSQL advisory lock): it checks the target is
    registered, updates the alias and appends one history row, or does nothing at all.
    """

    def __init__(self, url: str | None = None, registry_url: str | None = None):
        self.url = url or str(store_dir())
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, LocalFileSystem)
        registry_url = registry_url or os.environ.get(REGISTRY_ENV) or None
        if registry_url is None:
            if not self.is_local:
                raise StoreError(
                    f"store {self.url} is not on a local disk: set publish.registry_url (or ${REGISTRY_ENV}) to a "
                    "shared database, e.g. postgresql+psycopg://user@host/qdup; a SQLite file on one host cannot "
                    "serialise alias moves made by other hosts"
                )
            registry_url = f"sqlite:///{self._p(REGISTRY_FILE)}"
        self.registry_url = registry_url
        self.registry = SqlRegistry(registry_url, self.url, self._import_legacy)

    # ------------------------------------------------------------ stores written before the registry

    def _import_legacy(self, conn: sa.Connection) -> None:
        # Stores written before the registry existed: their versions, alias files and
        # history.jsonl become registry rows once; the old files are no longer read.
        for version in self._version_folders():
            raw = self.fs.cat_file(posixpath.join(self.version_path(version), MANIFEST))
            self.registry.add_version(conn, version, hashlib.sha256(raw).hexdigest())
        history_path = self._p("aliases", "history.jsonl")
        entries = []
        if self.fs.exists(history_path):
            entries = [json.loads(line) for line in self.fs.cat_file(history_path).decode().splitlines() if line.strip()]
        aliases = {}
        aliases_dir = self._p("aliases")
        if self.fs.exists(aliases_dir):
            known = set(self._version_folders())
            for path in self.fs.ls(aliases_dir, detail=False):
                name = posixpath.basename(path)
                if name.endswith(".json"):
                    target = json.loads(self.fs.cat_file(path))["version"]
                    if target in known:
                        aliases[name[: -len(".json")]] = target
        self.registry.import_history(conn, entries, aliases)

    @_reaching_storage
    def _version_folders(self) -> list[str]:
        base = self._p("versions")
        if not self.fs.exists(base):
            return []
        names = (posixpath.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False))
        return sorted(n for n in names if _VERSION_RE.fullmatch(n) and self.fs.exists(posixpath.join(base, n, MANIFEST)))

    # ------------------------------------------------------------ paths

    def _p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def version_path(self, version: str) -> str:
        return self._p("versions", validate_version_id(version))

    def local_path(self, version: str) -> Path:
        """The version's local folder: the store's own for local stores (not hashed: a path, for links),
        a verified download for remote ones. To load a version, use `open_version`."""
        if not self.is_local:
            return self.open_version(version)
        return Path(self.version_path(version))

    # ------------------------------------------------------------ publish

    @_reaching_storage
    def clean_staging(self, max_age_s: float = _STAGING_MAX_AGE_S) -> list[str]:
        """Remove leftovers of crashed publishes: staging folders of versions named more than `max_age_s` ago.

        A staging folder's age is read from the version id in its name (object stores give a prefix no
        modification time); one whose age is unknown is left alone, so that another host's upload in
        progress is never removed.
        """
        staging = self._p(".staging")
        try:
            # On an object store the prefix exists only while it holds objects: another host's publish that finishes
            # between a check and the listing takes it away, so the listing itself says whether there is one.
            paths = self.fs.ls(staging, detail=False)
        except FileNotFoundError:
            return []
        removed = []
        now = dt.datetime.now(dt.UTC)
        for path in paths:
            version = posixpath.basename(path.rstrip("/")).split(".")[0]
            if not _VERSION_RE.fullmatch(version):
                continue
            named = dt.datetime.strptime(version[:18], "%Y%m%dT%H%M%S%f").replace(tzinfo=dt.UTC)
            if (now - named).total_seconds() < max_age_s:
                continue
            try:
                self.fs.rm(path, recursive=True)
            except FileNotFoundError:
                continue  # another host cleaned it first
            removed.append(path)
        return removed

    def publish(self, files: dict[str, Path], manifest: dict[str, Any], version: str | None = None) -> str:
        """Publish `files` (name in version -> local path) with `manifest` as a new version.

        The manifest gains `id`, `created` and `files` (sha256 and size of every file). The version
        is registered, and so visible, only after every file and the manifest are in place.
        """
        staged = self.upload(files, manifest, version)
        self.register(staged)
        return staged.version

    @_reaching_storage
    def upload(self, files: dict[str, Path], manifest: dict[str, Any], version: str | None = None) -> StagedVersion:
        """Write a version's files and manifest into the store, unregistered (invisible to readers); `register` publishes it.

        Takes no lock: uploading a large version never holds up other hosts' alias moves. A folder
        already there and unregistered is adopted when it holds these same files (a retried upload).
        """
        version = validate_version_id(version or new_version_id())
        final = self.version_path(version)
        entries: dict[str, Any] = {}
        for name, src in sorted(files.items()):
            if name == MANIFEST or name.startswith("/") or ".." in name.split("/"):
                raise StoreError(f"refusing file name {name!r} in a version")
            entries[name] = {"sha256": sha256_file(Path(src)), "bytes": Path(src).stat().st_size}
        with self.registry.tx(write=False) as conn:
            registered = self.registry.registered_sha(conn, version) is not None
        if registered:
            raise StoreError(f"version {version} already exists; published versions are never overwritten")
        if self.fs.exists(final):
            return self._adopt(version, entries)
        self.clean_staging()
        staging = self._p(".staging", f"{version}.{secrets.token_hex(4)}")
        try:
            for name, src in sorted(files.items()):
                self.fs.makedirs(posixpath.dirname(posixpath.join(staging, name)), exist_ok=True)
                self.fs.put_file(str(src), posixpath.join(staging, name))
            record = {"id": version, "created": _now(), **manifest, "files": entries}
            body = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
            self.fs.pipe_file(posixpath.join(staging, MANIFEST), body)
            self.fs.makedirs(self._p("versions"), exist_ok=True)
            if self.fs.exists(final):
                raise StoreError(f"version {version} already exists; published versions are never overwritten")
            self._commit(staging, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm(staging, recursive=True)
            raise
        return StagedVersion(version, hashlib.sha256(body).hexdigest())

    def register(self, staged: StagedVersion) -> None:
        """Make an uploaded version visible (one registry row); inside `lock()`, part of its transaction."""
        self.registry.register(staged.version, staged.manifest_sha256)

    @_reaching_storage
    def discard_upload(self, version: str) -> None:
        """Remove the files of a version that was uploaded but never registered (its publish gave it up).

        Only the publish that owns the version id may call it (ids are unique per run); a registered
        version is never removed.
        """
        with self.registry.tx(write=False) as conn:
            if self.registry.registered_sha(conn, version) is not None:
                raise StoreError(f"version {version} is registered; published versions are never removed")
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.version_path(version), recursive=True)

    def _adopt(self, version: str, entries: dict[str, Any]) -> StagedVersion:
        # The folder is there but unregistered: a publish that stopped between its last write and
        # its registration. A retry with the same files completes it; anything else is refused.
        final = self.version_path(version)
        try:
            raw = self.fs.cat_file(posixpath.join(final, MANIFEST))
            same = json.loads(raw).get("files") == entries and not check_tree(self.fs, final, entries)
        except (OSError, ValueError):
            same = False
        if not same:
            raise StoreError(f"version {version} already exists; published versions are never overwritten")
        return StagedVersion(version, hashlib.sha256(raw).hexdigest())

    def _commit(self, staging: str, final: str) -> None:
        if self.is_local:
            # rename(2) is atomic and fails if `final` is a non-empty directory: no overwrite.
            os.rename(staging, final)
        else:
            # Object stores have no rename: copy data first and the manifest last. Readers do not
            # see the version before it is registered, after this returns.
            for path in self.fs.find(staging):
                rel = posixpath.relpath(path, staging)
                if rel != MANIFEST:
                    self.fs.copy(path, posixpath.join(final, rel))
            self.fs.copy(posixpath.join(staging, MANIFEST), posixpath.join(final, MANIFEST))
            self.fs.rm(staging, recursive=True)

    # ------------------------------------------------------------ read

    def versions(self) -> list[str]:
        """Registered (completely written) versions, oldest first."""
        return self.registry.versions()

    @_reaching_storage
    def _manifest_bytes(self, version: str) -> bytes:
        """The manifest as registered; a manifest edited since its publish is refused."""
        validate_version_id(version)
        with self.registry.tx(write=False) as conn:
            expected = self.registry.registered_sha(conn, version)
        if expected is None:
            raise StoreError(f"no version {version!r} in {self.url}")
        try:
            raw = self.fs.cat_file(posixpath.join(self.version_path(version), MANIFEST))
        except FileNotFoundError:
            raise TamperedVersionError(version, [f"{MANIFEST}: missing"]) from None
        if hashlib.sha256(raw).hexdigest() != expected:
            raise TamperedVersionError(version, [f"{MANIFEST}: sha256 differs from the one registered at publish"])
        return raw

    def manifest(self, version: str) -> dict[str, Any]:
        raw = self._manifest_bytes(version)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise TamperedVersionError(version, [f"{MANIFEST}: unreadable ({exc})"]) from None

    def resolve(self, ref: str) -> str:
        """A version id, or an alias name, to a registered version id."""
        if _VERSION_RE.fullmatch(ref or ""):
            with self.registry.tx(write=False) as conn:
                if self.registry.registered_sha(conn, ref) is None:
                    raise StoreError(f"no version {ref!r} in {self.url}")
            return ref
        alias = validate_alias(ref)
        aliases = self.aliases()
        if alias not in aliases:
            raise StoreError(f"{ref!r} is neither a version nor an alias in {self.url} (aliases: {sorted(aliases)})")
        return aliases[alias]

    # ------------------------------------------------------------ verification

    @_reaching_storage
    def verify(self, version: str) -> list[str]:
        """Every way the version differs from what was published (empty: intact): a manifest that is
        missing, unreadable or not the registered one; files missing, resized, altered or unexpected."""
        validate_version_id(version)
        with self.registry.tx(write=False) as conn:
            expected = self.registry.registered_sha(conn, version)
        return version_problems(self.fs, self.version_path(version), expected)

    @_reaching_storage
    def open_version(self, ref: str) -> Path:
        """The local folder of a version or alias, every file checked against the manifest's sha256.

        The alias is resolved once; remote versions are downloaded into $QDUP_HOME/cache/versions/
        (a damaged or partial copy there is fetched again). Raises TamperedVersionError, naming
        the version and its damaged files, rather than hand out altered bytes.
        """
        version = self.resolve(ref)
        if self.is_local:
            problems = self.verify(version)
            if problems:
                raise TamperedVersionError(version, problems)
            return Path(self.version_path(version))
        raw = self._manifest_bytes(version)
        target = qdup_home() / "cache" / "versions" / version
        if cached_copy_ok(target, raw):
            return target
        shutil.rmtree(target, ignore_errors=True)
        problems = self.verify(version)
        if problems:
            raise TamperedVersionError(version, problems)
        return download_verified(self.fs, self.version_path(version), version, raw, target)

    # ------------------------------------------------------------ aliases

    def aliases(self) -> dict[str, str]:
        return self.registry.aliases()

    def aliases_of(self, version: str) -> list[str]:
        return sorted(a for a, v in self.aliases().items() if v == version)

    def history(self) -> list[dict[str, Any]]:
        """Every alias move, oldest first."""
        return self.registry.history()

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the registry's write lock, across hosts: reads and alias moves made in this thread
        inside the block form one transaction, so a decision made on what was read still holds
        when the alias moves. Readers are not blocked."""
        return self.registry.lock()

    def move_alias(self, alias: str, version: str, why: str, actor: str, action: str, *, expected: Any = ANY) -> dict[str, Any]:
        """Point `alias` at `version` and append the move to the history, atomically.

        `expected`: the version (or None) the alias must still point at, else StoreError
        (compare-and-swap for callers that decided outside `lock()`).
        """
        return self.registry.move_alias(validate_alias(alias), validate_version_id(version), why, actor, action,
                                        expected=expected)

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

    def _require_intact(self, version: str) -> None:
        problems = self.verify(version)
        if problems:
            raise TamperedVersionError(version, problems)

    def rollback(self, actor: str) -> dict[str, Any]:
        """Move production back to the version it pointed at before the current one, if intact."""
        with self.lock():
            stack = self.production_stack()
            if len(stack) < 2:
                raise StoreError("production has no previous version to roll back to")
            self._require_intact(stack[-2])
            return self.move_alias("production", stack[-2], f"rollback from {stack[-1]}", actor, "rollback")

    def promote(self, version: str, actor: str, why: str = "manual promotion") -> dict[str, Any]:
        """Point production at a version or alias, once its files are checked against its manifest."""
        version = self.resolve(version)
        self._require_intact(version)
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
