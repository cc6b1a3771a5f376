"""The question graph: components of all pairs, duplicate clusters, by id or by text, against labels worked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qdup.data.graph import components, duplicate_clusters, pair_components, question_codes
from qdup.data.splits import question_components
from qdup.evaluation.reranker import pair_groups
from qdup.model.batches import question_clusters
from qdup.search.retrieval import duplicate_clusters as retrieval_clusters


def same_partition(a: np.ndarray, b: list[list[int]]) -> bool:
    """Whether labels `a` put together exactly the index groups `b` (and nothing else)."""
    groups = pd.Series(np.arange(len(a))).groupby(a).apply(list).tolist()
    return sorted(map(sorted, groups)) == sorted(map(sorted, b))


def test_questions_are_numbered_in_order_of_first_appearance():
    a, b, uniques = question_codes(["x", "y", "x"], ["y", "z", "w"])
    assert a.tolist() == [0, 1, 0] and b.tolist() == [1, 2, 3] and list(uniques) == ["x", "y", "z", "w"]
    a, b, uniques = question_codes(np.array([7, 3]), np.array([3, 9]))
    assert a.tolist() == [0, 1] and b.tolist() == [1, 2] and list(uniques) == [7, 3, 9]


def test_pairs_sharing_a_question_directly_or_through_others_share_a_component():
    q1 = ["a", "b", "x", "a", "p"]
    q2 = ["b", "c", "y", "z", "q"]
    labels = pair_components(q1, q2)
    assert same_partition(labels, [[0, 1, 3], [2], [4]])
    # Every caller's grouping is this one: the reranker's folds, the splits' components (by question id).
    assert np.array_equal(pair_groups(q1, q2), labels)
    ids = {q: i for i, q in enumerate("abcxyzpq")}
    by_id = question_components(np.array([ids[q] for q in q1]), np.array([ids[q] for q in q2]))
    assert by_id.tolist() == [0, 0, 1, 0, 2]  # renumbered by first appearance
    assert components(np.array([0, 2]), np.array([1, 3]), 5).tolist() == [0, 0, 1, 1, 2]
    assert pair_components([], []).tolist() == []


def test_duplicate_clusters_follow_duplicate_edges_only():
    q1 = ["a", "b", "c", "d"]
    q2 = ["b", "c", "d", "e"]
    dup = np.array([1, 1, 0, 1], dtype=bool)
    texts, cluster = duplicate_clusters(q1, q2, dup)
    assert list(texts) == ["a", "b", "c", "d", "e"]
    # a~b~c by transitive closure; c-d is not a duplicate pair; d~e.
    assert cluster[0] == cluster[1] == cluster[2] and cluster[3] == cluster[4] and cluster[0] != cluster[3]
    frame = pd.DataFrame({"question1": q1, "question2": q2, "is_duplicate": dup.astype(int)})
    corpus, labels = retrieval_clusters(frame)
    assert corpus == list(texts) and np.array_equal(labels, cluster)
    assert question_clusters(frame) == dict(zip(texts, cluster.tolist(), strict=True))
