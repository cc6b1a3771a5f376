"""Lexical retrieval (word BM25 inverted index, built with the question index; character n-gram TF-IDF as the old baseline)
and its fusion with dense retrieval (RRF, weighted sum)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from qdup.config import SearchConfig
from qdup.errors import QdupError
from qdup.evaluation.reranker import Reranker
from qdup.search.bm25 import build_lexical
from qdup.search.candidate_rerank import RERANK_DEPTH, FirstStage, SearchRerankFit, fit_search_reranker, reorder, search_scores
from qdup.search.index import query_block_rows
from qdup.search.retrieval import (
    METRIC_NAMES,
    QuerySet,
    RetrievalSplit,
    dense_rankings,
    ranking_metrics,
)
from qdup.search.topk import rank_by, rank_of, top_k_rows

SELECT_METRIC = "mrr@10"
# Scores of (query texts, candidate texts, encoder cosines) pairs, higher = more likely a duplicate: a pair reranker.
PairScorer = Callable[[list[str], list[str], np.ndarray], np.ndarray]

class Lexical(Protocol):
    """A lexical index of a corpus: what the retrieval evaluation and the search service both call."""

    kind: str

    def __len__(self) -> int: ...

    def search(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def pair_scores(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...

    def query_pair_scores(self, texts: Sequence[str], candidates: np.ndarray) -> np.ndarray: ...


# What builds a corpus's lexical side in the retrieval evaluation (default: `build_lexical`, the index search serves).
LexicalBuilder = Callable[[Sequence[str]], Lexical]


class CharTfidfIndex:
    """Character n-gram (2-5, within word boundaries) TF-IDF vectors of a corpus, searched by cosine: the lexical side
    before the BM25 index (fitted in memory, every query scored against the whole corpus); kept as the baseline that
    bench/SEARCH.md compares against."""

    kind = "tfidf"

    def __init__(self, texts: Sequence[str], *, ngram_range: tuple[int, int] = (2, 5), block_elements: int | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not len(texts):
            raise QdupError("lexical index: no texts")
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, sublinear_tf=True, dtype=np.float32)
        self.matrix = self.vectorizer.fit_transform(list(texts)).tocsr()
        self._corpus_t = self.matrix.T.tocsr()
        self.block_elements = block_elements or SearchConfig().block_elements

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def _search_rows(self, rows, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = rows.shape[0]
        k_eff = min(k, len(self))
        idx_out = np.full((n, k), -1, dtype=np.int64)
        score_out = np.full((n, k), -np.inf, dtype=np.float32)
        step = query_block_rows(len(self), self.block_elements)
        for start in range(0, n, step):
            # The sparse product of char n-grams is nearly dense; a dense block of at most block_elements scores.
            block = (rows[start : start + step] @ self._corpus_t).toarray()
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

    def _pairs(self, rows, candidates: np.ndarray) -> np.ndarray:
        safe = np.where(candidates >= 0, candidates, 0)
        rep = rows[np.repeat(np.arange(candidates.shape[0]), candidates.shape[1])]
        sims = np.asarray(rep.multiply(self.matrix[safe.ravel()]).sum(axis=1)).reshape(candidates.shape)
        return np.where(candidates >= 0, sims, -np.inf).astype(np.float32)

    def pair_scores(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """TF-IDF cosine of query i (corpus position) with each candidates[i, j] (-1: none, scored -inf)."""
        return self._pairs(self.matrix[queries], candidates)

    def query_pair_scores(self, texts: Sequence[str], candidates: np.ndarray) -> np.ndarray:
        """TF-IDF cosine of query text i with each candidates[i, j] (-1: none, scored -inf)."""
        return self._pairs(self.vectorizer.transform(list(texts)).tocsr(), candidates)


def candidate_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the distinct positions of two ranked lists (-1 padding), sorted, duplicates and gaps as -1."""
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    repeat = np.zeros_like(both, dtype=bool)
    repeat[:, 1:] = both[:, 1:] == both[:, :-1]
    both[repeat] = -1
    return both


# Rows per block of the retrieval evaluation's per-candidate work: its (rows, candidates, ...) temporaries stay near
# 100 MB whatever the number of queries (17k validation queries x 200 candidates x 256 dims would be 3.5 GB at once).
ROW_BLOCK = 512
# Queries per reranker call: up to 200 candidates each.
RERANK_BLOCK = 64


