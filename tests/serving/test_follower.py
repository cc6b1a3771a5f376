"""The follower retries a version that failed for a transient reason, with backoff; it refuses for good only for the version's own fault."""

from __future__ import annotations

import json

import keras
import pytest

from qdup.registry.store import ArtifactStore
from qdup.serving.follower import ModelFollower, load_served
from tests.serving.conftest import THRESHOLDS, free_port, publish_export


class CountingLoader:
    """The real loader; the first `unreachable` calls go to the store through a registry nobody listens on."""

    def __init__(self, unreachable: int = 0):
        self.calls: list[str] = []
        self.unreachable = unreachable

    def __call__(self, store: ArtifactStore, version: str):
        self.calls.append(version)
        if len(self.calls) <= self.unreachable:
            # A real PostgreSQL URL on a closed port of this host: the connection is refused.
            store = ArtifactStore(store.url, registry_url=f"postgresql+psycopg://qdup@127.0.0.1:{free_port()}/qdup")
        return load_served(store, version)


def test_a_transient_failure_is_retried_until_the_version_loads(store_v1_v2):
    store, v1, v2 = store_v1_v2
    loader = CountingLoader()
    follower = ModelFollower(store, "production", loader=loader, retry_s=0.0)
    assert follower.load_initial().version == v1
    store.promote(v2, "test", why="next")
    loader.unreachable = 3  # the first call loaded v1; the next two fail
    assert not follower.check() and not follower.check()
    error = follower.last_error
    assert error["version"] == v2 and error["kind"] == "transient" and error["attempts"] == 2
    assert "127.0.0.1" in error["error"] and error["still_serving"] == v1
    assert follower.refused == {}
    assert follower.check() and follower.current.version == v2 and follower.last_error is None
    assert loader.calls == [v1, v2, v2, v2]


def test_a_transient_failure_waits_for_its_backoff(store_v1_v2):
    store, v1, v2 = store_v1_v2
    loader = CountingLoader()
    follower = ModelFollower(store, "production", loader=loader, retry_s=3600.0, max_retry_s=7200.0)
    follower.load_initial()
    store.promote(v2, "test", why="next")
    loader.unreachable = 2
    assert not follower.check() and follower.last_error["retry_in_s"] == 3600.0
    assert not follower.check() and loader.calls == [v1, v2]  # not tried again before its time
    assert follower.current.version == v1


def lambda_export(tmp_path):
    """A model folder a safe_mode load refuses (a Lambda layer would run arbitrary code)."""
    text = keras.Input(shape=(1,), dtype="float32")
    folder = tmp_path / "unsafe"
    folder.mkdir()
    keras.Model(text, keras.layers.Lambda(lambda x: x * 2)(text)).save(folder / "inference.keras")
    (folder / "threshold.json").write_text(json.dumps({"threshold": 0.5, "max_length": 8}))
    return folder


@pytest.mark.parametrize("fault", ["hash", "load", "probe"])
def test_a_version_at_fault_is_refused_once_and_named(store_v1_v2, tiny_exports, tmp_path, fault):
    store, v1, _ = store_v1_v2
    loader = CountingLoader()
    follower = ModelFollower(store, "production", loader=loader, retry_s=0.0)
    follower.load_initial()
    if fault == "hash":
        bad = publish_export(store, tiny_exports["v2"], THRESHOLDS["v2"])
        with (store.local_path(bad) / "model" / "vocabulary.txt").open("a") as handle:
            handle.write("extra\n")
    elif fault == "load":
        bad = publish_export(store, lambda_export(tmp_path), 0.5)
    else:  # the model answers with another threshold than its manifest records
        bad = publish_export(store, tiny_exports["v1"], THRESHOLDS["v2"])
    with store.lock():
        store.move_alias("production", bad, "bad", "test", "promote")
    assert not follower.check() and not follower.check()
    assert loader.calls == [v1, bad]  # refused once, never retried
    assert follower.refused[bad]["kind"] == fault and follower.last_error["kind"] == fault
    assert follower.current.version == v1
    detail = {"hash": "model/vocabulary.txt", "load": "safe_mode", "probe": "threshold"}[fault]
    assert detail in follower.refused[bad]["error"]
