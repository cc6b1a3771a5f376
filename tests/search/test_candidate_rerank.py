"""The search reranker's pieces: first-stage features, re-ordering, fitting out-of-fold, its files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qdup.config import SearchConfig
from qdup.errors import QdupError
from qdup.evaluation.pair_features import FEATURE_NAMES, fit_featurizer
from qdup.evaluation.reranker import BoostingParams
from qdup.search.candidate_rerank import (
    MODEL_FILE,
    SEARCH_FEATURE_NAMES,
    FirstStage,
    SearchRerankFit,
    first_stage_features,
    load_search_reranker,
    reorder,
    save_search_reranker,
    search_scores,
)
from qdup.search.lexical import evaluate_retrieval
from qdup.search.retrieval import query_part


def test_first_stage_features_by_hand():
    stage = FirstStage(
        top=np.array([[5, 3, -1]]), dense=np.array([[3, 9, 5]]), lexical=np.array([[5, 8, 7]]),
        cosines=np.array([[0.5, 0.8, -np.inf]]), lexical_scores=np.array([[4.0, 2.0, -np.inf]]),
    )
    got = first_stage_features(stage)
    # hybrid rank, dense rank (3 absent: the list's length), lexical rank, BM25 over the best, cosine below the best.
    np.testing.assert_allclose(got[0, 0], [0, 2, 0, 1.0, 0.3])
    np.testing.assert_allclose(got[0, 1], [1, 0, 3, 0.5, 0.0])
    assert np.isnan(got[0, 2]).all()


def test_reorder_moves_only_the_scored_head_and_keeps_ties_in_order():
    ranked = np.array([[1, 2, 3, 4], [7, 8, -1, -1]])
    np.testing.assert_array_equal(reorder(ranked, np.array([[0.1, 0.9], [0.5, 0.5]])), [[2, 1, 3, 4], [7, 8, -1, -1]])


def _embed(corpus: list[str]) -> np.ndarray:
    # Stand-in dense encodings: word TF-IDF reduced by SVD (any fixed unit vectors of the corpus exercise the code).
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    emb = TruncatedSVD(16, random_state=0).fit_transform(TfidfVectorizer().fit_transform(corpus)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def fitted(demo_tsv):
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    train, sel_df, test_df = df.iloc[:200], df.iloc[200:400], df.iloc[400:]
    spec = SearchRerankFit(fit_featurizer(train), BoostingParams(max_iter=30), folds=3, seed=0)
    sel, held = query_part(sel_df), query_part(test_df)
    cfg = SearchConfig(hybrid_weight_step=0.5)
    result = evaluate_retrieval(sel, _embed(sel.corpus), cfg=cfg, test_split=held, test_embeddings=_embed(held.corpus),
                                search_fit=spec)
    return spec, sel, held, test_df, cfg, result


def test_the_search_reranker_is_fitted_on_the_selection_top_candidates_and_judged_out_of_fold(fitted):
    spec, sel, held, test_df, cfg, result = fitted
    by, model = result["reranked_by"], result["search_reranker_model"]
    assert by["reranker"] == "search" and by["val"] == "out-of-fold" and by["depth"] == 20
    assert model.features == SEARCH_FEATURE_NAMES and len(SEARCH_FEATURE_NAMES) == len(FEATURE_NAMES) + 5
    assert 0 < by["duplicates"] < by["rows"] <= 20 * len(sel.val)
    for part in ("val", "test"):
        assert 0 < result["reranked"][part]["mrr@10"] <= 1
    assert result["best"] == max(("lexical", "dense", "hybrid", "reranked"), key=lambda n: result[n]["val"]["mrr@10"])
    # The test part's labels reach no choice: permuted, they change test figures only.
    rng = np.random.default_rng(0)
    permuted = query_part(test_df.assign(is_duplicate=rng.permutation(test_df["is_duplicate"].to_numpy())))
    again = evaluate_retrieval(sel, _embed(sel.corpus), cfg=cfg, test_split=permuted,
                               test_embeddings=_embed(permuted.corpus), search_fit=spec)
    assert again["reranked"]["val"] == result["reranked"]["val"] and again["best"] == result["best"]
    assert again["reranked"]["test"] != result["reranked"]["test"]


def test_a_saved_search_reranker_scores_as_fitted_and_an_altered_file_is_refused(fitted, tmp_path):
    spec, sel, _, _, _, result = fitted
    model = result["search_reranker_model"]
    digests = save_search_reranker(model, tmp_path / "sr")
    assert set(digests) == {"search_reranker.json", MODEL_FILE}
    loaded = load_search_reranker(tmp_path / "sr", spec.featurizer)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, len(SEARCH_FEATURE_NAMES)))
    np.testing.assert_allclose(loaded.score_features(x), model.score_features(x), rtol=0, atol=1e-12)
    # It reads a search's first-stage features: it cannot score a bare pair, and a pair reranker cannot order a search.
    with pytest.raises(QdupError, match="first-stage features"):
        loaded.score(["a"], ["b"], [0.5])
    stage = FirstStage(np.array([[0]]), np.array([[0]]), np.array([[0]]), np.array([[1.0]]), np.array([[1.0]]))
    with pytest.raises(QdupError, match="a search reranker is needed"):
        search_scores(result["search_reranker_model"].__class__(spec.featurizer, None, 0.5, {}, loaded.trees), ["q"], ["q"], stage)
    (tmp_path / "sr" / MODEL_FILE).write_bytes((tmp_path / "sr" / MODEL_FILE).read_bytes() + b"\0")
    with pytest.raises(QdupError, match="search_reranker_trees.onnx: sha256"):
        load_search_reranker(tmp_path / "sr", spec.featurizer)


def test_too_few_selection_duplicates_name_the_option(demo_tsv):
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    spec = SearchRerankFit(fit_featurizer(df.iloc[:200]), BoostingParams(max_iter=5), folds=20, seed=0)
    sel = query_part(df.iloc[200:230])
    with pytest.raises(QdupError, match="search.rerank_fit: .*rerank.folds=20"):
        evaluate_retrieval(sel, _embed(sel.corpus), cfg=SearchConfig(hybrid_weight_step=0.5), search_fit=spec)


def test_the_served_reranked_lists_reorder_the_hybrids_first_20_only(fitted):
    from qdup.search.lexical import served_rankings

    _, _, held, _, cfg, result = fitted
    emb = _embed(held.corpus)
    hybrid = served_rankings(held.test, held.corpus, emb, "hybrid", result["hybrid"], cfg=cfg)
    got = served_rankings(held.test, held.corpus, emb, "reranked", result["hybrid"], cfg=cfg,
                          search_reranker=result["search_reranker_model"])
    np.testing.assert_array_equal(np.sort(got[:, :20], axis=1), np.sort(hybrid[:, :20], axis=1))
    np.testing.assert_array_equal(got[:, 20:], hybrid[:, 20:])
    assert (got[:, :20] != hybrid[:, :20]).any()
    # What the gate measures is what the evaluation reported on the same part.
    from qdup.search.retrieval import ranking_metrics

    assert ranking_metrics(got, held.test.relevant) == pytest.approx(result["reranked"]["test"])


def test_too_few_selection_duplicates_stop_the_run_before_training(tmp_path):
    from qdup.config import RetrainConfig
    from qdup.errors import ConfigError
    from qdup.stagecache import StageResult
    from tasks.rerank import check_rerank_data

    def splits(sel_dups: int) -> StageResult:
        return StageResult(stage="splits", key="k", path=tmp_path, cached=False, manifest={"splits": {
            "calibration": {"rows": 100, "duplicates": 40}, "selection": {"rows": 50, "duplicates": sel_dups}}})

    cfg = RetrainConfig()
    check_rerank_data(splits(cfg.rerank.folds), cfg)
    with pytest.raises(ConfigError, match=r"search.rerank_fit=candidates: .* selection has 4 duplicate pairs"):
        check_rerank_data(splits(4), cfg)
    # The pair reranker orders search instead: no selection rows are fitted on.
    check_rerank_data(splits(4), cfg.model_copy(update={"search": cfg.search.model_copy(update={"rerank_fit": "pair"})}))
