"""`qdup index build`, `qdup search`, `qdup mine` on a published tiny model: outputs, and bad input refused with exit 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qdup.cli import search as cli
from qdup.config import ModelConfig, VocabConfig
from qdup.errors import QdupError
from qdup.model.network import build_encoder
from qdup.model.vocab import fit_vectorizer
from qdup.registry.store import ArtifactStore
from qdup.serving.export import export_models

CFG = ModelConfig(embedding_dim=8, lstm_units=8, max_length=8)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_tsv):
    tmp = tmp_path_factory.mktemp("cli")
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    questions = list(dict.fromkeys(list(df.question1) + list(df.question2)))[:150]
    vec = fit_vectorizer(questions, VocabConfig())
    keras.utils.set_random_seed(0)
    encoder = build_encoder(vec.vocabulary_size(), CFG)
    encoder.save(tmp / "encoder.keras")
    export_models(tmp / "encoder.keras", vec, CFG, 0.9, tmp / "export")
    store = ArtifactStore(str(tmp / "store"))
    files = {f"model/{p.name}": p for p in (tmp / "export").iterdir()}
    versions = [store.publish(files, {"note": "test"}, version=v) for v in ("20260101T000000000Z-aaaaaa", "20260102T000000000Z-bbbbbb")]
    tsv = tmp / "questions.tsv"
    pd.DataFrame({"id": range(1000, 1000 + len(questions)), "question": questions}).to_csv(tsv, sep="\t", index=False)
    return tmp, store, versions, tsv, questions


def test_build_search_and_mine(world, capsys):
    tmp, store, versions, tsv, questions = world
    base = ["--model", versions[0], "--store", store.url]
    assert run(["index", "build", *base, "--questions", str(tsv)]) == 0
    assert (tmp / "store" / "indexes" / versions[0] / "index.json").is_file()
    capsys.readouterr()
    assert run(["search", *base, questions[3], "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in out["results"]] == [1, 2, 3]
    assert out["results"][0]["question"] == questions[3] and out["results"][0]["id"] == 1003
    assert out["results"][0]["duplicate"] is True and out["threshold"] == pytest.approx(0.9)
    assert run(["search", *base, "--queries", str(tsv), "--out", str(tmp / "hits.parquet"), "-k", "2"]) == 0
    assert pq.read_table(tmp / "hits.parquet").num_rows == 2 * len(questions)
    assert run(["mine", *base, "-k", "2", "--out", str(tmp / "pairs.parquet")]) == 0
    pairs = pq.read_table(tmp / "pairs.parquet")
    assert pairs.column_names == ["id1", "id2", "question1", "question2", "similarity"] and pairs.num_rows >= len(questions)


def test_bad_input_is_refused_with_nothing_written(world, tmp_path):
    tmp, store, versions, _, _ = world
    base = ["--model", versions[1], "--store", store.url, "--index", str(tmp_path / "idx")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\nhello?\n")
    with pytest.raises(QdupError, match="no 'question' column"):
        run(["index", "build", *base, "--questions", str(bad)])
    dup = tmp_path / "dup.tsv"
    dup.write_text("question\nsame?\nother?\nsame?\n")
    with pytest.raises(QdupError, match="row 2 .*duplicates row 0"):
        run(["index", "build", *base, "--questions", str(dup)])
    assert not (tmp_path / "idx").exists()
    other = ["--model", versions[1], "--store", store.url, "--index", str(tmp / "store" / "indexes" / versions[0])]
    with pytest.raises(QdupError, match="built by model"):
        run(["search", *other, "python"])
    with pytest.raises(QdupError, match="empty question"):
        run(["search", "--model", versions[0], "--store", store.url, "  "])


def test_warm_answers_every_method_before_the_first_query(world, tmp_path):
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import load_index
    from qdup.search.service import METHODS, VersionSearcher

    tmp, store, versions, tsv, questions = world
    assert run(["index", "build", "--model", versions[1], "--store", store.url, "--questions", str(tsv),
                "--index", str(tmp_path / "idx")]) == 0
    searcher = VersionSearcher(load_index(tmp_path / "idx", expected_model_version=versions[1]),
                               load_query_encoder(store.open_version(versions[1]) / "model"))
    searcher.warm()  # the default method only (dense here): the lexical side is not paid for
    assert searcher.default_method == "dense" and not searcher.lexical_ready
    assert searcher.methods == tuple(m for m in METHODS if m != "reranked")  # no reranker in this version
    searcher.warm(searcher.methods)
    assert searcher.lexical_ready


def test_the_server_loads_a_searcher_warmed_for_its_method(world):
    """A hybrid version's lexical side is fitted before the server serves it (so before /readyz turns 200)."""
    from qdup.search.index import load_index
    from qdup.search.service import late_index_dir
    from qdup.serving.searcher import load_searcher

    tmp, store, versions, tsv, questions = world
    built = tmp / "hybrid-source"
    assert run(["index", "build", "-m", versions[1], "--store", store.url, "--questions", str(tsv), "--index", str(built)]) == 0
    index = load_index(built, expected_model_version=versions[1])
    index.search_defaults = {"method": "hybrid", "hybrid": {"method": "rrf", "weight": None}, "rrf_k": 60}
    index.save(late_index_dir(Path(store.root), versions[1]))
    searcher = load_searcher(store.open_version(versions[1]))
    assert searcher.default_method == "hybrid" and searcher.lexical_ready


def test_cli_search_verbose_prints_its_timing_breakdown(world, tmp_path):
    import os
    import subprocess
    import sys

    tmp, store, versions, tsv, questions = world
    assert run(["index", "build", "-m", versions[1], "--store", store.url, "--questions", str(tsv),
                "--index", str(tmp_path / "idx")]) == 0
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "qdup.cli", "search", "-m", versions[1], "--store", store.url, "--index", str(tmp_path / "idx"),
         questions[3], "-k", "2", "--verbose"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    timing = [line for line in done.stderr.splitlines() if line.startswith("timing: ")]
    steps = [part.rsplit(" ", 2)[0] for part in timing[0].removeprefix("timing: ").split(", ")]
    assert steps == ["resolve version", "load index", "load encoder", "load reranker", "warm-up", "search", "total"]
    assert done.stdout.splitlines()[1].split()[0] == "1" and questions[3] in done.stdout.splitlines()[1]
