"""Top-k columns of each row of a score matrix, deterministic ties, and the ranking steps built on it: what every search
ranks with."""

from __future__ import annotations

import numpy as np


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each row of `scores`, best first, ties by lower column (deterministic)."""
    n, m = scores.shape
    k = min(k, m)
    if k == 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    # argpartition is O(m) per row; sorting only the k survivors keeps the block cost linear.
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < m else np.broadcast_to(np.arange(m), (n, m)).copy()
    top = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -top), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(top, order, axis=1)


# Rows per block of the (rows, candidates, ranked) comparison of `rank_of`.
RANK_BLOCK = 512


def rank_of(candidates: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """1-based rank of each candidate in its row's ranked list, 0 where absent."""
    out = np.zeros(candidates.shape, dtype=np.int64)
    for a in range(0, len(candidates), RANK_BLOCK):
        c, r = candidates[a : a + RANK_BLOCK], ranked[a : a + RANK_BLOCK]
        # One (rows, candidates, ranked) comparison per block: cheaper than a dict per row.
        same = (c[:, :, None] == r[:, None, :]) & (c[:, :, None] >= 0)
        out[a : a + RANK_BLOCK] = np.where(same.any(axis=2), same.argmax(axis=2) + 1, 0)
    return out


def rank_by(candidates: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Candidates reordered by descending score (ties by position), first k, -1 where none."""
    return rank_with_scores(candidates, scores, k)[0]


def rank_with_scores(candidates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`rank_by` and the score of each ranked candidate (-inf where none): the score that ordered them."""
    idx, top = top_k_rows(np.where(candidates >= 0, scores, -np.inf), min(k, candidates.shape[1]))
    ranked = np.take_along_axis(candidates, idx, axis=1)
    gone = ~np.isfinite(top)
    ranked[gone] = -1
    return ranked, np.where(gone, -np.inf, top)
