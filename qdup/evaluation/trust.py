"""The evaluation's trust blocks in one call: bootstrap intervals for the model, the lexical baseline with its own, and the lift.

`trust_blocks` returns keys to merge into metrics.json beside the model's own figures:
- "intervals": `bootstrap_intervals` of the model on test at its calibrated threshold;
- "baseline": the lexical baseline block (`baseline_metrics`) with its own "intervals" on the SAME resamples;
- "lift_over_baseline": `paired_difference` model - baseline on the gate metric, same resamples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qdup.config import EvalConfig
from qdup.evaluation.baseline import baseline_metrics, lexical_scores
from qdup.evaluation.bootstrap import bootstrap_intervals, paired_difference


def trust_blocks(
    train_df: pd.DataFrame,
    calibration_df: pd.DataFrame,
    test_df: pd.DataFrame,
    test_similarities: Any,
    threshold: float,
    eval_cfg: EvalConfig,
    seed: int,
    gate_metric: str = "roc_auc",
) -> dict[str, Any]:
    """Everything the issue adds to an evaluation, JSON-able; intervals only when eval_cfg.bootstrap_resamples > 0."""
    scores = lexical_scores(
        train_df, calibration_df, test_df, ngram_range=tuple(eval_cfg.baseline_ngram_range), min_df=eval_cfg.baseline_min_df
    )
    baseline = baseline_metrics(scores, calibration_df, test_df)
    out: dict[str, Any] = {"baseline": baseline}
    resamples = eval_cfg.bootstrap_resamples
    if resamples > 0:
        y = test_df["is_duplicate"].to_numpy(dtype=np.int64)
        sim = np.asarray(test_similarities, dtype=np.float64)
        level = eval_cfg.bootstrap_level
        base_thr = baseline["threshold"]["value"]
        out["intervals"] = bootstrap_intervals(y, sim, threshold, resamples=resamples, seed=seed, level=level)
        baseline["intervals"] = bootstrap_intervals(y, scores.test, base_thr, resamples=resamples, seed=seed, level=level)
        out["lift_over_baseline"] = paired_difference(
            y, sim, threshold, scores.test, base_thr, gate_metric, resamples=resamples, seed=seed, level=level
        )
    return out