def rrf_scores(candidates: np.ndarray, dense_idx: np.ndarray, lexical_idx: np.ndarray, rrf_k: int) -> np.ndarray:
    """Reciprocal rank fusion: sum over the two lists of 1 / (rrf_k + rank); absent from a list adds 0."""
    total = np.zeros(candidates.shape, dtype=np.float64)
    for ranked in (dense_idx, lexical_idx):
        rank = rank_of(candidates, ranked)
        total += np.where(rank > 0, 1.0 / (rrf_k + rank), 0.0)
    return np.where(candidates >= 0, total, -np.inf)


def normalise_lexical(scores: np.ndarray) -> np.ndarray:
    """Each row's lexical scores divided by its best (so in [0, 1], as cosines of unit vectors are at most 1); 0 where a
    row has no positive score, -inf entries (no candidate) become 0. BM25 has no upper bound, and its scale varies with
    the query's words, so a weighted sum with the cosine needs it brought to one scale per query."""
    finite = np.where(np.isfinite(scores), scores, 0.0)
    best = finite.max(axis=1, keepdims=True) if finite.size else finite
    return np.where(best > 0, finite / np.where(best > 0, best, 1.0), 0.0)


def fused_scores(
    candidates: np.ndarray, dense_idx: np.ndarray, lexical_idx: np.ndarray, dense_scores: np.ndarray,
    lexical_scores: np.ndarray, method: str, weight: float | None, rrf_k: int,
) -> np.ndarray:
    """The hybrid score of each candidate: RRF of the two ranked lists, or weight * cosine + (1 - weight) * the lexical
    score normalised by the query's best (`normalise_lexical`); -inf where no candidate. Search and the retrieval
    evaluation both call this, so the form chosen on validation is the one served."""
    if method == "rrf":
        return rrf_scores(candidates, dense_idx, lexical_idx, rrf_k)
    w = float(weight or 0.0)
    present = candidates >= 0
    # Missing candidates (-1) score -inf in both; 0 * -inf would be NaN, so mix finite scores only.
    mixed = w * np.where(present, dense_scores, 0.0) + (1.0 - w) * normalise_lexical(np.where(present, lexical_scores, -np.inf))
    return np.where(present, mixed, -np.inf)


