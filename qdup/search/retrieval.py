"""Retrieval evaluation as in sentence-transformers' Quora example: duplicate clusters, question-disjoint split, ranking metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qdup.data import graph
from qdup.errors import QdupError
from qdup.search.index import exact_search

REQUIRED = ("question1", "question2", "is_duplicate")
METRIC_NAMES = ("mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100", "map@100")


@dataclass(frozen=True)
class QuerySet:
    """Queries (corpus positions) and, for each, the corpus positions of its duplicates."""

    queries: np.ndarray
    relevant: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.queries)


@dataclass(frozen=True)
class RetrievalSplit:
    """One corpus of distinct questions; validation and test queries drawn from disjoint duplicate clusters."""

    corpus: list[str]
    cluster: np.ndarray
    val: QuerySet
    test: QuerySet


def duplicate_clusters(pairs: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Distinct questions of `pairs` (first-seen order) and each one's cluster label.

    Clusters are the connected components of the graph whose edges are the pairs with is_duplicate == 1:
    duplicates by transitive closure (a~b and b~c puts a, b, c in one cluster).
    """
    missing = [c for c in REQUIRED if c not in pairs.columns]
    if missing:
        raise QdupError(f"pairs: missing column(s) {missing}; expected {list(REQUIRED)}")
    q1 = pairs["question1"].astype(str).to_numpy()
    q2 = pairs["question2"].astype(str).to_numpy()
    corpus, labels = graph.duplicate_clusters(q1, q2, pairs["is_duplicate"].to_numpy().astype(bool))
    return [str(q) for q in corpus], labels


def _query_set(members: np.ndarray, cluster: np.ndarray) -> QuerySet:
    # Each question of a chosen cluster is a query; its relevant documents are the rest of its cluster.
    groups = pd.Series(np.arange(len(cluster))).groupby(cluster).indices
    relevant = []
    for q in members:
        rel = groups[int(cluster[q])]
        relevant.append(rel[rel != q].astype(np.int64))
    return QuerySet(np.asarray(members, dtype=np.int64), relevant)


def retrieval_split(
    pairs: pd.DataFrame, *, val_fraction: float = 0.5, seed: int, max_queries: int | None = None
) -> RetrievalSplit:
    """Question-disjoint validation/test retrieval split of labelled pairs (qdup's split columns).

    Queries are questions with at least one duplicate; their relevant documents are the rest of their
    cluster; every other distinct question of `pairs` is a distractor in the corpus. Whole clusters go to
    validation (share `val_fraction`) or test, chosen with `seed`, so no question is a query or a relevant
    document in both parts. `max_queries` caps each part (a seeded sample of its queries).
    """
    if not 0 < val_fraction < 1:
        raise QdupError(f"val_fraction must be in (0, 1), got {val_fraction}")
    corpus, cluster = duplicate_clusters(pairs)
    sizes = np.bincount(cluster)
    multi = np.flatnonzero(sizes >= 2)
    if len(multi) < 2:
        raise QdupError(f"pairs: {len(multi)} duplicate cluster(s); a retrieval split needs at least 2")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(multi)
    n_val = min(len(multi) - 1, max(1, round(len(multi) * val_fraction)))
    val_clusters, test_clusters = shuffled[:n_val], shuffled[n_val:]

    def part(clusters: np.ndarray) -> QuerySet:
        members = np.flatnonzero(np.isin(cluster, clusters))
        if max_queries is not None and len(members) > max_queries:
            members = np.sort(rng.choice(members, size=max_queries, replace=False))
        return _query_set(members, cluster)

    return RetrievalSplit(corpus, cluster, part(val_clusters), part(test_clusters))


def query_part(pairs: pd.DataFrame) -> RetrievalSplit:
    """One retrieval part of labelled pairs: its distinct questions are the corpus, every question of a duplicate
    cluster a query (its relevant documents the rest of its cluster). `val` and `test` name the same query set: a part
    is used whole, either to choose (selection) or to report (test), never both."""
    corpus, cluster = duplicate_clusters(pairs)
    if int((np.bincount(cluster) >= 2).sum()) < 1:
        raise QdupError("pairs: no duplicate cluster; a retrieval part needs at least one")
    queries = _query_set(np.flatnonzero(np.bincount(cluster)[cluster] >= 2), cluster)
    return RetrievalSplit(corpus, cluster, queries, queries)


def per_query_metrics(rankings: np.ndarray, relevant: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Each query's MRR@10, nDCG@10, recall@1/10/100 and AP@100 (arrays of len(rankings)); see `ranking_metrics`.

    Kept per query so that intervals can resample queries (or whole duplicate clusters of queries).
    Hand-written because scikit-learn has no MRR, MAP@k or recall@k for ranked lists with a variable number
    of relevant documents, and ndcg_score needs a dense score per corpus document. Definitions follow
    sentence-transformers' InformationRetrievalEvaluator: binary relevance; recall@k = relevant found in the
    top k / all relevant; AP@100 divides by min(|relevant|, 100); nDCG uses log2(rank + 1) discounts.
    """
    if len(rankings) != len(relevant):
        raise QdupError(f"{len(rankings)} ranked lists but {len(relevant)} relevant sets")
    if len(rankings) == 0:
        raise QdupError("no queries to evaluate")
    rankings = np.asarray(rankings)
    if rankings.shape[1] < 100:
        rankings = np.pad(rankings, ((0, 0), (0, 100 - rankings.shape[1])), constant_values=-1)
    discounts = 1.0 / np.log2(np.arange(2, 12))
    out = {name: np.zeros(len(rankings), dtype=np.float64) for name in METRIC_NAMES}
    for i, (ranked, rel) in enumerate(zip(rankings, relevant, strict=True)):
        if len(rel) == 0:
            raise QdupError("a query has no relevant document")
        hits = np.isin(ranked[:100], rel) & (ranked[:100] >= 0)
        first = np.flatnonzero(hits[:10])
        out["mrr@10"][i] = 1.0 / (first[0] + 1) if first.size else 0.0
        ideal = discounts[: min(len(rel), 10)].sum()
        out["ndcg@10"][i] = float(discounts[hits[:10]].sum() / ideal)
        for k in (1, 10, 100):
            out[f"recall@{k}"][i] = hits[:k].sum() / len(rel)
        ranks = np.flatnonzero(hits) + 1
        precision = np.arange(1, len(ranks) + 1) / ranks
        out["map@100"][i] = precision.sum() / min(len(rel), 100)
    return out


def ranking_metrics(rankings: np.ndarray, relevant: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean MRR@10, nDCG@10, recall@1/10/100 and MAP@100 of ranked lists (rows of corpus positions, -1 = none)."""
    return {name: float(v.mean()) for name, v in per_query_metrics(rankings, relevant).items()}


def dense_rankings(embeddings: np.ndarray, queries: np.ndarray, k: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k corpus positions and cosines for the queries (corpus positions), the query itself left out."""
    return exact_search(embeddings, embeddings[queries], k, exclude=queries)
