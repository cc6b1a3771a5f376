"""`qdup index build`, `qdup search`, `qdup mine` on a published tiny model: outputs, and bad input refused with exit 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np
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


def test_the_lexical_index_is_built_with_the_index_hashed_and_loaded_ready(world, tmp_path, caplog):
    import shutil

    from qdup.search.bm25 import BM25_FILES
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import load_index
    from qdup.search.service import METHODS, VersionSearcher

    tmp, store, versions, tsv, questions = world
    assert run(["index", "build", "--model", versions[1], "--store", store.url, "--questions", str(tsv),
                "--index", str(tmp_path / "idx")]) == 0
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert set(BM25_FILES.values()) <= set(manifest["files"]) and manifest["lexical"]["kind"] == "bm25"
    assert manifest["lexical"]["documents"] == len(questions)
    caplog.clear()
    with caplog.at_level("WARNING", logger="qdup.search"):
        index = load_index(tmp_path / "idx", expected_model_version=versions[1])
    assert index.lexical is not None and not [r for r in caplog.records if r.name == "qdup.search"]  # loaded, not fitted
    searcher = VersionSearcher(index, load_query_encoder(store.open_version(versions[1]) / "model"))
    assert searcher.methods == tuple(m for m in METHODS if m != "reranked")  # no reranker in this version
    fresh = searcher.lexical.scores(questions[5])
    assert searcher.search([questions[5]], 1, "lexical")[0][0]["question"] == questions[5]

    # An altered lexical file is refused like any other file of the index.
    altered = tmp_path / "altered"
    shutil.copytree(tmp_path / "idx", altered)
    vocab = altered / BM25_FILES["vocab_name"]
    vocab.write_text(vocab.read_text().replace('"python"', '"pyth0n"') + " ")
    with pytest.raises(QdupError, match="sha256 differs"):
        load_index(altered, expected_model_version=versions[1])

    # An index saved before the lexical index existed: it loads, and the lexical side is fitted once, at warm-up
    # (before any query), with a log line saying to rebuild.
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "idx", old)
    for name in BM25_FILES.values():
        (old / name).unlink(missing_ok=True)
        del manifest["files"][name]
    del manifest["lexical"]
    (old / "index.json").write_text(json.dumps(manifest))
    index = load_index(old, expected_model_version=versions[1])
    assert index.lexical is None
    searcher = VersionSearcher(index, load_query_encoder(store.open_version(versions[1]) / "model"))
    searcher.warm(["dense"])
    assert not searcher.lexical_ready  # dense search does not need it
    with caplog.at_level("WARNING", logger="qdup.search"):
        searcher.warm(searcher.methods)
    assert searcher.lexical_ready and "no lexical index saved with it" in caplog.text and "rebuild" in caplog.text
    np.testing.assert_array_equal(searcher.lexical.scores(questions[5]), fresh)


def _check_answers(hits: list[dict], threshold: float) -> None:
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert [h["duplicate"] for h in hits] == [h["similarity"] >= threshold for h in hits]


@pytest.mark.parametrize("hybrid", [{"method": "rrf", "weight": None}, {"method": "weighted", "weight": 0.3}])
def test_every_answer_is_ordered_by_the_score_it_shows(world, tmp_path, capsys, hybrid):
    """Search answers carry the score that ranked them (and what it is), the cosine apart, and duplicate marks at the
    version's threshold: from the searcher, the CLI's JSON and table, and batch search."""
    from qdup.search.batch import search_table
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import load_index
    from qdup.search.lexical import fused_scores
    from qdup.search.service import VersionSearcher

    tmp, store, versions, tsv, questions = world
    built = tmp_path / "built"
    assert run(["index", "build", "-m", versions[1], "--store", store.url, "--questions", str(tsv), "--index", str(built)]) == 0
    index = load_index(built, expected_model_version=versions[1])
    index.search_defaults = {"method": "hybrid", "hybrid": hybrid, "rrf_k": 60}
    encoder = load_query_encoder(store.open_version(versions[1]) / "model")
    encoder.threshold = 0.5  # the tiny random model's cosines straddle it
    searcher = VersionSearcher(index, encoder)
    queries = [questions[3], "How do I learn Python quickly?", questions[40]]
    kinds = {"dense": "cosine", "lexical": "bm25", "hybrid": hybrid["method"]}
    for method, kind in kinds.items():
        answers = searcher.search(queries, 8, method)
        for hits in answers:
            assert hits and {h["score_kind"] for h in hits} == {kind}
            _check_answers(hits, 0.5)
        if method == "dense":
            assert all(h["score"] == h["similarity"] for hits in answers for h in hits)
    # The shown hybrid score is the fusion of the two rankings, recomputed here from the two lists.
    ranking = searcher.ranking(queries[:1], 5, "hybrid")
    vectors = encoder.encode(queries[:1])
    d_idx, d_scores = index.search(vectors, 100)
    l_idx, _ = index.lexical.search(queries[:1], 100)
    pos = ranking.positions
    dense = np.einsum("nkd,nd->nk", index.embeddings[pos], vectors)
    want = fused_scores(pos, d_idx, l_idx, dense, index.lexical.query_pair_scores(queries[:1], pos), hybrid["method"],
                        hybrid["weight"], 60)
    if hybrid["method"] == "rrf":
        np.testing.assert_allclose(ranking.scores, want)
    assert (np.diff(ranking.scores[0]) <= 0).all()
    assert searcher.describe() == {"method": "hybrid", "score_kind": hybrid["method"], "duplicate_by": "similarity",
                                   "duplicate_threshold": 0.5}

    table = search_table(searcher, queries, 8).to_pandas()
    assert list(table.columns[:6]) == ["query_id", "query", "ranking", "rank", "score", "score_kind"]
    assert set(table.score_kind) == {hybrid["method"]}
    for _, rows in table.groupby("query_id"):
        assert (np.diff(rows.score.to_numpy()) <= 0).all() and rows["rank"].tolist() == list(range(1, len(rows) + 1))
    assert (table.duplicate == (table.encoder_cosine >= 0.5)).all()

    # The CLI: JSON and the table print the ranking score first, the cosine beside it (the version's threshold is 0.9).
    index.save(tmp_path / "hybrid")
    base = ["--model", versions[1], "--store", store.url, "--index", str(tmp_path / "hybrid")]
    capsys.readouterr()
    assert run(["search", *base, queries[1], "-k", "6", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["score_kind"] in ("rrf", "weighted") and body["duplicate_by"] == "similarity"
    _check_answers(body["results"], body["duplicate_threshold"])
    assert run(["search", *base, queries[1], "-k", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "ordered by their" in lines[0] and lines[1].split()[:4] == ["rank", "score", f"({'RRF' if body['score_kind'] == 'rrf' else 'weighted'})", "cosine"]
    shown = [float(line.split()[1]) for line in lines[2:]]
    assert shown == pytest.approx([r["score"] for r in body["results"]], abs=1e-4)


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
    assert done.stdout.splitlines()[2].split()[0] == "1" and questions[3] in done.stdout.splitlines()[2]


def test_an_export_folder_works_with_m_as_a_version_does(world, tmp_path, capsys):
    tmp, _, _, tsv, questions = world
    export = str(tmp / "export")
    with pytest.raises(QdupError, match="an export folder needs --questions and --index"):
        run(["index", "build", "-m", export])
    assert run(["index", "build", "-m", export, "--questions", str(tsv), "--index", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert run(["search", "-m", export, "--index", str(tmp_path / "idx"), questions[3], "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["question"] == questions[3] and out["threshold"] == pytest.approx(0.9)
    assert run(["mine", "-m", export, "--index", str(tmp_path / "idx"), "-k", "2", "--out", str(tmp_path / "p.parquet")]) == 0
    assert pq.read_table(tmp_path / "p.parquet").num_rows >= len(questions)


def test_the_table_header_names_each_score_once():
    row = {"rank": 1, "score": 0.03125, "similarity": 0.9, "reranker_score": 0.77, "duplicate": True, "question": "q?", "id": 3}
    assert cli.table_header("cosine", "similarity").split("  ") == ["rank", "score (cosine)", "duplicate", "question"]
    header = cli.table_header("rrf", "reranker_score")
    assert [c.strip() for c in header.split("  ") if c.strip()] == ["rank", "score (RRF)", "cosine", "reranker", "duplicate", "question"]
    assert [c.strip() for c in cli.table_header("reranker", "reranker_score").split("  ") if c.strip()] == [
        "rank", "score (reranker)", "cosine", "duplicate", "question"]
    # Each value ends under the end of its column's name.
    line = cli.table_row(row, "rrf", "reranker_score")
    for name, value in (("score (RRF)", "0.0312"), ("cosine", "0.900"), ("reranker", "0.7700")):
        assert header.index(name) + len(name) == line.index(value) + len(value)
