"""Bootstrap intervals and paired differences: exact per-resample metrics, shared resamples, seeded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from qdup.errors import QdupError
from qdup.evaluation import bootstrap
from qdup.evaluation.bootstrap import bootstrap_intervals, paired_difference, point_metrics, resample_counts


def scored(n: int, seed: int, signal: float = 1.0, decimals: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    # Rounded so that many scores tie, which is where AUC and AP definitions differ.
    return y, np.round(rng.normal(signal * y, 1.0), decimals)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_estimates_match_scikit_learn_and_the_evaluation_metrics(seed):
    from qdup.evaluation.metrics import binary_metrics, ranking_metrics

    y, s = scored(300, seed)
    p = point_metrics(y, s, 0.4)
    assert p["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert p["pr_auc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert p["accuracy"] == pytest.approx(accuracy_score(y, s >= 0.4), abs=1e-12)
    assert p["f1"] == pytest.approx(f1_score(y, s >= 0.4), abs=1e-12)
    r, b = ranking_metrics(y, s), binary_metrics(y, s, 0.4)
    assert (p["roc_auc"], p["pr_auc"]) == pytest.approx((r["roc_auc"], r["pr_auc"]), abs=1e-12)
    assert (p["accuracy"], p["f1"]) == pytest.approx((b["accuracy"], b["f1"]), abs=1e-12)


def test_every_resample_is_scored_like_scikit_learn_scores_the_drawn_rows():
    y, s = scored(150, 3)
    counts = next(resample_counts(len(y), 20, seed=9))
    assert counts.shape == (20, 150) and (counts.sum(axis=1) == 150).all()
    weighted = bootstrap._weighted_metrics(y, s, 0.2, counts)
    for r in range(20):
        idx = np.repeat(np.arange(len(y)), counts[r].astype(int))
        yy, ss = y[idx], s[idx]
        assert weighted["roc_auc"][r] == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)
        assert weighted["pr_auc"][r] == pytest.approx(average_precision_score(yy, ss), abs=1e-12)
        assert weighted["accuracy"][r] == pytest.approx(accuracy_score(yy, ss >= 0.2), abs=1e-12)
        assert weighted["f1"][r] == pytest.approx(f1_score(yy, ss >= 0.2), abs=1e-12)


def test_intervals_contain_the_estimate_and_narrow_with_more_pairs():
    widths = {}
    for n in (200, 5000):
        y, s = scored(n, 5, decimals=3)
        out = bootstrap_intervals(y, s, 0.5, resamples=500, seed=1)
        assert out["n"] == n and out["resamples"] == 500 and out["level"] == 0.95
        for name in bootstrap.METRICS:
            m = out["metrics"][name]
            assert m["low"] <= m["estimate"] <= m["high"], (n, name, m)
            assert m["undefined"] == 0
        widths[n] = {k: out["metrics"][k]["high"] - out["metrics"][k]["low"] for k in bootstrap.METRICS}
    for name in bootstrap.METRICS:
        # Standard errors shrink like 1/sqrt(n): 25x the pairs, about a fifth of the width.
        assert widths[5000][name] < 0.4 * widths[200][name], (name, widths)


def test_seeded_resamples_repeat_and_do_not_depend_on_the_block_size(monkeypatch):
    y, s = scored(400, 6)
    a = bootstrap_intervals(y, s, 0.3, resamples=300, seed=11)
    assert bootstrap_intervals(y, s, 0.3, resamples=300, seed=11) == a
    assert bootstrap_intervals(y, s, 0.3, resamples=300, seed=12) != a
    monkeypatch.setattr(bootstrap, "BLOCK_CELLS", 400 * 7)  # blocks of 7 resamples
    assert bootstrap_intervals(y, s, 0.3, resamples=300, seed=11) == a
    assert json.loads(json.dumps(a)) == a


def test_paired_difference_of_identical_scorers_is_exactly_zero():
    y, s = scored(500, 7)
    d = paired_difference(y, s, 0.3, s.copy(), 0.3, "roc_auc", resamples=200, seed=2)
    assert (d["difference"], d["low"], d["high"]) == (0.0, 0.0, 0.0)
    assert d["share_not_better"] == 1.0 and d["resamples"] == 200 and d["metric"] == "roc_auc"


def test_paired_difference_uses_the_same_resamples_for_both_scorers():
    y, a = scored(600, 8, signal=1.5)
    rng = np.random.default_rng(1)
    b = a + rng.normal(0, 1.0, len(a))  # a noisier copy: worse
    ab = paired_difference(y, a, 0.7, b, 0.7, "accuracy", resamples=400, seed=3)
    ba = paired_difference(y, b, 0.7, a, 0.7, "accuracy", resamples=400, seed=3)
    # Same resamples: each resample's difference just changes sign.
    assert ab["low"] == pytest.approx(-ba["high"], abs=1e-12) and ab["high"] == pytest.approx(-ba["low"], abs=1e-12)
    assert ab["difference"] == pytest.approx(point_metrics(y, a, 0.7)["accuracy"] - point_metrics(y, b, 0.7)["accuracy"])
    roc = paired_difference(y, a, 0.7, b, 0.7, "roc_auc", resamples=400, seed=3)
    assert 0 < roc["low"] <= roc["difference"] <= roc["high"] and roc["share_not_better"] == 0.0
    # Pairing removes the shared test-sampling noise: the paired interval is far narrower than
    # the two unpaired intervals side by side.
    ia = bootstrap_intervals(y, a, 0.7, resamples=400, seed=3)["metrics"]["roc_auc"]
    assert roc["high"] - roc["low"] < ia["high"] - ia["low"]


def test_resamples_with_one_class_are_counted_as_undefined():
    out = bootstrap_intervals([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], 0.5, resamples=200, seed=0)
    auc = out["metrics"]["roc_auc"]
    # P(no positive among 4 draws) = (3/4)^4 = 32%; P(no negative) = (1/4)^4.
    assert 40 < auc["undefined"] < 90 and auc["low"] == auc["high"] == 1.0
    assert out["metrics"]["accuracy"]["undefined"] == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resamples": 0}, "resamples must be"),
        ({"level": 1.0}, "level must be"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(QdupError, match=match):
        bootstrap_intervals([0, 1, 1], [0.1, 0.5, 0.9], 0.5, **kwargs)


def test_bad_inputs_are_refused():
    with pytest.raises(QdupError, match="labels must be 0 or 1"):
        bootstrap_intervals([0, 2], [0.1, 0.2], 0.5, resamples=10)
    with pytest.raises(QdupError, match="equal length"):
        paired_difference([0, 1], [0.1, 0.2], 0.5, [0.1], 0.5, "f1", resamples=10)
    with pytest.raises(QdupError, match="unknown metric"):
        paired_difference([0, 1], [0.1, 0.2], 0.5, [0.1, 0.2], 0.5, "recall", resamples=10)


def test_cluster_resamples_move_whole_groups():
    groups = np.array([5, 5, 9, 2, 9, 9, 7])  # 4 groups: {0, 1}, {2, 4, 5}, {3}, {6}
    counts = next(resample_counts(7, 50, seed=4, groups=groups))
    assert counts.shape == (50, 7)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 2] == counts[:, 4]).all() and (counts[:, 4] == counts[:, 5]).all()
    # Each resample draws 4 groups: the counts of one member of each group add up to 4.
    assert (counts[:, [0, 2, 3, 6]].sum(axis=1) == 4).all()
    assert not (counts[:, 0] == counts[:, 3]).all()


def test_singleton_groups_give_exactly_the_pair_bootstrap():
    y, s = scored(300, 12)
    pairs = bootstrap_intervals(y, s, 0.3, resamples=200, seed=5)
    singletons = bootstrap_intervals(y, s, 0.3, resamples=200, seed=5, groups=np.arange(300) * 3 + 1)
    assert singletons["metrics"] == pairs["metrics"]
    assert (pairs["method"], pairs["groups"]) == (bootstrap.METHOD, None)
    assert (singletons["method"], singletons["groups"]) == (bootstrap.CLUSTER_METHOD, 300)
    d_pairs = paired_difference(y, s, 0.3, s[::-1].copy(), 0.3, "f1", resamples=200, seed=5)
    d_single = paired_difference(y, s, 0.3, s[::-1].copy(), 0.3, "f1", resamples=200, seed=5, groups=np.arange(300))
    assert (d_single["low"], d_single["high"]) == (d_pairs["low"], d_pairs["high"])


def test_pairs_that_share_a_question_widen_the_interval():
    # 40 clusters of 10 pairs each; the pairs of a cluster share a question, so they share the label and
    # almost the same score: 400 pairs carry the information of about 40.
    rng = np.random.default_rng(3)
    y_c = rng.integers(0, 2, 40)
    s_c = rng.normal(y_c, 1.0)
    y = np.repeat(y_c, 10)
    s = np.repeat(s_c, 10) + rng.normal(0, 0.01, 400)
    groups = np.repeat(np.arange(40), 10)
    pairs = bootstrap_intervals(y, s, 0.5, resamples=500, seed=2)["metrics"]["roc_auc"]
    clusters = bootstrap_intervals(y, s, 0.5, resamples=500, seed=2, groups=groups)
    auc = clusters["metrics"]["roc_auc"]
    assert auc["estimate"] == pairs["estimate"] and clusters["groups"] == 40
    # About sqrt(10) wider: the pair bootstrap pretends to know the AUC ~3x better than it does.
    assert 2.3 < (auc["high"] - auc["low"]) / (pairs["high"] - pairs["low"]) < 4.5
    text = bootstrap.format_paired_difference(
        paired_difference(y, s, 0.5, s + rng.normal(0, 1, 400), 0.5, "roc_auc", resamples=100, seed=1, groups=groups)
    )
    assert "of 400 pairs in 40 question clusters" in text
