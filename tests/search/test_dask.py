"""Mining and batch search on a real local Dask cluster (a scheduler and two worker processes): the local run's results."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask
import keras
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.mine import mine_corpus, run_mine_corpus
from flows.search import run_search_queries, search_queries
from qdup.cli import search as cli
from qdup.config import BatchSearchConfig, MineConfig, ModelConfig, VocabConfig
from qdup.errors import QdupError
from qdup.model.network import build_encoder
from qdup.model.vocab import fit_vectorizer
from qdup.search.batch import read_questions, search_table
from qdup.search.encoder import load_query_encoder_cached
from qdup.search.index import build_index, load_index_cached
from qdup.search.mine import mine
from qdup.search.service import VersionSearcher
from qdup.serving.export import export_models
from tasks.mine import mine_chunk_task
from tasks.search import search_chunk_task

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPO = Path(__file__).resolve().parents[2]
VERSION = "20260101T000000000Z-aaaaaa"
STARTUP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster_processes(tmp_path_factory):
    """A scheduler and two single-thread worker processes that import this checkout, starting (see `cluster`)."""
    tmp = tmp_path_factory.mktemp("dask")
    env = {
        **os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "QDUP_HOME": str(tmp / "qdup-home"), "PREFECT_HOME": str(tmp / "prefect-home"), "TF_CPP_MIN_LOG_LEVEL": "3",
        "DASK_TEMPORARY_DIRECTORY": str(tmp / "scratch"),
    }
    address = f"tcp://127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen] = []
    try:
        for name, argv in (
            ("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"]),
            # Preloading the task modules imports Prefect and TensorFlow while the test builds its data.
            *((f"worker{n}", ["worker", address, "--nworkers", "1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                              "--host", "127.0.0.1", "--name", f"worker{n}", "--preload", "tasks.mine", "--preload", "tasks.search",
                              "--preload", "qdup.search.encoder"]) for n in (1, 2)),
        ):
            with open(tmp / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "dask", *argv], env=env, cwd=tmp, stdout=log,
                                              stderr=subprocess.STDOUT))
        yield address, procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(cluster_processes, world):
    """The address of the scheduler once both workers are connected (after `world` is built, meanwhile)."""
    import distributed

    address, procs = cluster_processes
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            client = distributed.Client(address, timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise
    with client:
        client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
    return address


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_tsv):
    """A tiny exported encoder in a store, an exact index of 150 demo questions encoded by it, and a query TSV."""
    from qdup.registry.store import ArtifactStore

    tmp = tmp_path_factory.mktemp("dask-world")
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    questions = list(dict.fromkeys(list(df.question1) + list(df.question2)))[:150]
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=8)
    vec = fit_vectorizer(questions, VocabConfig())
    keras.utils.set_random_seed(0)
    build_encoder(vec.vocabulary_size(), cfg).save(tmp / "encoder.keras")
    export_models(tmp / "encoder.keras", vec, cfg, 0.9, tmp / "export")
    store = ArtifactStore(str(tmp / "store"))
    store.publish({f"model/{p.name}": p for p in (tmp / "export").iterdir()}, {"note": "test"}, version=VERSION)
    model_dir = store.local_path(VERSION) / "model"
    encoder = load_query_encoder_cached(model_dir)
    index_dir = tmp / "store" / "indexes" / VERSION
    index = build_index(np.arange(len(questions)) + 1000, questions, encoder.encode(questions), model_version=VERSION, corpus={},
                        ann="exact", seed=0)
    # The version's default ranking, as its retrieval stage chooses it: hybrid (reciprocal rank fusion).
    index.search_defaults = {"method": "hybrid", "hybrid": {"method": "rrf", "weight": None}, "rrf_k": 60}
    index.save(index_dir)
    queries = tmp / "queries.tsv"
    asked = questions[::3] + ["how do i learn python quickly?"]
    # Ids as a queries file carries them (not row positions): every result row names its query's.
    pd.DataFrame({"id": [f"q{7 * i}" for i in range(len(asked))], "question": asked}).to_csv(queries, sep="\t", index=False)
    return {"store": store, "model_dir": model_dir, "index_dir": index_dir, "queries": queries}


def workers_that_ran(client, since: float) -> set[str]:
    return {r["worker"] for r in client.get_task_stream(start=since)}


def pairs(table) -> list[tuple[int, int]]:
    return list(zip(table.column("id1").to_pylist(), table.column("id2").to_pylist()))


def test_mining_on_the_cluster_finds_the_local_pairs(cluster_processes, world, cluster, tmp_path):
    import distributed

    index = load_index_cached(world["index_dir"], VERSION)
    base = {"index_dir": world["index_dir"], "model_version": VERSION, "chunk_size": 20}
    with distributed.Client(cluster) as client:
        # The first call adds the scheduler's task-stream plugin; later calls read what ran since.
        client.get_task_stream()
        for k, threshold in ((3, None), (None, 0.6)):
            local = mine(index, k=k, threshold=threshold, chunk_size=20)
            assert local.num_rows >= (len(index) if k else 1)
            threads = mine_corpus(MineConfig(**base, k=k, threshold=threshold, out=tmp_path / f"threads-{k}.parquet"))
            since = time.time()
            # run_mine_corpus picks the Dask runner itself; mine_corpus called plainly reruns as a subflow on it.
            on_cluster = (run_mine_corpus if k else mine_corpus)(
                MineConfig(**base, k=k, threshold=threshold, out=tmp_path / f"dask-{k}.parquet", dask=cluster))
            assert threads["chunks"] == on_cluster["chunks"] == 8
            assert threads["pairs"] == on_cluster["pairs"] == local.num_rows
            got = pq.read_table(tmp_path / f"dask-{k}.parquet")
            assert pairs(got) == pairs(local) == pairs(pq.read_table(tmp_path / f"threads-{k}.parquet"))
            np.testing.assert_array_equal(got.column("similarity").to_numpy(), local.column("similarity").to_numpy())
            assert workers_that_ran(client, since) == set(client.scheduler_info()["workers"])


def test_batch_search_on_the_cluster_gives_the_local_rows(cluster, world, tmp_path):
    import distributed

    # The cached loads are the ones the flow's local threads use.
    index = load_index_cached(world["index_dir"], VERSION)
    searcher = VersionSearcher(index, load_query_encoder_cached(world["model_dir"]))
    query_ids, queries = read_questions(world["queries"])
    local = search_table(searcher, queries, 4, None, query_ids)
    dense = search_table(searcher, queries, 4, "dense", query_ids)
    base = {"index_dir": world["index_dir"], "model_dir": world["model_dir"], "queries": world["queries"], "k": 4,
            "chunk_size": 12, "model_version": VERSION}
    threads = search_queries(BatchSearchConfig(**base, out=tmp_path / "threads.parquet"))
    with distributed.Client(cluster) as client:
        client.get_task_stream()
        since = time.time()
        on_cluster = run_search_queries(BatchSearchConfig(**base, out=tmp_path / "dask.parquet", dask=cluster))
        assert workers_that_ran(client, since) == set(client.scheduler_info()["workers"])
    assert threads == {**on_cluster, "out": str(tmp_path / "threads.parquet")}
    assert on_cluster["queries"] == len(queries) == 51 and on_cluster["chunks"] == 5 and on_cluster["rows"] == 4 * len(queries)
    assert on_cluster["method"] == "hybrid"
    got, by_threads = pq.read_table(tmp_path / "dask.parquet"), pq.read_table(tmp_path / "threads.parquet")
    assert got.equals(by_threads)
    assert got.column_names == ["query_id", "query", "ranking", "rank", "score", "score_kind", "match_id", "match_question",
                                "encoder_cosine", "duplicate"]
    assert set(got.column("ranking").to_pylist()) == {"hybrid"} and set(got.column("score_kind").to_pylist()) == {"rrf"}
    assert got.column("query_id").to_pylist()[:8] == ["q0"] * 4 + ["q7"] * 4
    # The cluster ranks as the local path does (the version's hybrid), which is not the dense-only order.
    for name in ("query_id", "query", "rank", "match_id", "match_question"):
        assert got.column(name).to_pylist() == local.column(name).to_pylist()
    assert got.column("match_id").to_pylist() != dense.column("match_id").to_pylist()
    # Encoding in chunks batches the texts differently: the last float32 bit may differ.
    np.testing.assert_allclose(got.column("encoder_cosine").to_numpy(), local.column("encoder_cosine").to_numpy(), atol=1e-6)
    first = got.filter(got.column("rank").to_numpy() == 1)
    # An indexed query finds itself (or a question sharing its first max_length tokens) first.
    assert (first.column("encoder_cosine").to_numpy()[:-1] >= 1 - 1e-5).all() and first.num_rows == len(queries)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_the_cli_runs_on_the_cluster_and_names_an_unreachable_one(cluster, world, tmp_path, capsys):
    base = ["--model", VERSION, "--store", world["store"].url]
    assert run_cli(["mine", *base, "-k", "2", "--chunk-size", "50", "--out", str(tmp_path / "local.parquet")]) == 0
    assert run_cli(["mine", *base, "-k", "2", "--chunk-size", "50", "--out", str(tmp_path / "dask.parquet"), "--dask", cluster]) == 0
    assert "3 chunks on tcp://127.0.0.1:" in capsys.readouterr().out
    assert pq.read_table(tmp_path / "dask.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
    argv = ["search", *base, "--queries", str(world["queries"]), "--out", str(tmp_path / "hits.parquet"), "-k", "2"]
    assert run_cli([*argv, "--dask", cluster]) == 0
    assert "(hybrid ranking, 1 chunks on tcp://127.0.0.1:" in capsys.readouterr().out
    on_cluster = pq.read_table(tmp_path / "hits.parquet")
    assert on_cluster.num_rows == 2 * 51
    # The same ranking, ids and columns as the same search without --dask.
    assert run_cli(["search", *base, "--queries", str(world["queries"]), "--out", str(tmp_path / "hits-local.parquet"), "-k", "2"]) == 0
    local = pq.read_table(tmp_path / "hits-local.parquet")
    for name in ("query_id", "ranking", "rank", "match_id"):
        assert on_cluster.column(name).to_pylist() == local.column(name).to_pylist()
    nobody = f"tcp://127.0.0.1:{free_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), \
            pytest.raises(QdupError, match=f"^--dask {nobody}: cannot reach the Dask scheduler"):
        run_cli(["mine", *base, "-k", "2", "--out", str(tmp_path / "never.parquet"), "--dask", nobody])
    assert not (tmp_path / "never.parquet").exists()
    with pytest.raises(QdupError, match="--dask: expected a Dask scheduler address tcp://HOST:PORT"):
        run_cli(["mine", *base, "-k", "2", "--out", str(tmp_path / "never.parquet"), "--dask", "localhost"])
    with pytest.raises(QdupError, match="one query runs here"):
        run_cli(["search", *base, "python", "--dask", cluster])
    # Without a configured server each worker would start a temporary Prefect server of its own.
    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(QdupError, match="need a Prefect server"):
        run_cli(["mine", *base, "-k", "2", "--out", str(tmp_path / "never.parquet"), "--dask", cluster])


def test_a_worker_without_the_index_folder_names_shared_storage(tmp_path):
    with pytest.raises(QdupError, match=f"^{tmp_path / 'nowhere'}: no index folder on .*same path \\(shared storage\\)"):
        mine_chunk_task.fn(tmp_path / "nowhere", None, 0, 1, 1, None)
    with pytest.raises(QdupError, match="no model folder"):
        search_chunk_task.fn(tmp_path, tmp_path / "nowhere", None, ["q?"], 0, 1)
