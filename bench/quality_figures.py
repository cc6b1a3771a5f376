"""The quality benchmark's figures (bench.quality): its protocol file, and pair and retrieval figures with cluster-bootstrap
intervals (the evaluation's own bootstrap, whole duplicate clusters resampled)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROTOCOL_FILE = Path(__file__).with_name("quality_protocol.json")
PROTOCOLS = ("sample", "larger")
PAIR_METRICS = ("roc_auc", "pr_auc")
RETRIEVAL_METRICS = ("mrr@10", "ndcg@10", "recall@10")
# The configuration every other is compared with: the project's defaults before this benchmark's changes.
REFERENCE_LABEL = "today"


def load_protocol() -> dict[str, Any]:
    return json.loads(PROTOCOL_FILE.read_text())


def cluster_weights(groups: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Per-item weights of each resample of the evaluation's cluster bootstrap (`resample_counts`): whole groups drawn
    with replacement, an item weighs its group's draws."""
    from qdup.evaluation.bootstrap import resample_counts

    for block in resample_counts(len(groups), resamples, seed, groups):
        yield from block


def _interval(values: list[float], level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(values, dtype=np.float64), [alpha, 1 - alpha])
    return float(low), float(high)


def pair_figures(y: np.ndarray, scores: dict[str, np.ndarray], groups: np.ndarray, boot: dict[str, Any], seed: int,
                 reference: str = "lexical") -> dict[str, Any]:
    """ROC-AUC and PR-AUC of every scorer with cluster-bootstrap intervals, and each scorer minus `reference` (paired):
    the evaluation's own `bootstrap_intervals` and `paired_difference`, on the same resamples for every scorer."""
    from qdup.evaluation.bootstrap import bootstrap_intervals, paired_difference

    draw = {"resamples": boot["resamples"], "seed": seed, "level": boot["level"], "groups": groups}
    # The threshold enters accuracy and F1 only, which these figures leave out.
    threshold = 0.5
    out: dict[str, Any] = {}
    for name, s in scores.items():
        iv = bootstrap_intervals(y, s, threshold, **draw)["metrics"]
        out[name] = {m: {k: iv[m][k] for k in ("estimate", "low", "high")} for m in PAIR_METRICS}
        if name != reference and reference in scores:
            d = paired_difference(y, s, threshold, scores[reference], threshold, "roc_auc", **draw)
            out[name][f"roc_auc_minus_{reference}"] = {"estimate": d["difference"], "low": d["low"], "high": d["high"]}
    return out


def pair_groups(df: pd.DataFrame) -> np.ndarray:
    """Cluster of each pair: connected components of its questions (pairs that share a question move together)."""
    from qdup.data.graph import pair_components

    return pair_components(df["question1"].to_numpy(dtype=object), df["question2"].to_numpy(dtype=object))


def retrieval_figures(per_query: dict[str, dict[str, np.ndarray]], groups: np.ndarray, boot: dict[str, Any], seed: int,
                      reference: str = "lexical") -> dict[str, Any]:
    """Mean of each per-query metric with a cluster-bootstrap interval, and each method minus `reference` (paired)."""
    weights = list(cluster_weights(groups, boot["resamples"], seed))
    out: dict[str, Any] = {}
    for method, metrics in per_query.items():
        out[method] = {}
        for m in RETRIEVAL_METRICS:
            v = metrics[m]
            low, high = _interval([float(w @ v / w.sum()) for w in weights], boot["level"])
            out[method][m] = {"estimate": float(v.mean()), "low": low, "high": high}
        if method != reference and reference in per_query:
            d = metrics["mrr@10"] - per_query[reference]["mrr@10"]
            low, high = _interval([float(w @ d / w.sum()) for w in weights], boot["level"])
            out[method][f"mrr@10_minus_{reference}"] = {"estimate": float(d.mean()), "low": low, "high": high}
    return out
