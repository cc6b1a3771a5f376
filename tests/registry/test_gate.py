"""Gate helpers: the lift over the lexical baseline (configurable, off by default) and the paired difference's text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qdup.config import RetrainConfig
from qdup.evaluation.bootstrap import format_paired_difference, paired_difference
from qdup.registry.gate import check_baseline, lift_over_baseline, with_baseline


def metrics(model_auc: float = 0.80, base_auc: float = 0.78, base: bool = True) -> dict:
    # The gate reads calibration; test holds other figures (a lift of -0.2) that must not count.
    m = {"calibration": {"ranking": {"roc_auc": model_auc, "pr_auc": 0.7}, "at_threshold": {"accuracy": 0.75, "f1": 0.6}},
         "test": {"ranking": {"roc_auc": 0.6, "pr_auc": 0.5}, "at_threshold": {"accuracy": 0.6, "f1": 0.5}}}
    if base:
        m["baseline"] = {"name": "char n-gram TF-IDF cosine",
                         "calibration": {"ranking": {"roc_auc": base_auc, "pr_auc": 0.65},
                                         "at_threshold": {"accuracy": 0.7, "f1": None}},
                         "test": {"ranking": {"roc_auc": 0.8, "pr_auc": 0.7}, "at_threshold": {"accuracy": 0.8, "f1": 0.7}}}
    return m


def test_off_by_default_but_the_lift_is_reported():
    assert RetrainConfig().publish.min_lift_over_baseline is None
    c = check_baseline(metrics(), "roc_auc", None)
    assert c.ok and c.lift == pytest.approx(0.02) and "no minimum lift required" in c.reason
    assert "lexical baseline (char n-gram TF-IDF cosine) roc_auc=0.7800 on the calibration split: lift +0.0200" in c.reason
    assert c.split == "calibration" and lift_over_baseline(metrics(), "roc_auc")["split"] == "calibration"


def test_refuses_when_the_lift_is_below_the_margin_and_names_it():
    c = check_baseline(metrics(0.80, 0.79), "roc_auc", 0.02)
    assert not c.ok and c.lift == pytest.approx(0.01) and c.min_lift == 0.02
    assert c.reason == (
        "challenger roc_auc=0.8000 vs lexical baseline (char n-gram TF-IDF cosine) roc_auc=0.7900 on the calibration split: "
        "lift +0.0100 "
        "is less than publish.min_lift_over_baseline=0.02: the model does not beat the lexical baseline by enough"
    )
    assert check_baseline(metrics(0.80, 0.78), "roc_auc", 0.02).ok  # exactly the margin passes
    # Threshold metrics compare each side at its own calibrated threshold.
    assert check_baseline(metrics(), "accuracy", 0.06).ok is False and check_baseline(metrics(), "accuracy", 0.05).ok


def test_a_required_check_without_a_baseline_refuses():
    c = check_baseline(metrics(base=False), "roc_auc", 0.0)
    assert not c.ok and "requires a lexical baseline" in c.reason
    assert check_baseline(metrics(base=False), "roc_auc", None).ok
    assert lift_over_baseline(metrics(base=False), "roc_auc") is None


def test_undefined_baseline_metric_is_an_error():
    with pytest.raises(ValueError, match="undefined"):
        check_baseline(metrics(), "f1", 0.0)


def test_a_refused_baseline_check_overrides_a_promoting_record():
    record = {"promote": True, "reason": "at least as good as production v-prod within tolerance on every gate metric"}
    refused = with_baseline(record, check_baseline(metrics(0.80, 0.79), "roc_auc", 0.02))
    assert not refused["promote"] and refused["reason"].startswith("refused: challenger roc_auc=0.8000 vs lexical baseline")
    assert refused["reason"].endswith(record["reason"]) and refused["baseline"]["ok"] is False
    kept = with_baseline(record, check_baseline(metrics(), "roc_auc", None))
    assert kept["promote"] and kept["reason"] == record["reason"] and kept["baseline"]["split"] == "calibration"


def test_paired_difference_text_and_gate_record():
    d = {"metric": "roc_auc", "difference": 0.0123, "low": 0.004, "high": 0.021, "level": 0.95, "resamples": 1000, "n": 10240}
    assert format_paired_difference(d) == (
        "challenger - production roc_auc: +0.0123 (95% CI +0.0040 to +0.0210; 1,000 paired resamples of 10,240 pairs; "
        "challenger better)"
    )
    assert format_paired_difference({**d, "low": -0.001}).endswith("no clear difference)")
    assert format_paired_difference({**d, "difference": -0.02, "low": -0.03, "high": -0.01}).endswith("challenger worse)")
    assert "undefined" in format_paired_difference({**d, "difference": None})

    y = np.array([0, 1] * 50)
    s = np.linspace(0, 1, 100)
    same = paired_difference(y, s, 0.5, s, 0.5, "roc_auc", resamples=50, seed=1)
    assert format_paired_difference(same).startswith("challenger - production roc_auc: +0.0000 (95% CI +0.0000 to +0.0000")
    assert json.loads(json.dumps(same)) == same
