"""Evaluating an encoder on labelled pairs: threshold on calibration, metrics, sweep and ROC curve on test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from qdup.config import LABEL_CONVENTION, EvalConfig, ModelConfig
from qdup.errors import QdupError
from qdup.evaluation.metrics import (
    THRESHOLD_OBJECTIVE,
    binary_metrics,
    choose_threshold,
    ranking_metrics,
    roc_curve_png,
    threshold_sweep,
)
from qdup.evaluation.scores import CALIBRATION_SCORES_FILE, TEST_SCORES_FILE, write_test_scores
from qdup.fileio import atomic_write_json
from qdup.model.encode import similarities


def _labelled(df: pd.DataFrame, name: str) -> tuple[list[str], list[str], np.ndarray]:
    for col in ("question1", "question2", "is_duplicate"):
        if col not in df.columns:
            raise QdupError(f"the {name} split has no {col!r} column (columns: {list(df.columns)})")
    return df["question1"].tolist(), df["question2"].tolist(), df["is_duplicate"].to_numpy(dtype=np.int64)


def _qids(df: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    if {"qid1", "qid2"} <= set(df.columns):
        return df["qid1"].to_numpy(), df["qid2"].to_numpy()
    return None, None


def evaluate_model(
    encoder: keras.Model,
    vectorizer: keras.layers.TextVectorization,
    calibration_df: pd.DataFrame,
    test_df: pd.DataFrame,
    model_cfg: ModelConfig,
    eval_cfg: EvalConfig,
    out_dir: Path,
) -> dict[str, Any]:
    """Choose the threshold on CALIBRATION (max accuracy), then measure on TEST; write the reports.

    The test split is never used to choose anything. Writes out_dir/metrics.json (returned),
    out_dir/threshold_sweep.json (test, every eval_cfg.sweep_step) and out_dir/roc_curve.png (test).
    """
    out_dir = Path(out_dir)
    c1, c2, y_cal = _labelled(calibration_df, "calibration")
    t1, t2, y_test = _labelled(test_df, "test")
    sim_cal = similarities(encoder, vectorizer, c1, c2, model_cfg.max_length)
    sim_test = similarities(encoder, vectorizer, t1, t2, model_cfg.max_length)

    choice = choose_threshold(y_cal, sim_cal)
    threshold = choice["accuracy_threshold"]
    reference = eval_cfg.reference_threshold
    sweep = threshold_sweep(y_test, sim_test, eval_cfg.sweep_step)
    metrics: dict[str, Any] = {
        "label_convention": LABEL_CONVENTION,
        "threshold": {
            "value": threshold,
            "objective": THRESHOLD_OBJECTIVE,
            "chosen_on": "calibration",
            "calibration_accuracy": choice["accuracy"],
            "f1_threshold": choice["f1_threshold"],
            "calibration_f1": choice["f1"],
            "reference": reference,
        },
        "calibration": {
            "rows": len(y_cal),
            "duplicates": int(y_cal.sum()),
            "ranking": ranking_metrics(y_cal, sim_cal),
            "at_threshold": binary_metrics(y_cal, sim_cal, threshold),
        },
        "test": {
            "rows": len(y_test),
            "duplicates": int(y_test.sum()),
            "ranking": ranking_metrics(y_test, sim_test),
            "at_threshold": binary_metrics(y_test, sim_test, threshold),
            "at_reference_threshold": binary_metrics(y_test, sim_test, reference),
            "at_f1_threshold": binary_metrics(y_test, sim_test, choice["f1_threshold"]),
            "mean_similarity": {
                "duplicates": float(sim_test[y_test == 1].mean()),
                "non_duplicates": float(sim_test[y_test == 0].mean()),
            },
        },
        "files": {
            "metrics": "metrics.json", "threshold_sweep": "threshold_sweep.json", "roc_curve": "roc_curve.png",
            "test_scores": TEST_SCORES_FILE, "calibration_scores": CALIBRATION_SCORES_FILE,
        },
    }
    roc_curve_png(
        y_test, sim_test, out_dir / "roc_curve.png", "ROC on the test split", threshold=threshold, reference_threshold=reference
    )
    atomic_write_json(out_dir / "threshold_sweep.json", {"split": "test", "step": eval_cfg.sweep_step, "rows": sweep})
    write_test_scores(out_dir / TEST_SCORES_FILE, sim_test, y_test, *_qids(test_df))
    write_test_scores(out_dir / CALIBRATION_SCORES_FILE, sim_cal, y_cal, *_qids(calibration_df))
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics

