"""Lexical retrieval (character n-gram TF-IDF cosine) and its fusion with dense retrieval (RRF, weighted sum)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from qdup.config import SearchConfig
from qdup.errors import QdupError
from qdup.search.index import query_block_rows, top_k_rows
from qdup.search.retrieval import (
    METRIC_NAMES,
    QuerySet,
    RetrievalSplit,
    dense_rankings,
    ranking_metrics,
)

SELECT_METRIC = "mrr@10"
# Scores of (query texts, candidate texts, encoder cosines) pairs, higher = more likely a duplicate: a pair reranker.
PairScorer = Callable[[list[str], list[str], np.ndarray], np.ndarray]


class LexicalIndex:
    """Character n-gram (2-5, within word boundaries) TF-IDF vectors of a corpus, searched by cosine."""

    def __init__(self, texts: Sequence[str], *, ngram_range: tuple[int, int] = (2, 5), block_elements: int | None = None):
        if not len(texts):
            raise QdupError("lexical index: no texts")
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, sublinear_tf=True, dtype=np.float32)
        self.matrix = self.vectorizer.fit_transform(list(texts)).tocsr()
        self.block_elements = block_elements or SearchConfig().block_elements

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def _search_rows(self, rows, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = rows.shape[0]
        k_eff = min(k, len(self))
        idx_out = np.full((n, k), -1, dtype=np.int64)
        score_out = np.full((n, k), -np.inf, dtype=np.float32)
        step = query_block_rows(len(self), self.block_elements)
        corpus_t = self.matrix.T.tocsc()
        for start in range(0, n, step):
            # The sparse product of char n-grams is nearly dense; a dense block of at most block_elements scores.
            block = (rows[start : start + step] @ corpus_t).toarray()
            if exclude is not None:
                ex = exclude[start : start + step]
                hit = np.flatnonzero(ex >= 0)
                block[hit, ex[hit]] = -np.inf
            idx, top = top_k_rows(block, k_eff)
            idx[~np.isfinite(top)] = -1
            idx_out[start : start + len(block), :k_eff] = idx
            score_out[start : start + len(block), :k_eff] = top
        return idx_out, score_out

    def search(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k corpus positions and TF-IDF cosines of new query texts."""
        return self._search_rows(self.vectorizer.transform(list(texts)).tocsr(), k, None)

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for corpus questions used as queries, each query left out of its own results."""
        return self._search_rows(self.matrix[queries], k, np.asarray(queries))

    def pair_scores(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """TF-IDF cosine of query i (corpus position) with each candidates[i, j] (-1: none, scored -inf)."""
        safe = np.where(candidates >= 0, candidates, 0)
        rep = np.repeat(queries, candidates.shape[1])
        sims = np.asarray(self.matrix[rep].multiply(self.matrix[safe.ravel()]).sum(axis=1)).reshape(candidates.shape)
        return np.where(candidates >= 0, sims, -np.inf).astype(np.float32)


def candidate_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the distinct positions of two ranked lists (-1 padding), sorted, duplicates and gaps as -1."""
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    repeat = np.zeros_like(both, dtype=bool)
    repeat[:, 1:] = both[:, 1:] == both[:, :-1]
    both[repeat] = -1
    return both


