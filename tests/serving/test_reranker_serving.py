"""An export with a pair reranker: the predictor decides by it, score_file writes its score, search re-ranks with it."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qdup.config import ModelConfig, VocabConfig
from qdup.errors import QdupError
from qdup.evaluation.pair_features import fit_featurizer
from qdup.evaluation.reranker import BoostingParams, fit_reranker, out_of_fold_scores, pair_groups
from qdup.evaluation.reranker_io import MODEL_FILE, save_reranker
from qdup.model.network import build_encoder
from qdup.model.vocab import fit_vectorizer
from qdup.serving.export import export_models
from qdup.serving.predictor import load_inference, score_file

CFG = ModelConfig(embedding_dim=8, lstm_units=8, max_length=12)


@pytest.fixture(scope="module")
def export(tmp_path_factory, demo_tsv):
    """A tiny untrained encoder exported with a reranker fitted on generated labelled pairs."""
    tmp = tmp_path_factory.mktemp("rr-export")
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    train, cal = df.iloc[:300], df.iloc[300:]
    vec = fit_vectorizer(list(train.question1) + list(train.question2), VocabConfig())
    keras.utils.set_random_seed(0)
    build_encoder(vec.vocabulary_size(), CFG).save(tmp / "encoder.keras")
    featurizer = fit_featurizer(train)
    q1, q2, y = list(cal.question1), list(cal.question2), cal.is_duplicate.to_numpy()
    # The reranker is fitted on cosines of the exported encoder itself, as the rerank stage does.
    from qdup.model.encode import similarities
    from qdup.model.network import load_encoder

    cos = similarities(load_encoder(tmp / "encoder.keras"), vec, q1, q2, CFG.max_length)
    x = featurizer.features(q1, q2, cos)
    params = BoostingParams(max_iter=30)
    reranker = fit_reranker(featurizer, x, y, out_of_fold_scores(x, y, pair_groups(q1, q2), params, 3, 0), params, 0)
    save_reranker(reranker, tmp / "reranker")
    info = export_models(tmp / "encoder.keras", vec, CFG, 0.5, tmp / "export", reranker_dir=tmp / "reranker")
    return tmp, info, df


def test_the_export_hashes_the_reranker_files(export):
    tmp, info, _ = export
    assert info["reranker_threshold"] is not None
    assert {"reranker.json", "reranker_trees.onnx", "reranker_bm25.json"} <= set(info["sha256"])


def test_the_predictor_decides_by_the_reranker(export, tmp_path):
    tmp, info, df = export
    predictor = load_inference(tmp / "export")
    assert predictor.reranker is not None and predictor.decision_threshold == info["reranker_threshold"]
    q1, q2 = list(df.question1[:80]), list(df.question2[:80])
    got = predictor.decide(q1, q2)
    assert np.allclose(got["similarity"], predictor.similarity(q1, q2))
    want = predictor.reranker.score(q1, q2, got["similarity"])
    assert np.array_equal(got["reranker_score"], want)
    assert np.array_equal(got["duplicate"], want >= predictor.reranker.threshold)
    assert np.array_equal(predictor.predict(q1, q2), got["duplicate"])
    # The cosine rule and the reranker disagree on some pairs here: the decision really is the reranker's.
    assert not np.array_equal(got["duplicate"], got["similarity"] >= predictor.threshold)

    tsv = tmp_path / "pairs.tsv"
    df.iloc[:80][["id", "question1", "question2"]].to_csv(tsv, sep="\t", index=False)
    score_file(predictor, tsv, tmp_path / "out.parquet", chunk_size=30)
    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert np.allclose(table["reranker_score"], want) and table["duplicate"] == got["duplicate"].tolist()


def test_an_altered_reranker_file_is_refused_at_load(export, tmp_path):
    import shutil

    tmp, _, _ = export
    bad = tmp_path / "export"
    shutil.copytree(tmp / "export", bad)
    (bad / MODEL_FILE).write_bytes((bad / MODEL_FILE).read_bytes() + b"\0")
    with pytest.raises(QdupError, match="reranker_trees.onnx: sha256"):
        load_inference(bad)


def test_search_reranks_its_candidates(export):
    from qdup.search.service import VersionSearcher
    from tests.serving.conftest import export_searcher

    tmp, _, df = export
    searcher, questions = export_searcher(tmp / "export", df, 300)
    index, encoder = searcher.index, searcher.encoder
    queries = [questions[5], "How can I become rich online?"]
    hits = searcher.search(queries, 10, "reranked")
    for hit_list in hits:
        scores = [h["reranker_score"] for h in hit_list]
        assert len(hit_list) == 10 and scores == sorted(scores, reverse=True)
        assert all(h["duplicate"] == (h["reranker_score"] >= searcher.reranker.threshold) for h in hit_list)
    # The best reranked hit scores at least as high as every dense and lexical top-10 candidate.
    for method in ("dense", "lexical"):
        for got, other in zip(hits, searcher.search(queries, 10, method), strict=True):
            assert got[0]["reranker_score"] >= max(h["reranker_score"] for h in other)
    with pytest.raises(QdupError, match="'reranked' needs a version exported with a pair reranker"):
        VersionSearcher(index, encoder).rank(queries, 5, "reranked")


def test_the_server_decides_by_the_reranker(export, tmp_path):
    import httpx

    from qdup.registry.store import ArtifactStore
    from qdup.serving.http import create_app
    from qdup.serving.settings import ServeConfig
    from tests.serving.conftest import live_server, publish_export

    tmp, info, df = export
    store = ArtifactStore(str(tmp_path / "store"))
    version = publish_export(store, tmp / "export", info["threshold"])
    store.promote(version, "test", why="reranker")
    predictor = load_inference(tmp / "export")
    q1, q2 = list(df.question1[:6]), list(df.question2[:6])
    want = predictor.decide(q1, q2)
    app = create_app(ServeConfig(store=store.url, poll_s=0.1))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        got = client.post("/v1/similarity", json={"pairs": [{"question1": a, "question2": b} for a, b in zip(q1, q2, strict=True)]})
        assert got.status_code == 200, got.text
        body = got.json()
    assert body["reranker_threshold"] == predictor.reranker.threshold
    np.testing.assert_allclose([r["reranker_score"] for r in body["results"]], want["reranker_score"], atol=1e-6)
    assert [r["duplicate"] for r in body["results"]] == want["duplicate"].tolist()


def test_concurrent_requests_get_their_own_reranker_scores_from_one_model_call(export, tmp_path):
    """The reranker scores a micro-batch's pairs in its one model call; each request still gets its own pairs' scores."""
    import asyncio

    import httpx

    from qdup.registry.store import ArtifactStore
    from qdup.serving.http import create_app
    from qdup.serving.settings import ServeConfig
    from tests.serving.conftest import live_server, publish_export

    tmp, info, df = export
    store = ArtifactStore(str(tmp_path / "store"))
    store.promote(publish_export(store, tmp / "export", info["threshold"]), "test", why="reranker")
    q1, q2 = list(df.question1[:12]), list(df.question2[:12])
    want = load_inference(tmp / "export").decide(q1, q2)
    app = create_app(ServeConfig(store=store.url, poll_s=0.1, batch_wait_ms=200.0))

    async def fire(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/similarity", json={"question1": a, "question2": b})
                                          for a, b in zip(q1, q2, strict=True)))

    with live_server(app) as url:
        answers = asyncio.run(fire(url))
    assert all(r.status_code == 200 for r in answers)
    np.testing.assert_allclose([r.json()["reranker_score"] for r in answers], want["reranker_score"], atol=1e-6)
    assert [r.json()["duplicate"] for r in answers] == want["duplicate"].tolist()
    assert app.state.batcher.stats.max_requests_per_call > 1
