"""Bootstrap intervals for test metrics, and paired differences of two scorers on the same resamples.

A resample draws n test pairs with replacement, or, given `groups` (a cluster bootstrap), as many
whole groups as there are with replacement, every pair of a drawn group coming along: pairs that
share a question are not independent observations, and resampling them one by one understates
the uncertainty. A resample is represented by how often each pair was drawn (a row of counts), so
every metric of every resample is a weighted metric of the original pairs and all resamples are
evaluated together with array operations. The threshold is held fixed (it was chosen on
calibration): the intervals describe the uncertainty of measuring on a finite test split, not of
choosing the threshold. Intervals are percentile intervals.

The resamples depend only on (n, resamples, seed, groups): two scorers measured with the same seed
on the same rows see exactly the same resamples, which is what makes a paired difference paired.
With every pair its own group the cluster bootstrap draws exactly the pair bootstrap's resamples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from qdup.errors import QdupError

METRICS = ("roc_auc", "pr_auc", "accuracy", "f1")
METHOD = "percentile bootstrap over test pairs (threshold fixed)"
CLUSTER_METHOD = (
    "cluster bootstrap over test pairs: whole groups (connected components of the question graph, pairs "
    "sharing a question) drawn with replacement; percentile intervals, threshold fixed"
)
# Resamples are evaluated in blocks so that memory stays near BLOCK_CELLS float64 per array
# whatever the test size (10,240 pairs x 1,000 resamples would be 80 MB an array at once).
BLOCK_CELLS = 4_000_000
# Domain-separation constant mixed into the seed: the resamples differ from any other stream
# drawn from the run's seed.
_STREAM = 0xB0075
_ABS_TOL = 1e-12


def _check(y: Any, scores: Any, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    yy = np.asarray(y)
    s = np.asarray(scores, dtype=np.float64)
    if yy.ndim != 1 or s.shape != yy.shape:
        raise QdupError(f"labels and {what} must be 1-D of equal length; got shapes {yy.shape} and {s.shape}")
    if len(yy) < 2:
        raise QdupError(f"a bootstrap needs at least 2 pairs, got {len(yy)}")
    if not np.isin(yy, (0, 1)).all():
        raise QdupError(f"labels must be 0 or 1 (1 = duplicate); found {sorted(set(yy[~np.isin(yy, (0, 1))].tolist()))[:5]}")
    if not np.isfinite(s).all():
        i = int(np.flatnonzero(~np.isfinite(s))[0])
        raise QdupError(f"{what}[{i}] is not finite: {s[i]}")
    return yy.astype(np.int64), s


def _check_args(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise QdupError(f"bootstrap resamples must be a whole number >= 1, got {resamples!r}")
    if not 0 < level < 1:
        raise QdupError(f"bootstrap level must be in (0, 1), got {level}")


def group_codes(groups: Any, n: int) -> np.ndarray:
    """Group labels as codes 0..g-1 in order of first appearance (so the codes of n singletons are 0..n-1)."""
    g = np.asarray(groups)
    if g.shape != (n,):
        raise QdupError(f"groups must give one label per pair: {n} pairs, groups of shape {g.shape}")
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def resample_counts(n: int, resamples: int, seed: int, groups: Any = None) -> Iterator[np.ndarray]:
    """Blocks of resamples as count matrices (block, n) float64: entry [r, i] = times pair i was drawn.

    Without `groups` the draws are one `numpy.random.default_rng([seed, _STREAM]).integers(0, n,
    (resamples, n))` stream; with `groups` (one label per pair) g = the number of groups replaces n
    and a pair counts as often as its group was drawn. The stream is generated block by block, so
    the result does not depend on the block size.
    """
    codes = None if groups is None else group_codes(groups, n)
    g = n if codes is None else int(codes.max(initial=-1)) + 1
    rng = np.random.default_rng([int(seed), _STREAM])
    block = max(1, BLOCK_CELLS // max(n, 1))
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        idx = rng.integers(0, g, size=(b, g))
        flat = (np.arange(b, dtype=np.int64)[:, None] * g + idx).ravel()
        counts = np.bincount(flat, minlength=b * g).reshape(b, g)
        yield (counts if codes is None else counts[:, codes]).astype(np.float64)


def _describe(n: int, groups: Any) -> dict[str, Any]:
    """The method and the number of resampled units, for the JSON."""
    if groups is None:
        return {"method": METHOD, "groups": None}
    return {"method": CLUSTER_METHOD, "groups": int(group_codes(groups, n).max(initial=-1)) + 1}


def _weighted_metrics(y: np.ndarray, s: np.ndarray, threshold: float, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of weights w (r, n): ROC AUC (ties one half), AP, accuracy, F1.

    Same definitions as `qdup.evaluation.metrics` (ranking_metrics, binary_metrics), generalised to
    integer weights: a pair drawn k times counts k times. Undefined values are NaN.
    """
    # Groups of equal scores, in decreasing order (ties move together across a threshold).
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    pos_sorted = (y[order] == 1).astype(np.float64)
    w_sorted = w[:, order]
    # Weight of positives / negatives per group: (r, g).
    pos_w = np.add.reduceat(w_sorted * pos_sorted, starts, axis=1)
    neg_w = np.add.reduceat(w_sorted * (1.0 - pos_sorted), starts, axis=1)
    pos = y == 1
    P = pos_w.sum(axis=1)
    N = neg_w.sum(axis=1)
    tp = np.cumsum(pos_w, axis=1)
    fp = np.cumsum(neg_w, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # ROC AUC = P(score_pos > score_neg) + 1/2 P(tie): negatives strictly below a group are
        # those of later groups (N - fp), ties are the group's own negatives.
        auc = (pos_w * (N[:, None] - fp + 0.5 * neg_w)).sum(axis=1) / (P * N)
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
        ap = (pos_w * precision).sum(axis=1) / P
        pred = s >= threshold
        tp_t = w[:, pred & pos].sum(axis=1)
        fp_t = w[:, pred & ~pos].sum(axis=1)
        fn_t = P - tp_t
        tn_t = N - fp_t
        accuracy = (tp_t + tn_t) / (P + N)
        f1 = np.where(2 * tp_t + fp_t + fn_t > 0, 2 * tp_t / (2 * tp_t + fp_t + fn_t), np.nan)
    both = (P > 0) & (N > 0)
    return {
        "roc_auc": np.where(both, auc, np.nan),
        "pr_auc": np.where(both, ap, np.nan),
        "accuracy": accuracy,
        "f1": f1,
    }


def point_metrics(y: Any, scores: Any, threshold: float) -> dict[str, float | None]:
    """The four metrics on all pairs (weights 1), by the same code as the resamples."""
    yy, s = _check(y, scores)
    m = _weighted_metrics(yy, s, threshold, np.ones((1, len(yy))))
    return {k: (None if np.isnan(v[0]) else float(v[0])) for k, v in m.items()}


def _all_resamples(
    y: np.ndarray, s: np.ndarray, threshold: float, resamples: int, seed: int, groups: Any
) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in METRICS}
    for w in resample_counts(len(y), resamples, seed, groups):
        for k, v in _weighted_metrics(y, s, threshold, w).items():
            parts[k].append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _interval(values: np.ndarray, level: float) -> tuple[float | None, float | None, int]:
    ok = values[~np.isnan(values)]
    if len(ok) == 0:
        return None, None, len(values)
    alpha = (1 - level) / 2
    low, high = np.quantile(ok, [alpha, 1 - alpha])
    return float(low), float(high), int(len(values) - len(ok))


