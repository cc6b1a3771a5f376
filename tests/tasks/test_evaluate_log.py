"""The evaluate task's log names the split the gate decides on."""

from __future__ import annotations


def test_the_calibration_line_shows_model_and_baseline_on_the_gate_split():
    from tasks.evaluate import calibration_line

    metrics = {"calibration": {"ranking": {"roc_auc": 0.76261}},
               "baseline": {"calibration": {"ranking": {"roc_auc": 0.74693}}}}
    assert calibration_line(metrics) == (
        "calibration (the gate's split): roc_auc=0.7626, lexical baseline roc_auc=0.7469; test is reported only"
    )
    assert calibration_line({"calibration": metrics["calibration"]}) == (
        "calibration (the gate's split): roc_auc=0.7626; test is reported only"
    )
