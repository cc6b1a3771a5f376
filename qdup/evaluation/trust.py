"""The evaluation's trust blocks in one call: bootstrap intervals for the model, the lexical baseline with its own, and the lift.

`trust_blocks` returns keys to merge into metrics.json beside the model's own figures:
- "intervals": `bootstrap_intervals` of the model on test at its calibrated threshold;
- "baseline": the lexical baseline block (`baseline_metrics`) with its own "intervals" on the SAME resamples;
- "lift_over_baseline": `paired_difference` model - baseline on the gate metric, same resamples.
Every interval is a cluster bootstrap: the groups are the connected components of the test pairs'
question graph (`pair_groups`), so pairs that share a question are resampled together.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qdup.config import EvalConfig
from qdup.data.splits import question_components
from qdup.errors import QdupError
from qdup.evaluation.baseline import baseline_metrics, lexical_scores
from qdup.evaluation.bootstrap import bootstrap_intervals, paired_difference


def pair_groups(df: pd.DataFrame, name: str = "test") -> np.ndarray:
    """The bootstrap groups of a labelled split: each pair's connected component in its question graph (qid1, qid2)."""
    missing = [c for c in ("qid1", "qid2") if c not in df.columns]
    if missing:
        raise QdupError(f"the {name} split has no {missing} column(s): the cluster bootstrap groups pairs by question id")
    return question_components(df["qid1"].to_numpy(), df["qid2"].to_numpy())


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
        groups = pair_groups(test_df)
        draw = {"resamples": resamples, "seed": seed, "level": level, "groups": groups}
        out["intervals"] = bootstrap_intervals(y, sim, threshold, **draw)
        baseline["intervals"] = bootstrap_intervals(y, scores.test, base_thr, **draw)
        out["lift_over_baseline"] = paired_difference(y, sim, threshold, scores.test, base_thr, gate_metric, **draw)
    return out
