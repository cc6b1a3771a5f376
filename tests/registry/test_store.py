"""Tests for qdup/store.py: atomic immutable versions, alias moves, history, promote and rollback."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time

import pytest

from qdup.errors import ConfigError
from qdup.registry.store import ArtifactStore, StoreError, new_version_id, validate_alias, validate_version_id


def _manifest(auc: float, dataset: str = "ab" * 32) -> dict:
    return {"dataset": {"sha256": dataset}, "metrics": {"test": {"roc_auc": auc}}}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"weights")
    (tmp_path / "metrics.json").write_text("{}")
    return {"model/model.bin": tmp_path / "model.bin", "evaluation/metrics.json": tmp_path / "metrics.json"}


def test_publish_writes_files_and_a_manifest_with_hashes(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    version = store.publish(files, _manifest(0.8))
    m = store.manifest(version)
    assert m["id"] == version and m["metrics"]["test"]["roc_auc"] == 0.8
    assert m["files"]["model/model.bin"]["bytes"] == 7
    assert m["files"]["model/model.bin"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert (store.local_path(version) / "model" / "model.bin").read_bytes() == b"weights"
    assert store.versions() == [version]


def test_versions_are_never_overwritten(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    version = store.publish(files, _manifest(0.8))
    with pytest.raises(StoreError, match="never overwritten"):
        store.publish(files, _manifest(0.9), version=version)
    assert store.manifest(version)["metrics"]["test"]["roc_auc"] == 0.8


def test_a_crash_during_publish_leaves_nothing_visible_and_the_next_publish_works(tmp_path, files, monkeypatch):
    store = ArtifactStore(str(tmp_path / "store"))

    def crash(*args, **kwargs):
        raise OSError("disk full, injected")

    monkeypatch.setattr(store, "_commit", crash)
    with pytest.raises(OSError, match="injected"):
        store.publish(files, _manifest(0.8))
    assert store.versions() == []
    monkeypatch.undo()
    # A leftover from a process killed mid-publish (no chance to clean up) is swept later.
    leftover = tmp_path / "store" / ".staging" / "20260101T000000000Z-abcdef.dead"
    leftover.mkdir(parents=True)
    past = time.time() - 7200
    os.utime(leftover, (past, past))
    version = store.publish(files, _manifest(0.8))
    assert store.versions() == [version]
    assert not leftover.exists()


def test_a_folder_without_manifest_is_not_a_version(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    (tmp_path / "store" / "versions" / "20260101T000000000Z-abcdef").mkdir(parents=True)
    assert store.versions() == []


def test_aliases_move_with_history_promote_and_rollback(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    v1, v2, v3 = (store.publish(files, _manifest(a)) for a in (0.7, 0.8, 0.75))
    with store.lock():
        store.move_alias("production", v1, "first", "test", "publish")
        store.move_alias("production", v2, "better", "test", "publish")
    store.promote(v3, "alice", why="hotfix")
    assert store.resolve("production") == v3
    store.rollback("bob")
    assert store.resolve("production") == v2
    store.rollback("bob")
    assert store.resolve("production") == v1
    with pytest.raises(StoreError, match="no previous"):
        store.rollback("bob")
    history = store.history()
    assert [(h["from"], h["to"], h["action"]) for h in history] == [
        (None, v1, "publish"),
        (v1, v2, "publish"),
        (v2, v3, "promote"),
        (v3, v2, "rollback"),
        (v2, v1, "rollback"),
    ]
    assert history[2]["actor"] == "alice" and history[2]["why"] == "hotfix"
    assert store.aliases_of(v1) == ["production"]


def _publish_and_move(url: str, src: str, n: int) -> None:
    store = ArtifactStore(url)
    for _ in range(n):
        version = store.publish({"a.txt": src}, _manifest(0.5))
        with store.lock():
            store.move_alias("latest", version, "race", f"pid {os.getpid()}", "publish")


def test_concurrent_publishes_keep_every_version_and_a_consistent_alias(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("x")
    url = str(tmp_path / "store")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_publish_and_move, args=(url, str(src), 5)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = ArtifactStore(url)
    assert len(store.versions()) == 10
    history = store.history()
    assert len(history) == 10
    # Every move starts where the previous one ended: no lost update.
    assert all(h["from"] == prev["to"] for prev, h in zip(history, history[1:]))
    assert store.resolve("latest") == history[-1]["to"]
    assert json.loads((tmp_path / "store" / "aliases" / "latest.json").read_text())["version"] == history[-1]["to"]


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", "20261123T010203456Z-ABCDEF", "latest", "v1"])
def test_bad_version_ids_are_refused(bad):
    with pytest.raises(ConfigError):
        validate_version_id(bad)


@pytest.mark.parametrize("bad", ["../prod", "a/b", ".hidden", "", "x y", "20261123T010203456Z-abcdef"])
def test_bad_alias_names_are_refused(bad):
    with pytest.raises(ConfigError):
        validate_alias(bad)


def test_version_ids_sort_by_time_and_are_unique():
    ids = [new_version_id() for _ in range(200)]
    assert len(set(ids)) == 200 and all(validate_version_id(i) for i in ids)
    assert sorted(ids)[0][:18] <= sorted(ids)[-1][:18]


def test_resolving_an_unknown_ref_names_it(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    with pytest.raises(StoreError, match="staging"):
        store.resolve("staging")


def test_an_fsspec_memory_store_publishes_and_resolves(files):
    store = ArtifactStore("memory://qdup-test-store")
    version = store.publish(files, _manifest(0.6))
    with store.lock():
        store.move_alias("latest", version, "t", "t", "publish")
    assert store.versions() == [version] and store.resolve("latest") == version
    assert store.manifest(version)["files"]["model/model.bin"]["bytes"] == 7
