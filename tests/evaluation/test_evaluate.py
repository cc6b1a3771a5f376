"""Metrics against hand-computed values, exact threshold choice, and choosing on calibration only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import qdup.evaluation.pairs
from qdup.config import EvalConfig, ModelConfig
from qdup.errors import QdupError
from qdup.evaluation.metrics import (
    binary_metrics,
    choose_threshold,
    ranking_metrics,
    roc_curve_png,
    roc_points,
    sweep_markdown,
    threshold_sweep,
)
from qdup.evaluation.pairs import evaluate_model

# Ties: 0.9 (one duplicate, one not) and 0.5 (one of each).
Y = [1, 0, 1, 0, 1, 0]
S = [0.9, 0.9, 0.5, 0.5, 0.2, 0.8]


def test_roc_auc_with_ties_by_hand():
    # Pairs (duplicate, non-duplicate) ranked correctly, ties counting 1/2:
    # 0.9 vs {0.9, 0.5, 0.8} = 0.5 + 1 + 1; 0.5 vs {..} = 0 + 0.5 + 0; 0.2 vs {..} = 0 -> 3 of 9.
    m = ranking_metrics(Y, S)
    assert m["roc_auc"] == pytest.approx(3 / 9)
    assert (m["positives"], m["negatives"]) == (3, 3)


def test_average_precision_with_ties_by_hand():
    # Thresholds 0.9: P=1/2 R=1/3; 0.8: P=1/3 R=1/3; 0.5: P=2/5 R=2/3; 0.2: P=1/2 R=1.
    # AP = 1/3 * 1/2 + 0 * 1/3 + 1/3 * 2/5 + 1/3 * 1/2
    assert ranking_metrics(Y, S)["pr_auc"] == pytest.approx((0.5 + 0.4 + 0.5) / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_equals_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.uniform(-1, 1, 60), 1)  # coarse, so many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert ranking_metrics(y, s)["roc_auc"] == pytest.approx(pairwise)


def test_perfect_and_inverted_rankings():
    assert ranking_metrics([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == {"roc_auc": 1.0, "pr_auc": 1.0, "positives": 2, "negatives": 2}
    assert ranking_metrics([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4])["roc_auc"] == 0.0


def test_binary_metrics_by_hand():
    # Predicted duplicate at 0.5: [T, T, T, T, F, T] against Y.
    m = binary_metrics(Y, S, 0.5)
    assert m["confusion_matrix"] == {"tp": 2, "fp": 3, "tn": 0, "fn": 1}
    assert m["accuracy"] == pytest.approx(2 / 6)
    assert m["precision"] == pytest.approx(2 / 5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.5)
    assert m["n"] == 6 and m["threshold"] == 0.5


def test_undefined_ratios_are_none_not_zero():
    m = binary_metrics(Y, S, 0.95)  # nothing predicted duplicate
    assert m["precision"] is None
    assert m["recall"] == 0.0 and m["f1"] == 0.0
    assert binary_metrics([0, 0], [0.1, 0.2], 0.5)["recall"] is None


def test_choose_threshold_by_hand():
    # Thresholds 0.8: acc 3/4, F1 2/3; 0.4: acc 2/4, F1 1/2; 0.35: acc 3/4, F1 4/5; 0.1: acc 2/4, F1 2/3.
    c = choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert c["accuracy_threshold"] == 0.8  # tie with 0.35: the higher threshold wins
    assert c["accuracy"] == 0.75
    assert c["f1_threshold"] == 0.35
    assert c["f1"] == pytest.approx(0.8)


@pytest.mark.parametrize("seed", [0, 1])
def test_choose_threshold_is_exact(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.5, 0.4), 2)
    c = choose_threshold(y, s)
    best_acc = max(binary_metrics(y, s, t)["accuracy"] for t in np.unique(s))
    best_f1 = max(binary_metrics(y, s, t)["f1"] for t in np.unique(s))
    assert c["accuracy"] == pytest.approx(best_acc)
    assert binary_metrics(y, s, c["accuracy_threshold"])["accuracy"] == pytest.approx(best_acc)
    assert binary_metrics(y, s, c["f1_threshold"])["f1"] == pytest.approx(best_f1)


def test_threshold_sweep_matches_binary_metrics():
    rows = threshold_sweep(Y, S, 0.05)
    assert len(rows) == 41
    assert rows[0]["threshold"] == -1.0 and rows[-1]["threshold"] == 1.0
    assert rows[30]["threshold"] == 0.5
    for row in rows[::7] + [rows[30]]:
        m = binary_metrics(Y, S, row["threshold"])
        assert {k: row[k] for k in ("accuracy", "precision", "recall", "f1")} == {
            k: m[k] for k in ("accuracy", "precision", "recall", "f1")
        }
    md = sweep_markdown(rows)
    assert md.startswith("| threshold | accuracy | precision | recall | F1 |")
    assert "| 0.50 | 0.3333 | 0.4000 | 0.6667 | 0.5000 |" in md
    assert "| 1.00 | 0.5000 | — | 0.0000 | 0.0000 |" in md


def test_roc_points_and_png(tmp_path):
    fpr, tpr, _ = roc_points(Y, S)
    assert fpr.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    assert tpr.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1])
    path = roc_curve_png(Y, S, tmp_path / "roc.png", "tiny", threshold=0.5, reference_threshold=0.7)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.parametrize(
    "y, s, match",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
        ([0, 0], [0.1, 0.2], "both classes"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([0, 1], [0.1, float("nan")], "not finite"),
        ([0, 1, 1], [0.1, 0.2], "equal length"),
        ([], [], "no pairs"),
    ],
)
def test_ranking_and_threshold_refuse_bad_input(y, s, match):
    with pytest.raises(QdupError, match=match):
        ranking_metrics(y, s)
    with pytest.raises(QdupError, match=match):
        choose_threshold(y, s)


def _frame(pairs: list[tuple[float, int]]) -> pd.DataFrame:
    # question1 carries the similarity that the fake encoder below reports for the pair.
    return pd.DataFrame(
        {
            "question1": [f"{s}" for s, _ in pairs],
            "question2": ["x"] * len(pairs),
            "is_duplicate": np.array([y for _, y in pairs], dtype=np.int8),
        }
    )


def test_threshold_is_chosen_on_calibration_not_test(tmp_path, monkeypatch):
    def fake_similarities(encoder, vectorizer, q1, q2, max_length, batch_size=1024):
        return np.array([float(q) for q in q1], dtype=np.float32)

    monkeypatch.setattr(qdup.evaluation.pairs, "similarities", fake_similarities)
    # Calibration separates perfectly at 0.3; test at 0.8 (where 0.3 gets only 4 of 6 right).
    calibration = _frame([(0.1, 0), (0.2, 0), (0.3, 1), (0.4, 1), (0.9, 1), (0.25, 0)])
    test = _frame([(0.3, 0), (0.5, 0), (0.8, 1), (0.9, 1), (0.1, 0), (0.95, 1)])
    cfg = EvalConfig(reference_threshold=0.7, sweep_step=0.1)
    m = evaluate_model(None, None, calibration, test, ModelConfig(), cfg, tmp_path)
    assert m["threshold"]["value"] == pytest.approx(0.3)
    assert m["threshold"]["chosen_on"] == "calibration"
    assert m["calibration"]["at_threshold"]["accuracy"] == 1.0
    assert m["test"]["at_threshold"]["threshold"] == pytest.approx(0.3)
    assert m["test"]["at_threshold"]["confusion_matrix"] == {"tp": 3, "fp": 2, "tn": 1, "fn": 0}
    assert m["test"]["at_reference_threshold"]["accuracy"] == 1.0
    assert choose_threshold(test["is_duplicate"], [0.3, 0.5, 0.8, 0.9, 0.1, 0.95])["accuracy_threshold"] == pytest.approx(0.8)
    assert m["test"]["ranking"]["roc_auc"] == 1.0
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["threshold"]["value"] == pytest.approx(0.3)
    sweep = json.loads((tmp_path / "threshold_sweep.json").read_text())
    assert sweep["split"] == "test" and len(sweep["rows"]) == 21
    assert (tmp_path / "roc_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_model_names_a_missing_column(tmp_path):
    bad = pd.DataFrame({"question1": ["a"], "question2": ["b"]})
    with pytest.raises(QdupError, match="calibration split has no 'is_duplicate'"):
        evaluate_model(None, None, bad, bad, ModelConfig(), EvalConfig(), tmp_path)
