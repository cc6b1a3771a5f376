"""Serving fixtures: tiny real exports published into a temporary store, and a real server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import keras
import pytest

from qdup.config import ModelConfig, VocabConfig
from qdup.model.network import build_encoder
from qdup.model.vocab import fit_vectorizer
from qdup.registry.store import ArtifactStore
from qdup.serving.export import export_models

CFG = ModelConfig(embedding_dim=8, lstm_units=8, max_length=6)
TEXTS = [
    "how do i learn python",
    "what is the best way to learn python",
    "what is the capital of france",
    "which city is the capital of france",
    "why is the sky blue",
]
# Two versions told apart by their thresholds.
THRESHOLDS = {"v1": 0.3, "v2": 0.8}
DATASET_SHA = "ab" * 32


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory) -> dict[str, Path]:
    """Export folders of one tiny encoder with the two thresholds."""
    tmp = tmp_path_factory.mktemp("serving-exports")
    vec = fit_vectorizer(TEXTS, VocabConfig())
    keras.utils.set_random_seed(0)
    build_encoder(vec.vocabulary_size(), CFG).save(tmp / "encoder.keras")
    return {name: Path(export_models(tmp / "encoder.keras", vec, CFG, t, tmp / name)["dir"]) for name, t in THRESHOLDS.items()}


def publish_export(store: ArtifactStore, export: Path, threshold: float, auc: float = 0.75) -> str:
    files = {f"model/{p.name}": p for p in sorted(export.iterdir())}
    manifest = {
        "dataset": {"sha256": DATASET_SHA},
        "threshold": {"value": threshold, "chosen_on": "calibration"},  # as the pipeline publishes it
        "metrics": {"test": {"roc_auc": auc, "f1": 0.5}},
    }
    return store.publish(files, manifest)


def make_store(root: Path, exports: dict[str, Path]) -> tuple[ArtifactStore, str, str]:
    """A store with two versions (thresholds 0.3 and 0.8); production -> the first."""
    store = ArtifactStore(str(root))
    v1 = publish_export(store, exports["v1"], THRESHOLDS["v1"], 0.7)
    v2 = publish_export(store, exports["v2"], THRESHOLDS["v2"], 0.8)
    store.promote(v1, "test", why="first")
    return store, v1, v2


@pytest.fixture
def store_v1_v2(tmp_path, tiny_exports) -> tuple[ArtifactStore, str, str]:
    return make_store(tmp_path / "store", tiny_exports)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app, timeout_s: float = 120.0) -> Iterator[str]:
    """Run the app under uvicorn on 127.0.0.1 in a thread; yield its base URL once /readyz answers 200."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if not thread.is_alive():
                raise RuntimeError("the server thread ended before it was ready")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"server at {url} not ready after {timeout_s} s")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(condition, timeout_s: float = 60.0, every_s: float = 0.05):
    """Poll `condition()` until it returns something truthy; fail the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"condition not met within {timeout_s} s")


def export_searcher(export_dir: Path, df, count: int, defaults: dict | None = None):
    """A searcher of `export_dir`'s model (its rerankers too) over an exact index of the first `count` distinct
    questions of `df`; `defaults`: the index's search defaults. Returns the searcher and the indexed questions."""
    import numpy as np

    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import build_index
    from qdup.search.service import searcher_for

    questions = list(dict.fromkeys(list(df.question1) + list(df.question2)))[:count]
    encoder = load_query_encoder(export_dir)
    index = build_index(np.arange(len(questions)), questions, encoder.encode(questions), model_version="v", corpus={}, seed=0)
    index.search_defaults = defaults
    return searcher_for(index, encoder, export_dir), questions

