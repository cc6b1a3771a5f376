"""The feedback table in the registry's database, SQLite and PostgreSQL: append-only rows, committed on return,
read back by another store object, counted by version and label; concurrent writers lose nothing."""

from __future__ import annotations

import threading

from qdup.registry.feedback import FeedbackLog, parse_since
from qdup.registry.store import ArtifactStore
from tests.registry.test_store import postgres_url  # noqa: F401 (a fixture)

ROW = {"version": "v1", "question1": "How do I learn Python?", "question2": "Best way to learn Python?", "label": "duplicate",
       "source": "api"}


def _check(store_root, registry_url):
    log = FeedbackLog(ArtifactStore(str(store_root), registry_url=registry_url))
    ids = log.append([ROW, {**ROW, "label": "not_duplicate", "version": "v2", "note": "different scope"}])
    assert ids == sorted(ids) and len(set(ids)) == 2

    def writer(n: int) -> None:
        own = FeedbackLog(ArtifactStore(str(store_root), registry_url=registry_url))
        for i in range(25):
            own.append([{**ROW, "question1": f"writer {n} question {i}"}])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other = FeedbackLog(ArtifactStore(str(store_root), registry_url=registry_url))
    assert other.count() == 102
    assert other.counts() == {"v1": {"duplicate": 101, "not_duplicate": 0}, "v2": {"duplicate": 0, "not_duplicate": 1}}
    frame = other.frame(version="v2")
    assert frame[["label", "note"]].values.tolist() == [["not_duplicate", "different scope"]]
    assert frame["id"].is_unique and other.frame()["id"].is_unique
    assert len(other.frame(since=parse_since("2999-01-01"))) == 0 and len(other.frame(since=parse_since("2000-01-01"))) == 102


def test_feedback_on_sqlite(tmp_path):
    _check(tmp_path / "store", None)


def test_feedback_on_postgresql(tmp_path, postgres_url):  # noqa: F811
    _check(tmp_path / "store", postgres_url)

