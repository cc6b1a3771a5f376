"""An export with a search reranker: it travels hash-checked beside the pair reranker and orders `reranked` search's
first 20 hits, while the duplicate decision stays the pair reranker's."""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from qdup.config import ModelConfig, SearchConfig, VocabConfig
from qdup.errors import QdupError
from qdup.evaluation.pair_features import fit_featurizer
from qdup.evaluation.reranker import BoostingParams, fit_reranker, out_of_fold_scores, pair_groups
from qdup.evaluation.reranker_io import save_reranker
from qdup.model.network import build_encoder
from qdup.model.vocab import fit_vectorizer
from qdup.search.candidate_rerank import MODEL_FILE, RERANK_DEPTH, SearchRerankFit, save_search_reranker
from qdup.search.lexical import evaluate_retrieval
from qdup.search.retrieval import query_part
from qdup.serving.export import export_models
from qdup.serving.predictor import load_inference

CFG = ModelConfig(embedding_dim=8, lstm_units=8, max_length=12)
RRF = {"method": "hybrid", "hybrid": {"method": "rrf", "weight": None}, "rrf_k": 60}


@pytest.fixture(scope="module")
def export(tmp_path_factory, demo_tsv):
    """A tiny untrained encoder exported with a pair reranker (calibration rows) and a search reranker (selection rows)."""
    from qdup.model.encode import encode, similarities
    from qdup.model.network import load_encoder

    tmp = tmp_path_factory.mktemp("sr-export")
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    train, cal, sel_df = df.iloc[:250], df.iloc[250:450], df.iloc[450:]
    vec = fit_vectorizer(list(train.question1) + list(train.question2), VocabConfig())
    keras.utils.set_random_seed(0)
    build_encoder(vec.vocabulary_size(), CFG).save(tmp / "encoder.keras")
    encoder = load_encoder(tmp / "encoder.keras")
    featurizer = fit_featurizer(train)
    q1, q2, y = list(cal.question1), list(cal.question2), cal.is_duplicate.to_numpy()
    x = featurizer.features(q1, q2, similarities(encoder, vec, q1, q2, CFG.max_length))
    params = BoostingParams(max_iter=30)
    reranker = fit_reranker(featurizer, x, y, out_of_fold_scores(x, y, pair_groups(q1, q2), params, 3, 0), params, 0)
    save_reranker(reranker, tmp / "reranker")
    sel = query_part(sel_df)
    result = evaluate_retrieval(sel, encode(encoder, vec, sel.corpus, CFG.max_length), cfg=SearchConfig(hybrid_weight_step=0.5),
                                search_fit=SearchRerankFit(featurizer, params, 3, 0))
    save_search_reranker(result["search_reranker_model"], tmp / "search_reranker")
    info = export_models(tmp / "encoder.keras", vec, CFG, 0.5, tmp / "export", reranker_dir=tmp / "reranker",
                         search_reranker_dir=tmp / "search_reranker")
    return tmp, info, df


def test_the_export_carries_the_search_reranker_hash_checked(export, tmp_path):
    tmp, info, _ = export
    assert {"search_reranker.json", MODEL_FILE, "reranker_trees.onnx"} <= set(info["sha256"])
    predictor = load_inference(tmp / "export")
    assert predictor.search_reranker is not None and predictor.reranker is not None
    bad = tmp_path / "export"
    shutil.copytree(tmp / "export", bad)
    (bad / MODEL_FILE).write_bytes((bad / MODEL_FILE).read_bytes() + b"\0")
    with pytest.raises(QdupError, match="search_reranker_trees.onnx: sha256"):
        load_inference(bad)
    (bad / MODEL_FILE).unlink()
    (bad / "search_reranker.json").unlink()
    with pytest.raises(QdupError, match="names a search reranker"):
        load_inference(bad)


def test_reranked_search_orders_the_hybrids_first_20_and_the_pair_reranker_decides(export):
    from tests.serving.conftest import export_searcher

    tmp, _, df = export
    predictor = load_inference(tmp / "export")
    searcher, questions = export_searcher(tmp / "export", df, 400, RRF | {"method": "reranked"})
    assert searcher.search_reranker is not None and searcher.reranker_decides
    assert searcher.score_kind() == "search_reranker"
    queries = [questions[5], "How can I become rich online?", questions[40]]
    k = 30
    reranked = searcher.ranking(queries, k, "reranked")
    hybrid = searcher.ranking(queries, k, "hybrid")
    assert reranked.kind == "search_reranker"
    for got, base, scores in zip(reranked.positions, hybrid.positions, reranked.scores, strict=True):
        assert sorted(got[:RERANK_DEPTH]) == sorted(base[:RERANK_DEPTH])
        np.testing.assert_array_equal(got[RERANK_DEPTH:], base[RERANK_DEPTH:])
        assert list(scores[:RERANK_DEPTH]) == sorted(scores[:RERANK_DEPTH], reverse=True)
    assert any(not np.array_equal(a[:RERANK_DEPTH], b[:RERANK_DEPTH]) for a, b in zip(reranked.positions, hybrid.positions, strict=True))
    hits = searcher.search(queries, 10)
    for hit_list in hits:
        assert [h["score_kind"] for h in hit_list] == ["search_reranker"] * 10
        # The duplicate decision is the pair reranker's score against its threshold, not the search reranker's.
        assert all(h["duplicate"] == (h["reranker_score"] >= searcher.reranker.threshold) for h in hit_list)
    want = predictor.reranker.score([queries[1]] * 10, [h["question"] for h in hits[1]],
                                    [h["similarity"] for h in hits[1]])
    np.testing.assert_allclose([h["reranker_score"] for h in hits[1]], want, atol=1e-9)


def test_an_excluded_question_is_left_out_of_its_querys_first_stages(export):
    from tests.serving.conftest import export_searcher

    tmp, _, df = export
    searcher, questions = export_searcher(tmp / "export", df, 300, RRF)
    asked = np.array([3, 50, 120])
    queries = [questions[int(p)] for p in asked]
    for method in ("dense", "lexical", "hybrid", "reranked"):
        plain = searcher.rank(queries, 10, method)[0]
        got = searcher.rank(queries, 10, method, exclude=asked)[0]
        assert (plain == asked[:, None]).any(axis=1).all()  # an indexed question finds itself...
        assert not (got == asked[:, None]).any()  # ...unless it is excluded
        if method in ("dense", "lexical"):
            # A single list: the rest move up one place.
            for row, full, p in zip(got, searcher.rank(queries, 11, method)[0], asked, strict=True):
                np.testing.assert_array_equal(row, full[full != p][:10])
