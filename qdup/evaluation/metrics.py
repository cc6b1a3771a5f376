"""Evaluation: similarities, a threshold chosen on calibration, test metrics, sweep and ROC curve.

Label convention: is_duplicate 1 = the two questions have the same intent (the positive class).
similarity = cosine of the two L2-normalised encodings, in [-1, 1]; a pair is predicted to be a
duplicate iff similarity >= threshold. Metrics are computed with numpy (exactly, ties included).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdup.errors import QdupError
from qdup.fileio import atomic_write_bytes

THRESHOLD_OBJECTIVE = "accuracy"


def _check(y_true: Any, sim: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(sim, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise QdupError(f"labels and similarities must be 1-D of equal length; got shapes {y.shape} and {s.shape}")
    if len(y) == 0:
        raise QdupError("no pairs to evaluate")
    if not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][:5]
        raise QdupError(f"labels must be 0 or 1 (1 = duplicate); found {bad.tolist()}")
    if not np.isfinite(s).all():
        i = int(np.flatnonzero(~np.isfinite(s))[0])
        raise QdupError(f"similarity {i} is not finite: {s[i]}")
    return y.astype(np.int64), s


def _counts_by_threshold(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct similarity t, in decreasing order: (t, tp, fp) when predicting s >= t."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # The last position of each run of equal values: ties move together across a threshold.
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[ends]
    fp = ends + 1 - tp
    return s_sorted[ends], tp, fp


def _both_classes(y: np.ndarray, what: str) -> tuple[int, int]:
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        raise QdupError(f"{what} needs both classes; the {len(y)} pairs have {pos} duplicates and {neg} non-duplicates")
    return pos, neg


def choose_threshold(y_true: Any, sim: Any) -> dict[str, float]:
    """The thresholds, among the observed similarities, that maximise accuracy and F1.

    Exact: every distinct observed value is tried (O(n log n) via one sort). Among equally
    good thresholds the highest is taken (fewest pairs predicted duplicate).
    """
    y, s = _check(y_true, sim)
    pos, neg = _both_classes(y, "choosing a threshold")
    thresholds, tp, fp = _counts_by_threshold(y, s)
    accuracy = (tp + (neg - fp)) / len(y)
    f1 = 2 * tp / (tp + fp + pos)
    i, j = int(np.argmax(accuracy)), int(np.argmax(f1))
    return {
        "accuracy_threshold": float(thresholds[i]),
        "accuracy": float(accuracy[i]),
        "f1_threshold": float(thresholds[j]),
        "f1": float(f1[j]),
    }


def _ratio(num: int, den: int) -> float | None:
    # None, not 0: a ratio with nothing to count (e.g. precision with no predicted duplicate) is undefined.
    return num / den if den else None


def _metrics_from_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, Any]:
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def binary_metrics(y_true: Any, sim: Any, threshold: float) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 and the confusion matrix of `similarity >= threshold`.

    A ratio whose denominator is zero is None (undefined), never a made-up 0.
    """
    y, s = _check(y_true, sim)
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & (y == 1)))
    fp = int(np.count_nonzero(pred & (y == 0)))
    tn = int(np.count_nonzero(~pred & (y == 0)))
    fn = int(np.count_nonzero(~pred & (y == 1)))
    return {
        "threshold": float(threshold),
        "n": len(y),
        **_metrics_from_counts(tp, fp, tn, fn),
        "confusion_matrix": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def ranking_metrics(y_true: Any, sim: Any) -> dict[str, float]:
    """Threshold-free quality: ROC AUC (ties count one half) and PR AUC as average precision.

    Average precision is Σ (R_k − R_{k−1}) · P_k over the distinct similarity values, ties
    forming one step (as scikit-learn's average_precision_score). Raises QdupError when the
    labels hold only one class, where neither is defined.
    """
    y, s = _check(y_true, sim)
    pos, neg = _both_classes(y, "ROC/PR AUC")
    # Mann-Whitney U with mid-ranks for ties == area under the ROC curve with diagonal tie segments.
    values, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = mid_rank[inverse]
    roc_auc = (ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg)
    _, tp, fp = _counts_by_threshold(y, s)
    precision = tp / (tp + fp)
    recall = tp / pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return {"roc_auc": float(roc_auc), "pr_auc": ap, "positives": pos, "negatives": neg}


def roc_points(y_true: Any, sim: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of the ROC curve from (0, 0), one point per distinct similarity."""
    y, s = _check(y_true, sim)
    pos, neg = _both_classes(y, "an ROC curve")
    thresholds, tp, fp = _counts_by_threshold(y, s)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos], np.r_[np.inf, thresholds]


def threshold_sweep(y_true: Any, sim: Any, step: float) -> list[dict[str, Any]]:
    """Accuracy, precision, recall and F1 at thresholds -1, -1+step, ..., up to 1 (the cosine range)."""
    if not 0 < step <= 2:
        raise QdupError(f"sweep step must be in (0, 2], got {step}")
    y, s = _check(y_true, sim)
    n_steps = int(np.floor(2.0 / step + 1e-9))
    thresholds = np.round(-1.0 + step * np.arange(n_steps + 1), 10)
    pos_sorted = np.sort(s[y == 1])
    neg_sorted = np.sort(s[y == 0])
    # Pairs at or above t are predicted duplicates: count them with a binary search per threshold.
    tp = len(pos_sorted) - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = len(neg_sorted) - np.searchsorted(neg_sorted, thresholds, side="left")
    fn = len(pos_sorted) - tp
    tn = len(neg_sorted) - fp
    return [
        {"threshold": float(t), **_metrics_from_counts(int(a), int(b), int(c), int(d))}
        for t, a, b, c, d in zip(thresholds, tp, fp, tn, fn, strict=True)
    ]


def sweep_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sweep as a markdown table; undefined values show as an em dash."""

    def cell(v: Any) -> str:
        return "—" if v is None else f"{v:.4f}"

    lines = ["| threshold | accuracy | precision | recall | F1 |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['threshold']:.2f} | {cell(r['accuracy'])} | {cell(r['precision'])} | {cell(r['recall'])} | {cell(r['f1'])} |"
        )
    return "\n".join(lines) + "\n"


def roc_curve_png(
    y_true: Any,
    sim: Any,
    path: Path,
    title: str,
    threshold: float | None = None,
    reference_threshold: float | None = None,
) -> Path:
    """Render the ROC curve to a PNG (written atomically), marking the chosen/reference thresholds."""
    # Imported here: a serving host (qdup[serve]) uses this module's metrics without matplotlib.
    # The Agg canvas directly, not pyplot: no display needed and no process-wide backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fpr, tpr, _ = roc_points(y_true, sim)
    auc = ranking_metrics(y_true, sim)["roc_auc"]
    fig = Figure(figsize=(5.5, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=1.8, label=f"ROC (AUC = {auc:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="chance")
    for t, label, marker in ((threshold, "chosen (calibration)", "o"), (reference_threshold, "reference", "s")):
        if t is None:
            continue
        m = binary_metrics(y_true, sim, t)["confusion_matrix"]
        x = m["fp"] / (m["fp"] + m["tn"])
        yv = m["tp"] / (m["tp"] + m["fn"])
        ax.plot([x], [yv], marker=marker, ms=8, ls="none", label=f"{label} threshold {t:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (recall of duplicates)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
