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
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import sqlalchemy as sa
from fsspec.implementations.local import LocalFileSystem

# StoreError and TamperedVersionError live in qdup.errors so that the server can catch them without importing the
# registry (a layer above it); they are part of this module's interface.
from qdup.errors import ConfigError, StoreError, TamperedVersionError
from qdup.fileio import sha256_file
from qdup.paths import qdup_home, store_dir, validate_name

MANIFEST = "manifest.json"
REGISTRY_FILE = "registry.sqlite"
REGISTRY_ENV = "QDUP_REGISTRY_URL"
_VERSION_RE = re.compile(r"^\d{8}T\d{6}\d{3}Z-[0-9a-f]{6}$")
# A publish's upload takes minutes; its staging folder is a leftover of a crash only long after.
_STAGING_MAX_AGE_S = 24 * 3600.0
_SQLITE_BUSY_TIMEOUT_MS = 120_000
# One PostgreSQL advisory lock serialises every alias move of a registry ("qdup" in ASCII).
_PG_LOCK_KEY = 0x71647570
_ANY = object()


def _one_line(error: BaseException) -> str:
    """A driver's message on one line (psycopg adds a hint line), for the one-line errors the CLI prints."""
    return " ".join(str(error).split())


class StoreUnavailable(StoreError):
    """The store's storage or its registry could not be reached (or was busy): transient, worth retrying; nothing was changed."""


class RegistryUnavailable(StoreUnavailable):
    """The registry could not be reached or was busy."""


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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# ---------------------------------------------------------------- the SQL registry

