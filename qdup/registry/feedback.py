"""People's judgements of pairs (duplicate or not), kept append-only in the store's registry database.

One table, `qdup_feedback`, beside the registry's versions and aliases (SQLite by default, PostgreSQL
where the registry is): when, which served version the person saw, the two texts, the label, where it
came from (the page or the API), an optional note and an order-independent hash of the normalised pair.
Rows are only ever inserted; `append` returns once its transaction is committed, so an acknowledged
judgement survives the process.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from qdup.data.feedback import COLUMNS, LABELS, normalise, pair_sha256
from qdup.errors import ConfigError
from qdup.registry.sql_registry import _PG_LOCK_KEY, RegistryUnavailable, _engine, _one_line, _redacted
from qdup.registry.store import ArtifactStore

SOURCES: tuple[str, ...] = ("page", "api")

_META = sa.MetaData()
T_FEEDBACK = sa.Table(
    "qdup_feedback",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False, index=True),
    sa.Column("version", sa.String(64), nullable=False, index=True),
    sa.Column("question1", sa.Text, nullable=False),
    sa.Column("question2", sa.Text, nullable=False),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("pair_sha256", sa.String(64), nullable=False, index=True),
)
# Registries whose feedback table this process has created or found: (registry URL, pid).
_READY: set[tuple[str, int]] = set()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def parse_since(text: str) -> str:
    """A date (2026-12-01) or ISO time, as the UTC ISO string rows are compared with; ConfigError otherwise."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected a date or ISO time, e.g. 2026-12-01 or 2026-12-01T08:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="microseconds")


class FeedbackLog:
    """The feedback table of one store's registry: append rows, read them back, count them."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self.url = store.registry_url
        self._is_pg = sa.engine.make_url(self.url).get_backend_name() == "postgresql"

    def _fail(self, exc: sa.exc.OperationalError) -> RegistryUnavailable:
        return RegistryUnavailable(f"registry {_redacted(self.url)} of store {self.store.url}: {_one_line(exc.orig or exc)}")

    def _ensure_table(self) -> None:
        key = (self.url, os.getpid())
        if key in _READY:
            return
        self.store.versions()  # the registry's own schema first (it may import a legacy store)
        try:
            with _engine(self.url).connect() as conn:
                conn = conn.execution_options(qdup_write=True)
                with conn.begin():
                    if self._is_pg:
                        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
                    _META.create_all(conn, checkfirst=True)
        except sa.exc.OperationalError as exc:
            raise self._fail(exc) from exc
        _READY.add(key)

    def append(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert rows (version, question1, question2, label, source, note) in one committed transaction; their ids.

        `at` and `pair_sha256` are filled in here. Returns only after the commit: a caller that
        acknowledges after this call never acknowledges a row that can be lost with the process.
        """
        self._ensure_table()
        at = now_iso()
        values = [
            {
                "at": at, "version": r["version"], "question1": r["question1"], "question2": r["question2"],
                "label": r["label"], "source": r["source"], "note": r.get("note"),
                "pair_sha256": r.get("pair_sha256") or pair_sha256(r["question1"], r["question2"]),
            }
            for r in rows
        ]
        try:
            with _engine(self.url).connect() as conn:
                # SQLite: BEGIN IMMEDIATE, the write lock up front (see the store's engine); no alias lock on PostgreSQL.
                conn = conn.execution_options(qdup_write=True)
                with conn.begin():
                    return [conn.execute(sa.insert(T_FEEDBACK).values(**v).returning(T_FEEDBACK.c.id)).scalar_one() for v in values]
        except sa.exc.OperationalError as exc:
            raise self._fail(exc) from exc

    def _select(self, *columns, since: str | None = None, version: str | None = None):
        query = sa.select(*columns)
        if since is not None:
            query = query.where(T_FEEDBACK.c.at >= since)
        if version is not None:
            query = query.where(T_FEEDBACK.c.version == version)
        return query

    def _read(self, query) -> list[Any]:
        self._ensure_table()
        try:
            with _engine(self.url).connect() as conn, conn.begin():
                return list(conn.execute(query))
        except sa.exc.OperationalError as exc:
            raise self._fail(exc) from exc

    def frame(self, since: str | None = None, version: str | None = None) -> pd.DataFrame:
        """Every row (at or after `since`, of `version`), oldest first, with the columns of COLUMNS."""
        cols = [T_FEEDBACK.c[name] for name in COLUMNS]
        rows = self._read(self._select(*cols, since=since, version=version).order_by(T_FEEDBACK.c.id))
        frame = pd.DataFrame([tuple(r) for r in rows], columns=list(COLUMNS))
        return frame.astype({"id": "int64"}) if len(frame) else frame.astype({"id": "int64", **{c: "object" for c in COLUMNS[1:]}})

    def count(self) -> int:
        return int(self._read(sa.select(sa.func.count()).select_from(T_FEEDBACK))[0][0])

    def counts(self, since: str | None = None) -> dict[str, dict[str, int]]:
        """Rows by version and label: {version: {"duplicate": n, "not_duplicate": m}}."""
        query = self._select(T_FEEDBACK.c.version, T_FEEDBACK.c.label, sa.func.count(), since=since)
        out: dict[str, dict[str, int]] = {}
        for version, label, n in self._read(query.group_by(T_FEEDBACK.c.version, T_FEEDBACK.c.label)):
            out.setdefault(version, dict.fromkeys(LABELS, 0))[label] = int(n)
        return dict(sorted(out.items()))


