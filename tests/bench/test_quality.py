"""The quality benchmark's statistics: cluster bootstrap weights, intervals and paired differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from bench.quality_figures import cluster_weights, pair_figures, pair_groups, retrieval_figures


def test_cluster_weights_move_whole_groups():
    groups = np.array([0, 0, 0, 1, 2, 2, 3])
    for w in cluster_weights(groups, 50, seed=1):
        assert w[0] == w[1] == w[2] and w[4] == w[5]
        assert w[[0, 3, 4, 6]].sum() == 4  # four groups drawn, with replacement
    a = [w.tolist() for w in cluster_weights(groups, 5, seed=1)]
    assert a == [w.tolist() for w in cluster_weights(groups, 5, seed=1)]


def test_pair_groups_join_pairs_that_share_a_question():
    df = pd.DataFrame({"question1": ["a", "b", "x", "a"], "question2": ["b", "c", "y", "z"]})
    g = pair_groups(df)
    assert g[0] == g[1] == g[3] and g[2] != g[0]


def test_pair_figures_estimates_and_paired_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = y + rng.normal(0, 0.8, 400)
    weak = y + rng.normal(0, 2.0, 400)
    groups = np.arange(400) // 2
    f = pair_figures(y, {"model": good, "lexical": weak}, groups, {"resamples": 200, "level": 0.95}, seed=3)
    assert f["model"]["roc_auc"]["estimate"] == pytest.approx(roc_auc_score(y, good), abs=1e-12)
    assert f["model"]["roc_auc"]["low"] < f["model"]["roc_auc"]["estimate"] < f["model"]["roc_auc"]["high"]
    d = f["model"]["roc_auc_minus_lexical"]
    assert d["estimate"] > 0.1 and d["low"] > 0  # clearly better: the paired interval excludes 0
    assert "roc_auc_minus_lexical" not in f["lexical"]


def test_retrieval_intervals_widen_when_clusters_are_large():
    rng = np.random.default_rng(1)
    values = np.repeat(rng.random(50), 8)  # 50 clusters of 8 identical queries
    per_query = {"dense": {m: values for m in ("mrr@10", "ndcg@10", "recall@10")}}
    by_cluster = retrieval_figures(per_query, np.arange(400) // 8, {"resamples": 300, "level": 0.95}, seed=2)["dense"]["mrr@10"]
    by_query = retrieval_figures(per_query, np.arange(400), {"resamples": 300, "level": 0.95}, seed=2)["dense"]["mrr@10"]
    assert by_cluster["high"] - by_cluster["low"] > 2 * (by_query["high"] - by_query["low"])


def test_a_default_is_chosen_on_selection_figures_never_on_test():
    from bench.quality_report import chosen

    def result(cal: float, mrr: float, test_roc: float) -> dict:
        return {"sample": {"selection": {"calibration_roc_auc": cal, "retrieval_val_mrr@10": {"dense": mrr, "hybrid": mrr}},
                           "pairs": {"encoder": {"roc_auc": {"estimate": test_roc}}}}}

    results = {"old": result(0.80, 0.5, 0.90), "new": result(0.82, 0.4, 0.70)}
    assert chosen(results, "sample") == "new"  # better on calibration, although far worse on test
    results["tie"] = result(0.82, 0.6, 0.10)
    assert chosen(results, "sample") == "tie"  # equal calibration: the selection-part MRR@10 decides
    assert chosen(results, "larger") is None