def _dense_pair_scores(embeddings: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    out = np.empty(candidates.shape, dtype=np.float32)
    for a in range(0, len(candidates), ROW_BLOCK):
        c = candidates[a : a + ROW_BLOCK]
        sims = np.einsum("nkd,nd->nk", embeddings[np.where(c >= 0, c, 0)], embeddings[queries[a : a + ROW_BLOCK]])
        out[a : a + ROW_BLOCK] = np.where(c >= 0, sims, -np.inf)
    return out


def first_stage_runs(split_part: QuerySet, embeddings: np.ndarray, lexical: Lexical, k: int) -> dict[str, np.ndarray]:
    """The queries' dense and lexical top k (the query itself left out), the union of both lists (`candidates`) and
    each candidate's cosine and BM25 score: what every fused or re-ordered ranking of the evaluation starts from."""
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


def hybrid_rankings(run: dict[str, np.ndarray], method: str, weight: float | None, rrf_k: int, k: int) -> np.ndarray:
    """The run's candidates ordered by the hybrid of form `method` (rrf or weighted, with the dense `weight`)."""
    cands = run["candidates"]
    scores = fused_scores(cands, run["dense"], run["lexical"], run["dense_scores"], run["lexical_scores"], method, weight, rrf_k)
    return rank_by(cands, scores, k)


def rerank_candidates(
    run: dict[str, np.ndarray], part: QuerySet, corpus: Sequence[str], rerank: PairScorer, k: int
) -> np.ndarray:
    """The run's candidates (union of dense and lexical top-k) reordered by `rerank(query texts, candidate texts, cosines)`."""
    cands = run["candidates"]
    scores = np.full(cands.shape, -np.inf, dtype=np.float64)
    # By blocks of queries: the pairs' texts and features of every query's candidates at once would take gigabytes,
    # and even a few hundred queries' pairs held over a gigabyte of character n-gram entries at full size (memray).
    for a in range(0, len(cands), RERANK_BLOCK):
        rows, cols = np.nonzero(cands[a : a + RERANK_BLOCK] >= 0)
        rows = rows + a
        if len(rows):
            q_texts = [corpus[int(part.queries[r])] for r in rows]
            c_texts = [corpus[int(cands[r, c])] for r, c in zip(rows, cols, strict=True)]
            scores[rows, cols] = rerank(q_texts, c_texts, run["dense_scores"][rows, cols].astype(np.float64))
    return rank_by(cands, scores, k)


def top_first_stage(part: QuerySet, embeddings: np.ndarray, lexical: Lexical, run: dict[str, np.ndarray], hybrid: np.ndarray,
                    depth: int) -> FirstStage:
    """What a search reranker reads of the hybrid's first `depth` candidates of each query of `part`."""
    top = np.ascontiguousarray(hybrid[:, :depth])
    return FirstStage(top, run["dense"], run["lexical"], _dense_pair_scores(embeddings, part.queries, top),
                      lexical.pair_scores(part.queries, top))


def search_reranked(
    reranker: Reranker, part: QuerySet, corpus: Sequence[str], embeddings: np.ndarray, lexical: Lexical,
    run: dict[str, np.ndarray], hybrid: np.ndarray,
) -> np.ndarray:
    """The hybrid's ranked lists with their first `depth` (the search reranker's) re-ordered by the search reranker."""
    stage = top_first_stage(part, embeddings, lexical, run, hybrid, int(reranker.info.get("depth", RERANK_DEPTH)))
    return reorder(hybrid, search_scores(reranker, [corpus[int(q)] for q in part.queries], corpus, stage))


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
    lexical_builder: LexicalBuilder | None = None,
    test_split: RetrievalSplit | None = None,
    test_embeddings: np.ndarray | None = None,
    search_fit: SearchRerankFit | None = None,
) -> dict[str, Any]:
    """Lexical, dense and hybrid retrieval on the same split; the hybrid's form and weight chosen on validation.

    With `test_split` (and `test_embeddings` of its corpus), the test part is `test_split.test` on its own corpus
    and lexical index: nothing of it, not even its questions as distractors, reaches what validation chooses.

    `embeddings[i]` is the unit encoding of split.corpus[i]. Hybrid candidates are the union of both top-k
    lists, rescored by `fused_scores` (RRF, or weight * dense cosine + (1 - weight) * normalised lexical score), weight on
    a grid of cfg.hybrid_weight_step. The lexical side is `lexical_builder` (default `build_lexical`: the BM25 index the
    question index is built with, so what is chosen here is what search serves). Validation alone chooses the hybrid and the best method; test is only reported.

    With `rerank` (a pair reranker's scores), `reranked` re-orders the same candidates by it. A reranker
    fitted on labelled pairs has seen the pairs of the questions in `rerank_seen`: every method is then
    also measured on the queries outside it ("unseen_by_reranker"), and the best method is chosen among
    all four on those validation queries only.

    With `search_fit`, `reranked` is instead a search reranker fitted on the validation queries' hybrid top
    `search_fit.depth` (`qdup.search.candidate_rerank`): its validation figures are out-of-fold (grouped by duplicate
    cluster), its test figures the model fitted on every validation row, which the result holds under
    "search_reranker_model" (to be saved, not written as JSON).
    """
    cfg = cfg or SearchConfig()
    if select_metric not in METRIC_NAMES:
        raise QdupError(f"select_metric: expected one of {list(METRIC_NAMES)}, got {select_metric!r}")
    if len(embeddings) != len(split.corpus):
        raise QdupError(f"embeddings: {len(embeddings)} vectors for a corpus of {len(split.corpus)} questions")
    k = cfg.retrieval_k
    build = lexical_builder or build_lexical
    lexical = build(split.corpus)
    if test_split is None:
        test_split, test_embeddings, test_lexical = split, embeddings, lexical
    else:
        if test_embeddings is None or len(test_embeddings) != len(test_split.corpus):
            raise QdupError("test_embeddings: one vector per question of test_split.corpus is needed")
        test_lexical = build(test_split.corpus)
    val, test = first_stage_runs(split.val, embeddings, lexical, k), first_stage_runs(test_split.test, test_embeddings, test_lexical, k)
    corpora = {"val": split.corpus, "test": test_split.corpus}
    parts = {"val": split.val, "test": test_split.test}
    options: list[tuple[str, float | None]] = [("rrf", None)]
    steps = round(1.0 / cfg.hybrid_weight_step)
    options += [("weighted", round(i / steps, 6)) for i in range(steps + 1)]
    tried = []
    for method, weight in options:
        m = ranking_metrics(hybrid_rankings(val, method, weight, cfg.rrf_k, k), split.val.relevant)
        tried.append({"method": method, "weight": weight, select_metric: m[select_metric]})
    best = max(tried, key=lambda t: t[select_metric])  # first best wins ties: RRF, then lower weights
    method, weight = best["method"], best["weight"]
    result: dict[str, Any] = {"select_metric": select_metric, "hybrid_grid": tried}
    hybrid = {"val": hybrid_rankings(val, method, weight, cfg.rrf_k, k), "test": hybrid_rankings(test, method, weight, cfg.rrf_k, k)}
    for name, rank_val, rank_test in (
        ("lexical", val["lexical"], test["lexical"]),
        ("dense", val["dense"], test["dense"]),
        ("hybrid", hybrid["val"], hybrid["test"]),
    ):
        result[name] = {
            "val": ranking_metrics(rank_val, parts["val"].relevant),
            "test": ranking_metrics(rank_test, parts["test"].relevant),
        }
    result["hybrid"]["method"] = method
    result["hybrid"]["weight"] = weight
    result["lexical_index"] = lexical.kind
    result["best"] = max(("lexical", "dense", "hybrid"), key=lambda n: result[n]["val"][select_metric])
    if search_fit is not None:
        stage = top_first_stage(split.val, embeddings, lexical, val, hybrid["val"], search_fit.depth)
        model, oof = fit_search_reranker(search_fit, [split.corpus[int(q)] for q in split.val.queries], split.corpus, stage,
                                         split.val.relevant, split.cluster[split.val.queries])
        result["reranked"] = {
            "val": ranking_metrics(reorder(hybrid["val"], oof), parts["val"].relevant),
            "test": ranking_metrics(search_reranked(model, test_split.test, test_split.corpus, test_embeddings, test_lexical,
                                                    test, hybrid["test"]), parts["test"].relevant),
        }
        result["reranked_by"] = {"reranker": "search", "depth": search_fit.depth, "val": "out-of-fold", **model.info}
        result["search_reranker_model"] = model
        result["best"] = max(("lexical", "dense", "hybrid", "reranked"), key=lambda n: result[n]["val"][select_metric])
    elif rerank is not None:
        ranked = {part_name: {
            "lexical": run["lexical"], "dense": run["dense"], "hybrid": hybrid[part_name],
            "reranked": rerank_candidates(run, parts[part_name], corpora[part_name], rerank, k),
        } for part_name, run in (("val", val), ("test", test))}
        result["reranked"] = {p: ranking_metrics(ranked[p]["reranked"], parts[p].relevant) for p in ("val", "test")}
        if rerank_seen is not None:
            unseen = {p: np.array([corpora[p][int(q)] not in rerank_seen for q in parts[p].queries], dtype=bool)
                      for p in ("val", "test")}
            result["unseen_by_reranker"] = {
                "queries": {p: int(unseen[p].sum()) for p in ("val", "test")},
                **{p: _subset_metrics(ranked[p], parts[p], unseen[p]) for p in ("val", "test")},
            }
            fresh_val = result["unseen_by_reranker"]["val"]
            if fresh_val:
                result["best"] = max(("lexical", "dense", "hybrid", "reranked"), key=lambda n: fresh_val[n][select_metric])
                result["best_chosen_on"] = "validation queries unseen by the reranker"
        else:
            result["best"] = max(("lexical", "dense", "hybrid", "reranked"), key=lambda n: result[n]["val"][select_metric])
    result["counts"] = {"corpus": len(split.corpus), "val_queries": len(split.val), "test_queries": len(test_split.test)}
    if test_split is not split:
        result["counts"]["test_corpus"] = len(test_split.corpus)
    return result


