"""Top-k columns of each row of a score matrix, deterministic ties: what every search ranks with."""

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
