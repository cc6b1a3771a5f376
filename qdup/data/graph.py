"""The question graph: questions are nodes, pairs are edges; its connected components group pairs and cluster questions.

One helper for every caller: the splits' question-disjoint components (by question id), the reranker's grouped
folds, the bootstrap's pair groups, retrieval's and training's duplicate clusters (duplicate edges only, by text).
Nodes are numbered in order of first appearance (question1 of every pair, then question2), so scipy's component
labels depend only on the pairs and their order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def question_codes(q1: Sequence | np.ndarray, q2: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node number of each pair's question1 and question2, and the distinct questions (first-seen order)."""
    a, b = np.asarray(q1), np.asarray(q2)
    if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":
        a, b = np.asarray(q1, dtype=object), np.asarray(q2, dtype=object)
    codes, uniques = pd.factorize(np.concatenate([a, b]), sort=False)
    return codes[: len(a)], codes[len(a):], uniques


def components(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Connected-component label (scipy's) of each of `n` nodes joined by the undirected edges (a[k], b[k])."""
    graph = coo_matrix((np.ones(len(a), dtype=np.float64), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def pair_components(q1: Sequence | np.ndarray, q2: Sequence | np.ndarray) -> np.ndarray:
    """Component label of each pair over every pair (either label): pairs sharing a question, directly or through
    others, share a label; duplicate clusters stay whole."""
    a, b, uniques = question_codes(q1, q2)
    return components(a, b, len(uniques))[a]


def duplicate_clusters(
    q1: Sequence | np.ndarray, q2: Sequence | np.ndarray, duplicate: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct questions (first-seen order) and each one's cluster: components of the duplicate pairs only
    (transitive closure: a~b and b~c puts a, b, c in one cluster); a question in no duplicate pair is its own."""
    a, b, uniques = question_codes(q1, q2)
    dup = np.asarray(duplicate, dtype=bool)
    return uniques, components(a[dup], b[dup], len(uniques))