def served_rankings(
    part: QuerySet, corpus: Sequence[str], embeddings: np.ndarray, method: str, hybrid: dict[str, Any], *,
    cfg: SearchConfig | None = None, rerank: PairScorer | None = None, lexical: Lexical | None = None,
    search_reranker: Reranker | None = None,
) -> np.ndarray:
    """The ranked lists one search method serves (dense, lexical, hybrid with its chosen form and weight, or reranked:
    the hybrid's first candidates re-ordered by `search_reranker` where the version has one, else the hybrid's
    candidates by the pair reranker's `rerank`), for the queries of `part` on `corpus` (what the gate measures)."""
    cfg = cfg or SearchConfig()
    if method not in ("dense", "lexical", "hybrid", "reranked"):
        raise QdupError(f"search method: expected dense, lexical, hybrid or reranked, got {method!r}")
    if method == "reranked" and rerank is None and search_reranker is None:
        raise QdupError("search method 'reranked' needs the version's reranker")
    lexical = lexical or build_lexical(corpus)
    run = first_stage_runs(part, embeddings, lexical, cfg.retrieval_k)
    if method in ("dense", "lexical"):
        return run[method]
    fused = hybrid_rankings(run, hybrid["method"], hybrid.get("weight"), cfg.rrf_k, cfg.retrieval_k)
    if method == "hybrid":
        return fused
    if search_reranker is not None:
        return search_reranked(search_reranker, part, corpus, embeddings, lexical, run, fused)
    return rerank_candidates(run, part, corpus, rerank, cfg.retrieval_k)
