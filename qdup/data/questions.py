"""Question identity and pair-overlap profiles: the hash that says whether a question was seen (drift, the gate), and
the word-overlap profile of labelled pairs (what the reranker was fitted on, against new data)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from qdup.text import standardize

# Word overlap (Jaccard of the two questions' standardised word sets) is profiled in these bins.
OVERLAP_BINS = tuple(round(i / 10, 1) for i in range(11))
# A non-duplicate whose overlap is below this is an easy negative: nothing lexical makes it look like a duplicate.
EASY_NEGATIVE_OVERLAP = 0.1


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def question_hashes(texts: Any) -> np.ndarray:
    """Sorted distinct hashes (blake2b, 8 bytes, of the standardised question's tokens joined by one space)."""
    return np.unique(np.fromiter((hash64(" ".join(standardize(str(t))).encode("utf-8")) for t in texts), dtype=np.uint64))


def word_overlap(q1: Any, q2: Any) -> np.ndarray:
    """Jaccard overlap of each pair's standardised word sets (0 for two empty questions)."""
    out = np.zeros(len(q1), dtype=np.float64)
    for i, (a, b) in enumerate(zip(q1, q2, strict=True)):
        sa, sb = set(standardize(str(a))), set(standardize(str(b)))
        union = len(sa | sb)
        out[i] = len(sa & sb) / union if union else 0.0
    return out


def overlap_profile(pairs: pd.DataFrame) -> dict[str, Any]:
    """The word-overlap profile of labelled pairs: the share of pairs in each overlap bin, and the share of
    non-duplicates that are easy negatives (overlap below EASY_NEGATIVE_OVERLAP)."""
    overlap = word_overlap(pairs["question1"].tolist(), pairs["question2"].tolist())
    counts, _ = np.histogram(overlap, bins=np.asarray(OVERLAP_BINS))
    negatives = pairs["is_duplicate"].to_numpy() == 0
    easy = float((overlap[negatives] < EASY_NEGATIVE_OVERLAP).mean()) if negatives.any() else None
    return {"pairs": len(pairs), "bins": list(OVERLAP_BINS), "shares": (counts / max(len(pairs), 1)).round(6).tolist(),
            "easy_negative_share": easy}


def overlap_warnings(new: dict[str, Any], fitted: dict[str, Any], max_distance: float, max_easy_change: float) -> list[str]:
    """How new labelled pairs differ from the rows a reranker was fitted on: the total-variation distance of the overlap
    profiles, and the change of the easy-negative share; a line per difference beyond its tolerance."""
    warnings = []
    distance = 0.5 * float(np.abs(np.asarray(new["shares"]) - np.asarray(fitted["shares"])).sum())
    if distance > max_distance:
        warnings.append(f"word-overlap profile of the new pairs differs from the reranker's fitting rows by total variation "
                        f"{distance:.3f} > {max_distance} ({new['pairs']:,} new pairs, {fitted['pairs']:,} fitting rows)")
    a, b = new.get("easy_negative_share"), fitted.get("easy_negative_share")
    if a is not None and b is not None and abs(a - b) > max_easy_change:
        warnings.append(f"share of easy negatives (word overlap < {EASY_NEGATIVE_OVERLAP}) is {a:.3f} in the new pairs and "
                        f"{b:.3f} in the reranker's fitting rows (change > {max_easy_change})")
    return warnings
