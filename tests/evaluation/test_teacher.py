"""The silver pairs' teacher: cross-fitted on the training region's labelled pairs, blind to the encoder, and the
silver split it sorts into teacher-labelled duplicates and search negatives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qdup.config import TrainConfig, ValidateConfig
from qdup.data.silver import SILVER_FILE, read_checked_silver, read_silver
from qdup.evaluation.reranker import BoostingParams, pair_groups
from qdup.evaluation.teacher import cross_fit_scores
from qdup.model.search_batches import silver_duplicates
from qdup.search.negatives import teacher_kinds
from qdup.stages.silver import build_silver
from tests.search.test_search_negatives import parts, silver  # noqa: F401  (fixtures: the demo splits and their silver split)

PARAMS = BoostingParams(max_iter=30, max_leaf_nodes=7, min_samples_leaf=5)


def test_a_candidate_is_scored_by_a_model_that_never_saw_its_query(parts, silver):  # noqa: F811
    _, p = parts
    _, s = silver
    labelled = pd.concat([p["train"], p["negatives"]], ignore_index=True)
    scores, facts = cross_fit_scores(labelled, s["query"], s["candidate"], PARAMS, 3, seed=5)
    assert scores.shape == (len(s),) and np.isfinite(scores).all() and ((0 <= scores) & (scores <= 1)).all()
    assert facts["labelled_pairs"] == len(labelled) and 0.5 < facts["out_of_fold_roc_auc"] <= 1
    again, _ = cross_fit_scores(labelled, s["query"], s["candidate"], PARAMS, 3, seed=5)
    np.testing.assert_array_equal(scores, again)
    # A labelled pair scored as a candidate gets the out-of-fold score: the fold that held it out scores it, so its
    # score differs from the in-sample prediction of a model fitted on every pair.
    own, _ = cross_fit_scores(labelled, labelled["question1"], labelled["question2"], PARAMS, 3, seed=5)
    from qdup.evaluation.pair_features import fit_featurizer

    x = fit_featurizer(labelled).features(labelled["question1"].tolist(), labelled["question2"].tolist(), np.zeros(len(labelled)))
    fitted = PARAMS.model(5).fit(x, labelled["is_duplicate"].to_numpy()).predict_proba(x)[:, 1]
    assert np.mean(np.abs(own - fitted)) > 1e-3
    groups = pair_groups(labelled["question1"].tolist(), labelled["question2"].tolist())
    assert len(np.unique(groups)) >= 3


def test_teacher_kinds_sort_rows_by_score():
    s = pd.DataFrame({"query_qid": [1, 1, 1, 2], "query": ["a", "a", "a", "b"], "candidate_qid": [5, 6, 7, 8],
                      "candidate": ["x", "y", "z", "w"], "kind": "bm25_negative", "rank": np.int32([1, 2, 3, 1]),
                      "bm25": np.float32([3, 2, 1, 1]), "teacher": np.float32(np.nan)})
    out = teacher_kinds(s, np.array([0.9, 0.5, 0.1, 0.2]), positive=0.8, negative=0.3)
    assert out[["candidate", "kind", "rank"]].values.tolist() == [
        ["x", "silver_positive", 1], ["z", "bm25_negative", 1], ["w", "bm25_negative", 1]]
    assert out["teacher"].tolist() == pytest.approx([0.9, 0.1, 0.2])
    every = teacher_kinds(s, np.array([0.9, 0.5, 0.1, 0.2]), positive=None, negative=None)
    assert set(every["kind"]) == {"bm25_negative"} and every["rank"].tolist() == [1, 2, 3, 1]
    assert silver_duplicates(out).values.tolist() == [["a", "x", 1]]


def test_the_stage_writes_teacher_labelled_rows_that_pass_the_contract(parts, silver, tmp_path):  # noqa: F811
    d, _ = parts
    _, plain = silver
    cfg = TrainConfig(search_negatives=1, search_negatives_depth=5, silver_positive_score=0.6, silver_negative_score=0.4)
    m = build_silver(d, cfg, ValidateConfig(), tmp_path, seed=3)
    s = read_checked_silver(tmp_path / SILVER_FILE, ValidateConfig().silver_suite)
    assert s.equals(read_silver(tmp_path / SILVER_FILE)) and m["teacher"]["candidates"] == len(plain)
    pos, neg = s[s["kind"] == "silver_positive"], s[s["kind"] == "bm25_negative"]
    assert len(pos) > 0 and len(neg) > 0 and len(s) < len(plain)
    assert (pos["teacher"] >= 0.6).all() and (neg["teacher"] <= 0.4).all()
    assert m["silver"]["kinds"] == {"bm25_negative": len(neg), "silver_positive": len(pos)}
    # The teacher changes which rows there are, never the pairs: every row is one of the plain split's.
    key = ["query_qid", "candidate_qid"]
    assert len(s.merge(plain[key], on=key)) == len(s)
