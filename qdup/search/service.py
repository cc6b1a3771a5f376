"""A published version's question index as a search service: dense, lexical, hybrid or reranked ranking of new queries."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdup.errors import QdupError
from qdup.evaluation.reranker import Reranker
from qdup.evaluation.reranker_io import has_reranker, load_reranker
from qdup.fileio import read_json
from qdup.search.candidate_rerank import (
    RERANK_DEPTH,
    FirstStage,
    load_version_search_reranker,
    reorder_with_scores,
    search_scores,
)
from qdup.search.encoder import QueryEncoder, load_query_encoder
from qdup.search.index import QuestionIndex, load_index
from qdup.search.lexical import Lexical, candidate_union, fused_scores
from qdup.search.locations import LATE_INDEXES_DIR, VERSION_INDEX_DIR, find_index_dir, late_index_dir  # noqa: F401  (re-exported)
from qdup.search.topk import rank_with_scores

METHODS = ("dense", "lexical", "hybrid", "reranked")
# Each side of a hybrid (and of the reranked method's candidates) ranks at least this many, as the retrieval evaluation
# does (SearchConfig.retrieval_k).
HYBRID_DEPTH = 100
_POOL_LOCK = threading.Lock()
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _lexical_thread() -> ThreadPoolExecutor:
    """The thread the lexical side of a hybrid (or reranked) ranking runs on while the caller's encodes the queries and
    searches the vectors: the two first stages are independent, and the encoder's runtime, faiss and numpy's larger
    operations release the GIL, so a query waits for the slower of the two rather than their sum. One per process (a
    forked child makes its own: threads do not survive a fork)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdup-lexical"))
        return _POOL[1]

WARM_QUERY = "How do I learn to cook?"


def search_defaults(index: QuestionIndex) -> dict[str, Any]:
    """The ranking an index's version chose (on its retrieval validation part); dense for an index without one."""
    return index.search_defaults or {"method": "dense", "hybrid": {"method": "rrf", "weight": None}, "rrf_k": 60}


# The score each method ranks by, as answers name it (`score_kind`); a hybrid's is its fusion form, "rrf" or "weighted".
SCORE_KINDS = {"dense": "cosine", "lexical": "bm25", "reranked": "reranker"}  # reranked by a search reranker: "search_reranker"


@dataclass(frozen=True)
class Ranking:
    """Ranked hits of n queries: positions (n, k) in the index (-1: none), the score that ordered them (`kind`: cosine,
    bm25, rrf, weighted or reranker; -inf where none) and each hit's encoder cosine with its query."""

    method: str
    kind: str
    positions: np.ndarray
    scores: np.ndarray
    cosines: np.ndarray