def promoted_at(store: ArtifactStore, version: str) -> str | None:
    """When production last moved to `version` (None: never), from the alias history."""
    moves = [e["at"] for e in store.history() if e["alias"] == "production" and e["to"] == version]
    return moves[-1] if moves else None


def pair_groups(frame: pd.DataFrame) -> Any:
    """Each row's connected component in the graph of normalised questions (rows sharing a question, directly or
    through others, are one group): the units a cluster bootstrap draws."""
    from qdup.data.splits import question_components

    codes, _ = pd.factorize(pd.concat([frame["question1"], frame["question2"]]).map(normalise))
    n = len(frame)
    return question_components(codes[:n], codes[n:])


def agreement(frame: pd.DataFrame, duplicate: Sequence[bool], *, resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
    """The share of rows whose label the served decision (`duplicate`, one per row) agrees with, with a cluster-bootstrap
    percentile interval (whole groups of rows sharing a question resampled; `qdup.evaluation.bootstrap`)."""
    import numpy as np

    from qdup.evaluation.bootstrap import bootstrap_intervals

    n = len(frame)
    if n == 0:
        return {"n": 0, "agreement": None, "low": None, "high": None, "level": level, "groups": 0}
    y = (frame["label"].to_numpy() == "duplicate").astype(np.int8)
    # The decision as a score of 1 or 0 at threshold 0.5: the bootstrap's accuracy is then the agreement.
    scores = np.asarray(duplicate, dtype=np.float64)
    if n < 2:  # a bootstrap needs two rows: the estimate alone
        return {"n": n, "agreement": float((scores[0] >= 0.5) == y[0]), "low": None, "high": None, "level": level, "groups": 1}
    got = bootstrap_intervals(y, scores, 0.5, resamples=resamples, seed=seed, level=level, groups=pair_groups(frame))
    acc = got["metrics"]["accuracy"]
    return {"n": n, "agreement": acc["estimate"], "low": acc["low"], "high": acc["high"], "level": level,
            "groups": got["groups"], "resamples": resamples, "seed": seed,
            "method": "cluster bootstrap over feedback rows: whole groups (rows sharing a question) drawn with replacement; "
                      "percentile interval"}


def feedback_files(stage: Any) -> dict[str, Any]:
    """The feedback stage's snapshot, its contract report and manifest, under their names in a version."""
    return {f"feedback/{p.name}": p for p in sorted(stage.path.iterdir()) if p.is_file()}


def feedback_lineage(snapshot: dict[str, Any], joined: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `feedback` block: the snapshot (sha256, rows, labels, conflicts, rule) and what joined training."""
    return {
        "snapshot_sha256": snapshot["sha256"],
        "file": f"feedback/{snapshot['file']}",
        **{k: snapshot[k] for k in ("rows", "labels", "conflicting_pairs", "resolution", "suite", "versions", "first_at", "last_at")},
        "pairs": joined.get("pairs"),
        "added": joined.get("added"),
        "held_out_test_question": joined.get("held_out_test_question"),
    }


def feedback_card_lines(manifest: dict[str, Any]) -> list[str]:
    """The model card's feedback section (none for a version trained without feedback)."""
    fb = manifest.get("feedback")
    if not fb:
        return []
    added = fb.get("added") or {}
    return [
        "## Feedback", "",
        f"Trained also with people's judgements of served answers: snapshot `{fb['snapshot_sha256']}` ({fb['rows']:,} rows, "
        f"{fb['labels']['duplicate']:,} duplicate, {fb['labels']['not_duplicate']:,} not duplicate; data contract "
        f"{fb['suite']} passed). {fb['conflicting_pairs']:,} pairs had both labels, resolved by {fb['resolution']}. Of "
        f"{fb.get('pairs') or 0:,} pairs, {added.get('train', 0):,} joined `train` and {added.get('negatives', 0):,} `negatives`; "
        f"{fb.get('held_out_test_question') or 0:,} were held out because they share a question with test. Test, the "
        "threshold and the gate never see feedback.", "",
    ]
