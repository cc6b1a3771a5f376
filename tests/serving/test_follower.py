"""The follower retries a version that failed for a transient reason or its probe, with backoff; it refuses for good
only for the version's own fault (its bytes at once, a probe after `probe_attempts` loads)."""

from __future__ import annotations

import json
import time

import keras
import numpy as np
import pytest

import qdup.serving.follower as follower_module
from qdup.registry.store import ArtifactStore
from qdup.serving.follower import ModelFollower, load_served
from qdup.serving.predictor import Predictor
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
def test_a_version_at_fault_is_refused_and_named(store_v1_v2, tiny_exports, tmp_path, fault):
    """Damaged bytes and a refused safe_mode load are refused at once; a failing probe after probe_attempts loads."""
    store, v1, _ = store_v1_v2
    loader = CountingLoader()
    follower = ModelFollower(store, "production", loader=loader, retry_s=0.0, probe_attempts=3)
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
    states = []
    for _ in range(5):
        assert not follower.check()
        states.append(follower.state)
    loads = 3 if fault == "probe" else 1
    assert loader.calls == [v1] + [bad] * loads  # never loaded again once refused
    assert [bad in state.refused for state in states] == [False] * (loads - 1) + [True] * (6 - loads)
    if fault == "probe":  # tried again while attempts are left, saying so
        assert [s.last_error["attempts_left"] for s in states[:2]] == [2, 1]
        assert all(s.last_error["retry_in_s"] == 0.0 for s in states[:2])
    assert "retry_in_s" not in follower.last_error and follower.refused[bad]["attempts"] == loads
    assert follower.refused[bad]["kind"] == fault and follower.last_error["kind"] == fault
    assert follower.current.version == v1
    detail = {"hash": "model/vocabulary.txt", "load": "safe_mode", "probe": "threshold"}[fault]
    assert detail in follower.refused[bad]["error"]


class FlakyEncoder:
    """The real encoder of an export, whose first `nan_loads[0]` calls answer NaN: a runtime fault that passes."""

    def __init__(self, encoder, nan_loads: list[int]):
        self.encoder, self.nan_loads = encoder, nan_loads

    def similarity(self, *args):
        sims = self.encoder.similarity(*args)
        if self.nan_loads[0] > 0:
            self.nan_loads[0] -= 1
            return np.full_like(sims, np.nan)
        return sims


def test_a_failed_probe_is_tried_again_with_backoff_and_served_once_it_passes(store_v1_v2, monkeypatch):
    store, v1, v2 = store_v1_v2
    nan_loads = [0]
    real = follower_module.load_inference

    def load_flaky(folder):  # the real export, through an encoder that fails its probes while nan_loads[0] > 0
        p = real(folder)
        return Predictor(FlakyEncoder(p.encoder, nan_loads), p.threshold, p.max_length, p.meta, p.reranker, p.runtime)

    monkeypatch.setattr(follower_module, "load_inference", load_flaky)
    loader = CountingLoader()
    follower = ModelFollower(store, "production", loader=loader, retry_s=0.01, probe_attempts=3)
    follower.load_initial()
    store.promote(v2, "test", why="next")
    nan_loads[0] = 2  # the next two loads fail their probe pairs
    assert not follower.check()
    first = follower.last_error
    assert first["kind"] == "probe" and first["version"] == v2 and "cosines" in first["error"]
    assert first["retry_in_s"] == 0.01 and first["attempts_left"] == 2 and first["still_serving"] == v1
    time.sleep(0.02)  # past the backoff
    assert not follower.check() and follower.last_error["retry_in_s"] == 0.02 and follower.last_error["attempts_left"] == 1
    time.sleep(0.04)
    assert follower.check() and follower.current.version == v2
    assert follower.last_error is None and follower.refused == {} and loader.calls == [v1, v2, v2, v2]


def test_the_served_version_and_its_error_are_published_together(store_v1_v2, tiny_exports):
    """A reader's snapshot never pairs a version with an error that its switch cleared."""
    store, v1, v2 = store_v1_v2
    follower = ModelFollower(store, "production", retry_s=0.0)
    follower.load_initial()
    bad = publish_export(store, tiny_exports["v2"], THRESHOLDS["v2"])
    with (store.local_path(bad) / "model" / "vocabulary.txt").open("a") as handle:
        handle.write("extra\n")
    with store.lock():
        store.move_alias("production", bad, "bad", "test", "promote")
    assert not follower.check()
    before = follower.state
    store.promote(v2, "test", why="fixed")
    assert follower.check()
    after = follower.state
    assert (before.current.version, before.last_error["version"]) == (v1, bad)
    assert after.current.version == v2 and after.last_error is None and after.switches[-1]["to"] == v2
    assert after.refused == before.refused and bad in after.refused
    # The earlier snapshot is unchanged: states are replaced, never edited.
    assert before.current.version == v1 and before.last_error is not None and len(before.switches) == len(after.switches) - 1
