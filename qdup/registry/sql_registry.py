"""The registry of a store: versions (id and manifest sha256), aliases and alias history in one SQL database.

SQLite (a file in a local store's root) or a server shared by several hosts (PostgreSQL). An alias move is one
transaction holding the registry's write lock (SQLite `BEGIN IMMEDIATE`, a PostgreSQL advisory lock): it checks the
target is registered, updates the alias and appends one history row, or does nothing at all. The files of a version
are the object store's (`qdup.registry.store`); this module never reads them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from qdup.errors import StoreError

_SQLITE_BUSY_TIMEOUT_MS = 120_000
# One PostgreSQL advisory lock serialises every alias move of a registry ("qdup" in ASCII).
_PG_LOCK_KEY = 0x71647570
# `move_alias`'s "no expectation" (None is an expectation: the alias does not exist yet).
ANY = object()


def _one_line(error: BaseException) -> str:
    """A driver's message on one line (psycopg adds a hint line), for the one-line errors the CLI prints."""
    return " ".join(str(error).split())


class StoreUnavailable(StoreError):
    """The store's storage or its registry could not be reached (or was busy): transient, worth retrying; nothing was changed."""


class RegistryUnavailable(StoreUnavailable):
    """The registry could not be reached or was busy."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()



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


class SqlRegistry:
    """One store's registry at `url`; `store_url` names the store in messages. `import_legacy(conn)` fills a new
    registry, once, from a store written before registries existed (the store reads its own files)."""

    def __init__(self, url: str, store_url: str, import_legacy: Callable[[sa.Connection], None]):
        self.url = url
        self.store_url = store_url
        self._import_legacy = import_legacy
        self._is_pg = sa.engine.make_url(url).get_backend_name() == "postgresql"

    def _held(self) -> sa.Connection | None:
        return getattr(_HELD, "conns", {}).get(self.url)

    @contextlib.contextmanager
    def tx(self, write: bool) -> Iterator[sa.Connection]:
        """A registry transaction; a write one holds the registry's write lock until it ends."""
        held = self._held()
        if held is not None:
            yield held
            return
        self._ensure_schema()
        try:
            with _engine(self.url).connect() as conn:
                conn = conn.execution_options(qdup_write=write)
                with conn.begin():
                    if write and self._is_pg:
                        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
                    yield conn
        except sa.exc.OperationalError as exc:  # unreachable server, SQLite busy past its timeout, ...
            raise RegistryUnavailable(f"registry {_redacted(self.url)} of store {self.store_url}: {_one_line(exc.orig or exc)}") from exc

    def _ensure_schema(self) -> None:
        key = (self.url, os.getpid())
        if key in _READY:
            return
        engine = _engine(self.url)
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
                f"registry {_redacted(self.url)} of store {self.store_url} cannot be reached: {_one_line(exc.orig or exc)}"
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"registry {_redacted(self.url)} of store {self.store_url} cannot be used: {exc}") from exc
        _READY.add(key)

    def registered_sha(self, conn: sa.Connection, version: str) -> str | None:
        return conn.execute(sa.select(_T_VERSIONS.c.manifest_sha256).where(_T_VERSIONS.c.id == version)).scalar()

    def add_version(self, conn: sa.Connection, version: str, manifest_sha256: str) -> None:
        """A version row, inside the caller's transaction (the legacy import's too)."""
        conn.execute(sa.insert(_T_VERSIONS).values(id=version, manifest_sha256=manifest_sha256, registered_at=_now()))

    def register(self, version: str, manifest_sha256: str) -> None:
        try:
            with self.tx(write=True) as conn:
                self.add_version(conn, version, manifest_sha256)
        except sa.exc.IntegrityError as exc:
            raise StoreError(f"version {version} already exists; published versions are never overwritten") from exc

    def versions(self) -> list[str]:
        with self.tx(write=False) as conn:
            return list(conn.execute(sa.select(_T_VERSIONS.c.id).order_by(_T_VERSIONS.c.id)).scalars())

    def aliases(self) -> dict[str, str]:
        with self.tx(write=False) as conn:
            return {name: version for name, version in conn.execute(sa.select(_T_ALIASES.c.name, _T_ALIASES.c.version))}

    def history(self) -> list[dict[str, Any]]:
        t = _T_HISTORY
        with self.tx(write=False) as conn:
            rows = conn.execute(sa.select(t.c.alias, t.c.from_version, t.c.to_version, t.c.action, t.c.why, t.c.actor, t.c.at).order_by(t.c.id))
            return [
                {"alias": a, "from": f, "to": to, "action": action, "why": why, "actor": who, "at": at}
                for a, f, to, action, why, who, at in rows
            ]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the write lock; every registry object of this URL in this thread joins its transaction."""
        if self._held() is not None:
            yield
            return
        with self.tx(write=True) as conn:
            conns = getattr(_HELD, "conns", None)
            if conns is None:
                conns = _HELD.conns = {}
            conns[self.url] = conn
            try:
                yield
            finally:
                conns.pop(self.url, None)

    def move_alias(self, alias: str, version: str, why: str, actor: str, action: str, *, expected: Any = ANY) -> dict[str, Any]:
        """Point `alias` (a checked name) at `version`, appending the move to the history, atomically."""
        with self.tx(write=True) as conn:
            if self.registered_sha(conn, version) is None:
                raise StoreError(f"no version {version!r} in {self.store_url}")
            row = conn.execute(sa.select(_T_ALIASES.c.version, _T_ALIASES.c.revision).where(_T_ALIASES.c.name == alias)).first()
            previous, revision = (row[0], row[1]) if row else (None, 0)
            if expected is not ANY and expected != previous:
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

    def import_history(self, conn: sa.Connection, entries: list[dict[str, Any]], aliases: dict[str, str]) -> None:
        """Alias history rows and current aliases of a legacy store, inside the legacy import's transaction."""
        for e in entries:
            conn.execute(sa.insert(_T_HISTORY).values(
                alias=e["alias"], from_version=e["from"], to_version=e["to"], action=e["action"],
                why=e["why"], actor=e["actor"], at=e["at"]))
        for name, target in aliases.items():
            conn.execute(sa.insert(_T_ALIASES).values(name=name, version=target, revision=1, updated_at=_now()))