def bootstrap_intervals(
    y: Any,
    scores: Any,
    threshold: float,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: Any = None,
) -> dict[str, Any]:
    """Point estimate and percentile interval of ROC AUC, PR AUC, accuracy and F1 (at `threshold`).

    `groups`: one label per pair; whole groups are resampled (a cluster bootstrap), None: single pairs.
    JSON-able: {method, groups, level, resamples, seed, n, metrics: {name: {estimate, low, high,
    undefined}}}; `groups` is the number of groups (None for the pair bootstrap); `undefined` counts
    resamples where the metric does not exist (e.g. one class only), left out of the interval.
    """
    _check_args(resamples, level)
    yy, s = _check(y, scores)
    described = _describe(len(yy), groups)
    point = point_metrics(yy, s, threshold)
    draws = _all_resamples(yy, s, threshold, resamples, seed, groups)
    metrics: dict[str, Any] = {}
    for k in METRICS:
        low, high, undefined = _interval(draws[k], level)
        metrics[k] = {"estimate": point[k], "low": low, "high": high, "undefined": undefined}
    return {
        **described,
        "level": level,
        "resamples": int(resamples),
        "seed": int(seed),
        "n": len(yy),
        "threshold": float(threshold),
        "metrics": metrics,
    }


def paired_difference(
    y: Any,
    scores_a: Any,
    thr_a: float,
    scores_b: Any,
    thr_b: float,
    metric: str,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: Any = None,
) -> dict[str, Any]:
    """metric(a) - metric(b) on the same pairs, with a percentile interval over the SAME resamples.

    `groups` as in `bootstrap_intervals`: whole groups of pairs resampled together.
    `share_not_better` is the share of resamples where a does not beat b (difference <= 0): a
    one-sided bootstrap p-value for "a is better".
    """
    if metric not in METRICS:
        raise QdupError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    _check_args(resamples, level)
    yy, sa = _check(y, scores_a, "scores_a")
    _, sb = _check(yy, scores_b, "scores_b")
    described = _describe(len(yy), groups)
    pa, pb = point_metrics(yy, sa, thr_a)[metric], point_metrics(yy, sb, thr_b)[metric]
    diffs = []
    for w in resample_counts(len(yy), resamples, seed, groups):
        diffs.append(_weighted_metrics(yy, sa, thr_a, w)[metric] - _weighted_metrics(yy, sb, thr_b, w)[metric])
    d = np.concatenate(diffs)
    low, high, undefined = _interval(d, level)
    ok = d[~np.isnan(d)]
    return {
        "metric": metric,
        "difference": None if pa is None or pb is None else pa - pb,
        "a": pa,
        "b": pb,
        "low": low,
        "high": high,
        "level": level,
        "resamples": int(resamples),
        "seed": int(seed),
        "n": len(yy),
        "undefined": undefined,
        "share_not_better": float(np.mean(ok <= _ABS_TOL)) if len(ok) else None,
        **described,
    }