_META = sa.MetaData()
_T_VERSIONS = sa.Table(
    "qdup_versions",
    _META,
    sa.Column("id", sa.String(64), primary_key=True),
    # The manifest's own hash: editing a file *and* its manifest entry is caught too.
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("registered_at", sa.String(40), nullable=False),
)
_T_ALIASES = sa.Table(
    "qdup_aliases",
    _META,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(64), sa.ForeignKey("qdup_versions.id"), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
)
_T_HISTORY = sa.Table(
    "qdup_alias_history",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alias", sa.String(128), nullable=False),
    sa.Column("from_version", sa.String(64), nullable=True),
    sa.Column("to_version", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
)
_T_META = sa.Table(
    "qdup_registry_meta",
    _META,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

_ENGINES: dict[str, tuple[int, sa.Engine]] = {}
_ENGINES_LOCK = threading.Lock()
# The write transaction a thread holds inside `lock()`, per registry: every store object of
# that registry in that thread joins it instead of waiting for itself.
_HELD = threading.local()
# Registries whose schema this process has checked: (registry URL, pid).
_READY: set[tuple[str, int]] = set()


def _make_engine(url: str) -> sa.Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

    # SQLAlchemy's documented recipe: let SQLAlchemy, not the sqlite3 module, emit BEGIN, so
    # that writers can take the database's write lock up front (BEGIN IMMEDIATE) and a
    # read-decide-write sequence under `lock()` cannot interleave with another process's.
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("qdup_write") else "BEGIN")

    return engine


def _engine(url: str) -> sa.Engine:
    with _ENGINES_LOCK:
        pid, engine = _ENGINES.get(url, (None, None))
        if engine is None or pid != os.getpid():
            if engine is not None:
                engine.dispose(close=False)  # a forked child must not reuse its parent's connections
            engine = _make_engine(url)
            _ENGINES[url] = (os.getpid(), engine)
        return engine


def _redacted(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _hash_stream(handle) -> str:
    # Not hashlib.file_digest: fsspec's remote file objects are not guaranteed to offer readinto().
    h = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def check_tree(fs: fsspec.AbstractFileSystem, root: str, files: dict[str, Any]) -> list[str]:
    """Problems of the folder `root` against a manifest's `files` (name -> sha256, bytes): missing,
    resized, altered or unexpected files. An empty list means every byte is as published."""
    root = root.rstrip("/")
    found = {}
    if fs.exists(root):
        for path, info in fs.find(root, detail=True).items():
            rel = posixpath.relpath(path, root)
            if rel != MANIFEST:
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
        self._is_pg = sa.engine.make_url(registry_url).get_backend_name() == "postgresql"

    # ------------------------------------------------------------ registry plumbing

    def _held(self) -> sa.Connection | None:
        return getattr(_HELD, "conns", {}).get(self.registry_url)

    @contextlib.contextmanager
    def _tx(self, write: bool) -> Iterator[sa.Connection]:
        """A registry transaction; a write one holds the registry's write lock until it ends."""
        held = self._held()
        if held is not None:
            yield held
            return
        self._ensure_schema()
        try:
            with _engine(self.registry_url).connect() as conn:
                conn = conn.execution_options(qdup_write=write)
                with conn.begin():
                    if write and self._is_pg:
                        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
                    yield conn
        except sa.exc.OperationalError as exc:  # unreachable server, SQLite busy past its timeout, ...
            raise RegistryUnavailable(f"registry {_redacted(self.registry_url)} of store {self.url}: {_one_line(exc.orig or exc)}") from exc

    def _ensure_schema(self) -> None:
        key = (self.registry_url, os.getpid())
        if key in _READY:
            return
        engine = _engine(self.registry_url)
        try:
            # Usually the schema is there: check without the write lock, so readers never wait.
            with engine.connect() as conn, conn.begin():
                ready = conn.execute(sa.select(_T_META.c.value).where(_T_META.c.key == "schema")).first() is not None
        except sa.exc.DBAPIError:
            ready = False
        try:
            if not ready:
                with engine.connect() as conn:
                    conn = conn.execution_options(qdup_write=True)
                    with conn.begin():
                        if self._is_pg:
                            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
                        _META.create_all(conn, checkfirst=True)
                        if conn.execute(sa.select(_T_META.c.value).where(_T_META.c.key == "schema")).first() is None:
                            self._import_legacy(conn)
                            conn.execute(sa.insert(_T_META).values(key="schema", value="1"))
        except sa.exc.OperationalError as exc:
            raise RegistryUnavailable(
                f"registry {_redacted(self.registry_url)} of store {self.url} cannot be reached: {_one_line(exc.orig or exc)}"
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"registry {_redacted(self.registry_url)} of store {self.url} cannot be used: {exc}") from exc
        _READY.add(key)

    def _import_legacy(self, conn: sa.Connection) -> None:
        # Stores written before the registry existed: their versions, alias files and
        # history.jsonl become registry rows once; the old files are no longer read.
        for version in self._version_folders():
            raw = self.fs.cat_file(posixpath.join(self.version_path(version), MANIFEST))
            conn.execute(sa.insert(_T_VERSIONS).values(id=version, manifest_sha256=hashlib.sha256(raw).hexdigest(), registered_at=_now()))
        history_path = self._p("aliases", "history.jsonl")
        if self.fs.exists(history_path):
            for line in self.fs.cat_file(history_path).decode().splitlines():
                if line.strip():
                    e = json.loads(line)
                    conn.execute(sa.insert(_T_HISTORY).values(
                        alias=e["alias"], from_version=e["from"], to_version=e["to"], action=e["action"],
                        why=e["why"], actor=e["actor"], at=e["at"]))
        aliases_dir = self._p("aliases")
        if self.fs.exists(aliases_dir):
            known = set(self._version_folders())
            for path in self.fs.ls(aliases_dir, detail=False):
                name = posixpath.basename(path)
                if name.endswith(".json"):
                    target = json.loads(self.fs.cat_file(path))["version"]
                    if target in known:
                        conn.execute(sa.insert(_T_ALIASES).values(name=name[: -len(".json")], version=target, revision=1, updated_at=_now()))

    @_reaching_storage
    def _version_folders(self) -> list[str]:
        base = self._p("versions")
        if not self.fs.exists(base):
            return []
        names = (posixpath.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False))
        return sorted(n for n in names if _VERSION_RE.fullmatch(n) and self.fs.exists(posixpath.join(base, n, MANIFEST)))

    def _registered_sha(self, conn: sa.Connection, version: str) -> str | None:
        return conn.execute(sa.select(_T_VERSIONS.c.manifest_sha256).where(_T_VERSIONS.c.id == version)).scalar()

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
        if not self.fs.exists(staging):
            return []
        removed = []
        now = dt.datetime.now(dt.UTC)
        for path in self.fs.ls(staging, detail=False):
            version = posixpath.basename(path.rstrip("/")).split(".")[0]
            if not _VERSION_RE.fullmatch(version):
                continue
            named = dt.datetime.strptime(version[:18], "%Y%m%dT%H%M%S%f").replace(tzinfo=dt.UTC)
            if (now - named).total_seconds() < max_age_s:
                continue
            self.fs.rm(path, recursive=True)
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
        with self._tx(write=False) as conn:
            registered = self._registered_sha(conn, version) is not None
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
        self._register(staged.version, staged.manifest_sha256)

    @_reaching_storage
    def discard_upload(self, version: str) -> None:
        """Remove the files of a version that was uploaded but never registered (its publish gave it up).

        Only the publish that owns the version id may call it (ids are unique per run); a registered
        version is never removed.
        """
        with self._tx(write=False) as conn:
            if self._registered_sha(conn, version) is not None:
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

    def _register(self, version: str, manifest_sha256: str) -> None:
        try:
            with self._tx(write=True) as conn:
                conn.execute(sa.insert(_T_VERSIONS).values(id=version, manifest_sha256=manifest_sha256, registered_at=_now()))
        except sa.exc.IntegrityError as exc:
            raise StoreError(f"version {version} already exists; published versions are never overwritten") from exc

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
        with self._tx(write=False) as conn:
            return list(conn.execute(sa.select(_T_VERSIONS.c.id).order_by(_T_VERSIONS.c.id)).scalars())

    @_reaching_storage
    def _manifest_bytes(self, version: str) -> bytes:
        """The manifest as registered; a manifest edited since its publish is refused."""
        validate_version_id(version)
        with self._tx(write=False) as conn:
            expected = self._registered_sha(conn, version)
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
            with self._tx(write=False) as conn:
                if self._registered_sha(conn, ref) is None:
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
        with self._tx(write=False) as conn:
            expected = self._registered_sha(conn, version)
        problems = [] if expected is not None else ["not in the store's registry"]
        folder = self.version_path(version)
        try:
            raw = self.fs.cat_file(posixpath.join(folder, MANIFEST))
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
        return problems + check_tree(self.fs, folder, files)

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
        files = json.loads(raw)["files"]
        local = LocalFileSystem()
        target = qdup_home() / "cache" / "versions" / version

        def cached_ok(folder: Path) -> bool:
            manifest_copy = folder / MANIFEST
            return manifest_copy.is_file() and manifest_copy.read_bytes() == raw and not check_tree(local, str(folder), files)

        if target.is_dir():
            if cached_ok(target):
                return target
            shutil.rmtree(target, ignore_errors=True)
        problems = self.verify(version)
        if problems:
            raise TamperedVersionError(version, problems)
        tmp = target.with_name(f".{version}.{secrets.token_hex(4)}.partial")
        try:
            for name in [*files, MANIFEST]:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(posixpath.join(self.version_path(version), name), str(tmp / name))
            if not cached_ok(tmp):
                raise TamperedVersionError(version, check_tree(local, str(tmp), files) or ["download differs from the store"])
            try:
                os.rename(tmp, target)
            except OSError:
                if not cached_ok(target):  # another process's copy won the rename; it must be intact too
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    # ------------------------------------------------------------ aliases

    def aliases(self) -> dict[str, str]:
        with self._tx(write=False) as conn:
            return {name: version for name, version in conn.execute(sa.select(_T_ALIASES.c.name, _T_ALIASES.c.version))}

    def aliases_of(self, version: str) -> list[str]:
        return sorted(a for a, v in self.aliases().items() if v == version)

    def history(self) -> list[dict[str, Any]]:
        """Every alias move, oldest first."""
        t = _T_HISTORY
        with self._tx(write=False) as conn:
            rows = conn.execute(sa.select(t.c.alias, t.c.from_version, t.c.to_version, t.c.action, t.c.why, t.c.actor, t.c.at).order_by(t.c.id))
            return [
                {"alias": a, "from": f, "to": to, "action": action, "why": why, "actor": who, "at": at}
                for a, f, to, action, why, who, at in rows
            ]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the registry's write lock, across hosts: reads and alias moves made in this thread
        inside the block form one transaction, so a decision made on what was read still holds
        when the alias moves. Readers are not blocked."""
        if self._held() is not None:
            yield
            return
        with self._tx(write=True) as conn:
            conns = getattr(_HELD, "conns", None)
            if conns is None:
                conns = _HELD.conns = {}
            conns[self.registry_url] = conn
            try:
                yield
            finally:
                conns.pop(self.registry_url, None)

    def move_alias(self, alias: str, version: str, why: str, actor: str, action: str, *, expected: Any = _ANY) -> dict[str, Any]:
        """Point `alias` at `version` and append the move to the history, atomically.

        `expected`: the version (or None) the alias must still point at, else StoreError
        (compare-and-swap for callers that decided outside `lock()`).
        """
        alias = validate_alias(alias)
        validate_version_id(version)
        with self._tx(write=True) as conn:
            if self._registered_sha(conn, version) is None:
                raise StoreError(f"no version {version!r} in {self.url}")
            row = conn.execute(sa.select(_T_ALIASES.c.version, _T_ALIASES.c.revision).where(_T_ALIASES.c.name == alias)).first()
            previous, revision = (row[0], row[1]) if row else (None, 0)
            if expected is not _ANY and expected != previous:
                raise StoreError(f"alias {alias} points at {previous}, not {expected}: it was moved meanwhile; nothing changed")
            at = _now()
            if row is None:
                conn.execute(sa.insert(_T_ALIASES).values(name=alias, version=version, revision=1, updated_at=at))
            else:
                # The revision check makes a lost update impossible even without the lock.
                done = conn.execute(
                    sa.update(_T_ALIASES)
                    .where(_T_ALIASES.c.name == alias, _T_ALIASES.c.revision == revision)
                    .values(version=version, revision=revision + 1, updated_at=at)
                )
                if done.rowcount != 1:
                    raise StoreError(f"alias {alias} was moved meanwhile; nothing changed")
            conn.execute(sa.insert(_T_HISTORY).values(
                alias=alias, from_version=previous, to_version=version, action=action, why=why, actor=actor, at=at))
        return {"alias": alias, "from": previous, "to": version, "action": action, "why": why, "actor": actor, "at": at}

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