@dataclass
class VersionSearcher:
    """One version's index, encoder and pair reranker (None: the version has none); ranks by `default_method` unless told otherwise.

    With a reranker, every hit carries its reranker score; the duplicate decision is the reranker's where it decides
    (`reranker_decides`, the version's choice on its selection split), else the cosine's.
    """

    index: QuestionIndex
    encoder: QueryEncoder
    reranker: Reranker | None = None
    reranker_decides: bool = True
    # With one, `reranked` is the hybrid's first candidates re-ordered by it (qdup.search.candidate_rerank).
    search_reranker: Reranker | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        return search_defaults(self.index)

    @property
    def default_method(self) -> str:
        return self.defaults["method"]

    @property
    def lexical_ready(self) -> bool:
        """Whether the lexical side is in memory (loaded with the index, or fitted for an index saved without one)."""
        return self.index.lexical is not None

    @property
    def lexical(self) -> Lexical:
        return self.index.ensure_lexical()

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this version answers: `reranked` only with a pair reranker."""
        return tuple(m for m in METHODS if m != "reranked" or self.reranker is not None)

    def score_kind(self, method: str | None = None) -> str:
        """What the score of a hit ranked by `method` (default: the version's) is."""
        method = method or self.default_method
        if method == "reranked" and self.search_reranker is not None:
            return "search_reranker"
        return SCORE_KINDS.get(method) or self.defaults["hybrid"]["method"]

    def warm(self, methods: tuple[str, ...] | list[str] | None = None) -> None:
        """Answer a probe query with each method (default: the one `search` uses), so that the first real query is
        served at full speed (the encoder's graph traced); an index saved without a lexical side gets it here."""
        if any(m != "dense" for m in (methods or (self.default_method,))):
            self.index.ensure_lexical()
        for method in methods or (self.default_method,):
            self.rank([WARM_QUERY], 1, method)

    def rank(self, queries: list[str], k: int, method: str | None = None, exclude: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Positions (n, k) of the best indexed questions (-1: none) and their cosine with each query under the encoder."""
        ranking = self.ranking(queries, k, method, exclude)
        return ranking.positions, ranking.cosines

    def ranking(self, queries: list[str], k: int, method: str | None = None, exclude: np.ndarray | None = None) -> Ranking:
        """The k best indexed questions of each query under `method` (default: the version's), with the score that ranks them.

        `exclude` (one index position per query, -1: none) leaves that question out of its query's first stages, as if
        it were not indexed: an indexed question asked as a query (an evaluation's) is not its own candidate.
        """
        method = method or self.default_method
        if method not in METHODS:
            raise QdupError(f"method: expected one of {list(METHODS)}, got {method!r}")
        if method == "reranked" and self.reranker is None:
            raise QdupError("method: 'reranked' needs a version exported with a pair reranker; this one has none")
        depth = max(k, HYBRID_DEPTH)
        extra = 0 if exclude is None else 1
        job: Future | None = None
        if method != "dense":
            job = _lexical_thread().submit(self.lexical.search, queries, (k if method == "lexical" else depth) + extra)
        try:
            vectors = self.encoder.encode_one(queries[0]) if len(queries) == 1 else self.encoder.encode(queries)
            if method == "dense":
                positions, cosines = _without(*self.index.search(vectors, k + extra), exclude, k)
                return Ranking(method, "cosine", positions, cosines, cosines)
            d_idx = _without(*self.index.search(vectors, depth + extra), exclude, depth)[0] if method != "lexical" else None
        except BaseException:
            if job is not None and not job.cancel():
                job.exception()  # never leave it running on the buffers of a ranking that failed
            raise
        l_idx, l_scores = _without(*job.result(), exclude, k if method == "lexical" else depth)
        if method == "lexical":
            ranked, scores = l_idx, l_scores
        elif method == "reranked" and self.search_reranker is not None:
            return self._search_reranked(queries, k, vectors, d_idx, l_idx)
        else:
            if method == "reranked":
                cands = candidate_union(d_idx, l_idx)
                ranked, scores = rank_with_scores(cands, self.reranker_scores(queries, cands, self._cosines(vectors, cands)), k)
            else:
                ranked, scores = self._hybrid(queries, vectors, d_idx, l_idx, k)
        return self._ranking(method, self.score_kind(method), vectors, ranked, scores, k)

    def _hybrid(self, queries: list[str], vectors: np.ndarray, d_idx: np.ndarray, l_idx: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """The hybrid's first k positions and their fused scores (the version's form and weight)."""
        cands = candidate_union(d_idx, l_idx)
        hybrid = self.defaults["hybrid"]
        lexical = None if hybrid["method"] == "rrf" else self.lexical.query_pair_scores(queries, cands)
        dense = None if hybrid["method"] == "rrf" else self._cosines(vectors, cands)
        fused = fused_scores(cands, d_idx, l_idx, dense, lexical, hybrid["method"], hybrid["weight"],
                             int(self.defaults.get("rrf_k", 60)))
        return rank_with_scores(cands, fused, k)

    def _search_reranked(self, queries: list[str], k: int, vectors: np.ndarray, d_idx: np.ndarray, l_idx: np.ndarray
                         ) -> Ranking:
        """The hybrid's first `depth` hits re-ordered by the search reranker; every hit scored by it, the hits after
        the first `depth` in the hybrid's order (their scores need not fall)."""
        depth = int(self.search_reranker.info.get("depth", RERANK_DEPTH))
        head = self._hybrid(queries, vectors, d_idx, l_idx, max(k, depth))[0]
        cosines = self._cosines(vectors, head)
        stage = FirstStage(head, d_idx, l_idx, cosines, self.lexical.query_pair_scores(queries, head))
        scores = search_scores(self.search_reranker, queries, self.index.texts, stage)
        positions, ordered = reorder_with_scores(head, scores, depth)
        return self._ranking("reranked", "search_reranker", vectors, positions, ordered, k)

    def _ranking(self, method: str, kind: str, vectors: np.ndarray, ranked: np.ndarray, scores: np.ndarray, k: int) -> Ranking:
        """The first k of ranked lists as a Ranking, padded to k columns (-1 positions, -inf scores)."""
        padded = np.full((len(ranked), k), -1, dtype=np.int64)
        padded[:, : min(k, ranked.shape[1])] = ranked[:, :k]
        top = np.full((len(ranked), k), -np.inf, dtype=np.float64)
        top[:, : min(k, scores.shape[1])] = scores[:, :k]
        return Ranking(method, kind, padded, top, self._cosines(vectors, padded))

    def _cosines(self, vectors: np.ndarray, positions: np.ndarray) -> np.ndarray:
        safe = np.where(positions >= 0, positions, 0)
        sims = np.einsum("nkd,nd->nk", self.index.embeddings[safe], vectors)
        return np.where(positions >= 0, np.clip(sims, -1.0, 1.0), -np.inf).astype(np.float32)

    def reranker_scores(self, queries: list[str], positions: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        """The reranker's score of each (query, indexed question at positions[i, j]) pair; -inf where positions is -1."""
        if self.reranker is None:
            raise QdupError("this version has no pair reranker")
        rows, cols = np.nonzero(positions >= 0)
        out = np.full(positions.shape, -np.inf, dtype=np.float64)
        if len(rows):
            texts = self.index.texts
            out[rows, cols] = self.reranker.score(
                [queries[r] for r in rows], [texts[int(positions[r, c])] for r, c in zip(rows, cols, strict=True)],
                cosines[rows, cols].astype(np.float64),
            )
        return out

    def duplicate_rule(self) -> dict[str, Any]:
        """How a hit is marked a duplicate: the reranker's score against its threshold, else the cosine against the version's."""
        if self.reranker is not None and self.reranker_decides:
            return {"by": "reranker_score", "threshold": float(self.reranker.threshold)}
        return {"by": "similarity", "threshold": float(self.encoder.threshold)}

    def describe(self) -> dict[str, Any]:
        """The default method, what its scores are, and the duplicate rule: the head of a search answer."""
        rule = self.duplicate_rule()
        return {"method": self.default_method, "score_kind": self.score_kind(), "duplicate_by": rule["by"],
                "duplicate_threshold": rule["threshold"]}

    def decide(self, ranking: Ranking, queries: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """Each hit's reranker score (None without a reranker; the ranking's own when it is reranked) and duplicate mark."""
        found = ranking.positions >= 0
        if self.reranker is None:
            return None, found & (ranking.cosines >= self.encoder.threshold)
        scores = ranking.scores if ranking.kind == "reranker" else self.reranker_scores(queries, ranking.positions, ranking.cosines)
        if not self.reranker_decides:
            return scores, found & (ranking.cosines >= self.encoder.threshold)
        return scores, found & (scores >= self.reranker.threshold)

    def search(self, queries: list[str], k: int, method: str | None = None) -> list[list[dict[str, Any]]]:
        """The k best indexed questions of each query, best first: id, question, `score` (what ranked them; `score_kind`
        names it), `similarity` (the encoder cosine), `duplicate` (reranker_score >= the reranker's threshold with a
        reranker, else similarity >= the version's threshold) and, with a reranker, `reranker_score`."""
        ranking = self.ranking(queries, k, method)
        rerank, duplicate = self.decide(ranking, queries)
        out = []
        for i in range(len(queries)):
            hits = []
            for j in range(k):
                p = int(ranking.positions[i, j])
                if p < 0:
                    continue
                hit = {"id": _plain(self.index.ids[p]), "question": self.index.texts[p], "score": float(ranking.scores[i, j]),
                       "score_kind": ranking.kind, "similarity": float(ranking.cosines[i, j])}
                if rerank is not None:
                    hit["reranker_score"] = float(rerank[i, j])
                hit["duplicate"] = bool(duplicate[i, j])
                hits.append(hit)
            out.append(hits)
        return out


def _without(positions: np.ndarray, scores: np.ndarray, exclude: np.ndarray | None, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranked lists with each row's `exclude` position removed (the rest moved up), cut to `width` columns."""
    if exclude is None:
        return positions, scores
    gone = positions == np.asarray(exclude)[:, None]
    order = np.argsort(gone, axis=1, kind="stable")
    return np.take_along_axis(positions, order, axis=1)[:, :width], np.take_along_axis(scores, order, axis=1)[:, :width]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# The searchers of the cached (index, encoder) pairs of this process (a worker's batch-search chunks share one).
_SEARCHERS: dict[tuple[int, int], VersionSearcher] = {}


def load_searcher_cached(index_dir: Path, model_dir: Path, model_version: str | None = None) -> VersionSearcher:
    """One searcher per loaded (index, model) per process: a worker's many batch-search chunks share it.

    The index and encoder come from their content-checked caches, so a rebuilt folder gives a new searcher.
    """
    from qdup.search.encoder import load_query_encoder_cached
    from qdup.search.index import load_index_cached

    index, encoder = load_index_cached(Path(index_dir), model_version), load_query_encoder_cached(Path(model_dir))
    searcher = _SEARCHERS.get((id(index), id(encoder)))
    if searcher is None or searcher.index is not index or searcher.encoder is not encoder:
        if len(_SEARCHERS) >= 8:
            _SEARCHERS.clear()
        searcher = _SEARCHERS[(id(index), id(encoder))] = searcher_for(index, encoder, Path(model_dir))
    return searcher


def load_version_searcher(version_dir: Path, version: str | None = None) -> VersionSearcher | None:
    """The searcher of the version in `version_dir` (hashes and model checked), or None when it has no index."""
    version_dir = Path(version_dir)
    where = find_index_dir(version_dir)
    if where is None:
        return None
    index = load_index(where, expected_model_version=version or version_dir.name)
    return searcher_for(index, load_query_encoder(version_dir / "model"), version_dir / "model")


def searcher_for(index: QuestionIndex, encoder: QueryEncoder, model_dir: Path) -> VersionSearcher:
    """A searcher of `index` with the version model in `model_dir`: its pair reranker (and whether it makes the
    duplicate decision, as the export records) and its search reranker, each hash-checked."""
    model_dir = Path(model_dir)
    reranker = load_version_reranker(model_dir)
    meta = read_json(model_dir / "threshold.json") if reranker is not None else {}
    decides = bool((meta.get("reranker") or {}).get("serves", True))
    return VersionSearcher(index, encoder, reranker, decides, load_version_search_reranker(model_dir, reranker, meta))


def load_version_reranker(model_dir: Path) -> Reranker | None:
    """The pair reranker exported in a version's `model/` (hash-checked), or None when the version has none."""
    return load_reranker(model_dir) if has_reranker(model_dir) else None