def paired_mean_difference(
    a: Any, b: Any, metric: str, resamples: int = 1000, seed: int = 0, level: float = 0.95, groups: Any = None,
) -> dict[str, Any]:
    """mean(a) - mean(b) of two per-unit measurements of the same units (e.g. each query's MRR@10 under two search
    methods), with a percentile interval over the SAME (cluster) resamples; the shape of `paired_difference`'s result."""
    _check_args(resamples, level)
    aa, bb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if aa.shape != bb.shape or aa.ndim != 1 or not len(aa):
        raise QdupError(f"paired measurements must be two equal-length, non-empty vectors; got {aa.shape} and {bb.shape}")
    d = aa - bb
    diffs = [(w @ d) / w.sum(axis=1) for w in resample_counts(len(d), resamples, seed, groups)]
    values = np.concatenate(diffs)
    low, high, undefined = _interval(values, level)
    return {
        "metric": metric, "difference": float(d.mean()), "a": float(aa.mean()), "b": float(bb.mean()), "low": low,
        "high": high, "level": level, "resamples": int(resamples), "seed": int(seed), "n": len(d), "undefined": undefined,
        "share_not_better": float(np.mean(values <= _ABS_TOL)), **_describe(len(d), groups),
    }


def format_paired_difference(diff: dict[str, Any], a: str = "challenger", b: str = "production") -> str:
    """One line: 'challenger - production roc_auc: +0.0123 (95% CI +0.0040 to +0.0210; 1,000 paired resamples of 10,240 pairs)'."""
    metric = diff["metric"]
    level = f"{round(100 * diff['level'], 2):g}%"
    where = f"{diff['resamples']:,} paired resamples of {diff['n']:,} pairs"
    if diff.get("groups") is not None:
        where += f" in {diff['groups']:,} question clusters"
    if diff.get("difference") is None:
        return f"{a} - {b} {metric}: undefined on these pairs ({where})"
    if diff.get("low") is None or diff.get("high") is None:
        return f"{a} - {b} {metric}: {diff['difference']:+.4f} (no {level} interval: undefined on every resample; {where})"
    if diff["low"] > 0:
        verdict = f"{a} better"
    elif diff["high"] < 0:
        verdict = f"{a} worse"
    else:
        verdict = "no clear difference"
    return (
        f"{a} - {b} {metric}: {diff['difference']:+.4f} ({level} CI {diff['low']:+.4f} to {diff['high']:+.4f}; "
        f"{where}; {verdict})"
    )
