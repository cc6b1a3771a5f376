"""trust_blocks: the model's intervals, the baseline with its own on the same resamples, and the paired lift."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qdup.config import EvalConfig
from qdup.errors import QdupError
from qdup.evaluation.bootstrap import CLUSTER_METHOD, point_metrics
from qdup.evaluation.trust import pair_groups, trust_blocks
from tests.evaluation.test_baseline import CAL, TEST, TRAIN


def test_blocks_for_metrics_json():
    sim = np.array([0.9, 0.4, 0.5, 0.1, 0.2])  # one duplicate (0.4) ranked below a non-duplicate (0.5)
    out = trust_blocks(TRAIN, CAL, TEST, sim, 0.45, EvalConfig(bootstrap_resamples=300), seed=7, gate_metric="roc_auc")
    assert set(out) == {"intervals", "baseline", "lift_over_baseline"}
    assert out["intervals"]["seed"] == out["baseline"]["intervals"]["seed"] == 7
    # Rows 0 and 4 share "How do I cook rice?": 4 question clusters, resampled whole everywhere.
    for block in (out["intervals"], out["baseline"]["intervals"], out["lift_over_baseline"]):
        assert block["method"] == CLUSTER_METHOD and block["groups"] == 4 and block["n"] == 5
    assert out["intervals"]["metrics"]["roc_auc"]["estimate"] == pytest.approx(5 / 6)
    base_auc = out["baseline"]["test"]["ranking"]["roc_auc"]
    assert out["baseline"]["intervals"]["metrics"]["roc_auc"]["estimate"] == base_auc == 1.0
    lift = out["lift_over_baseline"]
    assert lift["metric"] == "roc_auc" and lift["difference"] == pytest.approx(5 / 6 - 1.0)
    assert lift["a"] == point_metrics(TEST["is_duplicate"], sim, 0.45)["roc_auc"]
    assert json.loads(json.dumps(out)) == out


def test_no_resamples_no_intervals():
    out = trust_blocks(TRAIN, CAL, TEST, np.zeros(5), 0.0, EvalConfig(bootstrap_resamples=0, baseline_ngram_range=(3, 3)), seed=0)
    assert set(out) == {"baseline"} and out["baseline"]["params"]["ngram_range"] == [3, 3]


def test_groups_are_the_question_clusters_and_need_question_ids():
    assert pair_groups(TEST).tolist() == [0, 1, 2, 3, 0]
    with pytest.raises(QdupError, match="qid1"):
        trust_blocks(TRAIN, CAL, TEST.drop(columns=["qid1"]), np.zeros(5), 0.0, EvalConfig(bootstrap_resamples=10), seed=0)