def _rank_of(candidates: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """1-based rank of each candidate in its row's ranked list, 0 where absent."""
    out = np.zeros(candidates.shape, dtype=np.int64)
    for r in range(len(candidates)):
        where = {int(p): i + 1 for i, p in enumerate(ranked[r]) if p >= 0}
        out[r] = [where.get(int(c), 0) for c in candidates[r]]
    return out


def rrf_scores(candidates: np.ndarray, dense_idx: np.ndarray, lexical_idx: np.ndarray, rrf_k: int) -> np.ndarray:
    """Reciprocal rank fusion: sum over the two lists of 1 / (rrf_k + rank); absent from a list adds 0."""
    total = np.zeros(candidates.shape, dtype=np.float64)
    for ranked in (dense_idx, lexical_idx):
        rank = _rank_of(candidates, ranked)
        total += np.where(rank > 0, 1.0 / (rrf_k + rank), 0.0)
    return np.where(candidates >= 0, total, -np.inf)


def rank_by(candidates: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Candidates reordered by descending score (ties by position), first k, -1 where none."""
    idx, top = top_k_rows(np.where(candidates >= 0, scores, -np.inf), min(k, candidates.shape[1]))
    ranked = np.take_along_axis(candidates, idx, axis=1)
    ranked[~np.isfinite(top)] = -1
    return ranked


def _dense_pair_scores(embeddings: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    safe = np.where(candidates >= 0, candidates, 0)
    sims = np.einsum("nkd,nd->nk", embeddings[safe], embeddings[queries])
    return np.where(candidates >= 0, sims, -np.inf).astype(np.float32)


def _runs(split_part: QuerySet, embeddings: np.ndarray, lexical: LexicalIndex, k: int) -> dict[str, np.ndarray]:
    d_idx, _ = dense_rankings(embeddings, split_part.queries, k)
    l_idx, _ = lexical.search_positions(split_part.queries, k)
    cands = candidate_union(d_idx, l_idx)
    return {
        "dense": d_idx,
        "lexical": l_idx,
        "candidates": cands,
        "dense_scores": _dense_pair_scores(embeddings, split_part.queries, cands),
        "lexical_scores": lexical.pair_scores(split_part.queries, cands),
    }


def _hybrid(run: dict[str, np.ndarray], method: str, weight: float, rrf_k: int, k: int) -> np.ndarray:
    cands = run["candidates"]
    if method == "rrf":
        return rank_by(cands, rrf_scores(cands, run["dense"], run["lexical"], rrf_k), k)
    # Missing candidates (-1) score -inf in both; 0 * -inf would be NaN, so mix finite scores only.
    present = cands >= 0
    mixed = weight * np.where(present, run["dense_scores"], 0.0) + (1.0 - weight) * np.where(present, run["lexical_scores"], 0.0)
    return rank_by(cands, np.where(present, mixed, -np.inf), k)


def rerank_candidates(
    run: dict[str, np.ndarray], part: QuerySet, corpus: Sequence[str], rerank: PairScorer, k: int
) -> np.ndarray:
    """The run's candidates (union of dense and lexical top-k) reordered by `rerank(query texts, candidate texts, cosines)`."""
    cands = run["candidates"]
    rows, cols = np.nonzero(cands >= 0)
    scores = np.full(cands.shape, -np.inf, dtype=np.float64)
    if len(rows):
        q_texts = [corpus[int(part.queries[r])] for r in rows]
        c_texts = [corpus[int(cands[r, c])] for r, c in zip(rows, cols, strict=True)]
        scores[rows, cols] = rerank(q_texts, c_texts, run["dense_scores"][rows, cols].astype(np.float64))
    return rank_by(cands, scores, k)


def _subset_metrics(rankings: dict[str, np.ndarray], part: QuerySet, keep: np.ndarray) -> dict[str, Any]:
    idx = np.flatnonzero(keep)
    if not len(idx):
        return {}
    relevant = [part.relevant[i] for i in idx]
    return {name: ranking_metrics(ranked[idx], relevant) for name, ranked in rankings.items()}


def evaluate_retrieval(
    split: RetrievalSplit,
    embeddings: np.ndarray,
    *,
    cfg: SearchConfig | None = None,
    select_metric: str = SELECT_METRIC,
    rerank: PairScorer | None = None,
    rerank_seen: set[str] | None = None,
) -> dict[str, Any]:
    """Lexical, dense and hybrid retrieval on the same split; the hybrid's form and weight chosen on validation.

    `embeddings[i]` is the unit encoding of split.corpus[i]. Hybrid candidates are the union of both top-k
    lists, rescored by RRF or by weight * dense cosine + (1 - weight) * lexical cosine, weight on a grid of
    cfg.hybrid_weight_step. Validation alone chooses the hybrid and the best method; test is only reported.

    With `rerank` (a pair reranker's scores), `reranked` re-orders the same candidates by it. A reranker
    fitted on labelled pairs has seen the pairs of the questions in `rerank_seen`: every method is then
    also measured on the queries outside it ("unseen_by_reranker"), and the best method is chosen among
    all four on those validation queries only.
    """
    cfg = cfg or SearchConfig()
    if select_metric not in METRIC_NAMES:
        raise QdupError(f"select_metric: expected one of {list(METRIC_NAMES)}, got {select_metric!r}")
    if len(embeddings) != len(split.corpus):
        raise QdupError(f"embeddings: {len(embeddings)} vectors for a corpus of {len(split.corpus)} questions")
    k = cfg.retrieval_k
    lexical = LexicalIndex(split.corpus, block_elements=cfg.block_elements)
    val, test = _runs(split.val, embeddings, lexical, k), _runs(split.test, embeddings, lexical, k)
    options: list[tuple[str, float | None]] = [("rrf", None)]
    steps = round(1.0 / cfg.hybrid_weight_step)
    options += [("weighted", round(i / steps, 6)) for i in range(steps + 1)]
    tried = []
    for method, weight in options:
        m = ranking_metrics(_hybrid(val, method, weight or 0.0, cfg.rrf_k, k), split.val.relevant)
        tried.append({"method": method, "weight": weight, select_metric: m[select_metric]})
    best = max(tried, key=lambda t: t[select_metric])  # first best wins ties: RRF, then lower weights
    method, weight = best["method"], best["weight"]
    result: dict[str, Any] = {"select_metric": select_metric, "hybrid_grid": tried}
    for name, rank_val, rank_test in (
        ("lexical", val["lexical"], test["lexical"]),
        ("dense", val["dense"], test["dense"]),
        ("hybrid", _hybrid(val, method, weight or 0.0, cfg.rrf_k, k), _hybrid(test, method, weight or 0.0, cfg.rrf_k, k)),
    ):
        result[name] = {
            "val": ranking_metrics(rank_val, split.val.relevant),
            "test": ranking_metrics(rank_test, split.test.relevant),
        }
    result["hybrid"]["method"] = method
    result["hybrid"]["weight"] = weight
    result["best"] = max(("lexical", "dense", "hybrid"), key=lambda n: result[n]["val"][select_metric])
    if rerank is not None:
        ranked = {part_name: {
            "lexical": run["lexical"], "dense": run["dense"], "hybrid": _hybrid(run, method, weight or 0.0, cfg.rrf_k, k),
            "reranked": rerank_candidates(run, part, split.corpus, rerank, k),
        } for part_name, run, part in (("val", val, split.val), ("test", test, split.test))}
        result["reranked"] = {p: ranking_metrics(ranked[p]["reranked"], getattr(split, p).relevant) for p in ("val", "test")}
        if rerank_seen is not None:
            unseen = {p: np.array([split.corpus[int(q)] not in rerank_seen for q in getattr(split, p).queries], dtype=bool)
                      for p in ("val", "test")}
            result["unseen_by_reranker"] = {
                "queries": {p: int(unseen[p].sum()) for p in ("val", "test")},
                **{p: _subset_metrics(ranked[p], getattr(split, p), unseen[p]) for p in ("val", "test")},
            }
            fresh_val = result["unseen_by_reranker"]["val"]
            if fresh_val:
                result["best"] = max(("lexical", "dense", "hybrid", "reranked"), key=lambda n: fresh_val[n][select_metric])
                result["best_chosen_on"] = "validation queries unseen by the reranker"
        else:
            result["best"] = max(("lexical", "dense", "hybrid", "reranked"), key=lambda n: result[n]["val"][select_metric])
    result["counts"] = {"corpus": len(split.corpus), "val_queries": len(split.val), "test_queries": len(split.test)}
    return result
