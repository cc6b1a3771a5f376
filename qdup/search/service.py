"""A published version's question index as a search service: dense, lexical, hybrid or reranked ranking of new queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdup.errors import QdupError
from qdup.evaluation.reranker import Reranker, has_reranker, load_reranker
from qdup.search.encoder import QueryEncoder, load_query_encoder
from qdup.search.index import MANIFEST, QuestionIndex, load_index
from qdup.search.lexical import LexicalIndex, candidate_union, rank_by, rrf_scores

METHODS = ("dense", "lexical", "hybrid", "reranked")
VERSION_INDEX_DIR = "index"
# Versions published without an index get one here, beside `versions/`, so a published version's files never change.
LATE_INDEXES_DIR = "indexes"
# Each side of a hybrid (and of the reranked method's candidates) ranks at least this many, as the retrieval evaluation
# does (SearchConfig.retrieval_k).
HYBRID_DEPTH = 100
WARM_QUERY = "How do I learn to cook?"


def late_index_dir(store_root: Path, version: str) -> Path:
    return Path(store_root) / LATE_INDEXES_DIR / version


def find_index_dir(version_dir: Path) -> Path | None:
    """The index of a version: published with it (`index/`), else built later into `<store>/indexes/<version>/`."""
    version_dir = Path(version_dir)
    for candidate in (version_dir / VERSION_INDEX_DIR, late_index_dir(version_dir.parent.parent, version_dir.name)):
        if (candidate / MANIFEST).is_file():
            return candidate
    return None


def search_defaults(index: QuestionIndex) -> dict[str, Any]:
    """The ranking an index's version chose (on its retrieval validation part); dense for an index without one."""
    return index.search_defaults or {"method": "dense", "hybrid": {"method": "rrf", "weight": None}, "rrf_k": 60}


@dataclass
class VersionSearcher:
    """One version's index, encoder and pair reranker (None: the version has none); ranks by `default_method` unless told otherwise.

    With a reranker, every hit carries its reranker score and the duplicate decision is the reranker's.
    """

    index: QuestionIndex
    encoder: QueryEncoder
    reranker: Reranker | None = None
    _lexical: LexicalIndex | None = field(default=None, repr=False)

    @property
    def defaults(self) -> dict[str, Any]:
        return search_defaults(self.index)

    @property
    def default_method(self) -> str:
        return self.defaults["method"]

    @property
    def lexical_ready(self) -> bool:
        """Whether the lexical side is fitted (by a first lexical or hybrid query, or by `warm`)."""
        return self._lexical is not None

    @property
    def lexical(self) -> LexicalIndex:
        # Fitted on first use only: dense search, the usual default, never pays for it.
        if self._lexical is None:
            self._lexical = LexicalIndex(self.index.texts, block_elements=self.index.cfg.block_elements)
        return self._lexical

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this version answers: `reranked` only with a pair reranker."""
        return tuple(m for m in METHODS if m != "reranked" or self.reranker is not None)

    def warm(self, methods: tuple[str, ...] | list[str] | None = None) -> None:
        """Answer a probe query with each method (default: the one `search` uses), so that the first real query is
        served at full speed: the lexical side is fitted here, and the encoder's graph traced."""
        for method in methods or (self.default_method,):
            self.rank([WARM_QUERY], 1, method)

    def rank(self, queries: list[str], k: int, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positions (n, k) of the best indexed questions (-1: none) and their cosine with each query under the encoder."""
        method = method or self.default_method
        if method not in METHODS:
            raise QdupError(f"method: expected one of {list(METHODS)}, got {method!r}")
        if method == "reranked" and self.reranker is None:
            raise QdupError("method: 'reranked' needs a version exported with a pair reranker; this one has none")
        vectors = self.encoder.encode_one(queries[0]) if len(queries) == 1 else self.encoder.encode(queries)
        if method == "dense":
            return self.index.search(vectors, k)
        depth = max(k, HYBRID_DEPTH)
        l_idx, _ = self.lexical.search(queries, k if method == "lexical" else depth)
        if method == "lexical":
            ranked = l_idx
        elif method == "reranked":
            d_idx, _ = self.index.search(vectors, depth)
            cands = candidate_union(d_idx, l_idx)
            ranked = rank_by(cands, self.reranker_scores(queries, cands, self._cosines(vectors, cands)), k)
        else:
            d_idx, _ = self.index.search(vectors, depth)
            cands = candidate_union(d_idx, l_idx)
            hybrid = self.defaults["hybrid"]
            if hybrid["method"] == "rrf":
                scores = rrf_scores(cands, d_idx, l_idx, int(self.defaults.get("rrf_k", 60)))
            else:
                weight = float(hybrid["weight"])
                present = cands >= 0
                dense = self._cosines(vectors, cands)
                lexical = self._lexical_cosines(queries, cands)
                scores = np.where(present, weight * dense + (1 - weight) * lexical, -np.inf)
            ranked = rank_by(cands, scores, k)
        padded = np.full((len(queries), k), -1, dtype=np.int64)
        padded[:, : ranked.shape[1]] = ranked[:, :k]
        return padded, self._cosines(vectors, padded)

    def _cosines(self, vectors: np.ndarray, positions: np.ndarray) -> np.ndarray:
        safe = np.where(positions >= 0, positions, 0)
        sims = np.einsum("nkd,nd->nk", self.index.embeddings[safe], vectors)
        return np.where(positions >= 0, sims, -np.inf).astype(np.float32)

    def _lexical_cosines(self, queries: list[str], positions: np.ndarray) -> np.ndarray:
        q = self.lexical.vectorizer.transform(queries)
        safe = np.where(positions >= 0, positions, 0)
        out = np.empty(positions.shape, dtype=np.float32)
        for i in range(len(queries)):
            out[i] = (self.lexical.matrix[safe[i]] @ q[i].T).toarray().ravel()
        return np.where(positions >= 0, out, 0.0)

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

    def search(self, queries: list[str], k: int, method: str | None = None) -> list[list[dict[str, Any]]]:
        """The k best indexed questions of each query: id, question, similarity (encoder cosine), best first.

        With a reranker, each hit also has `reranker_score` and `duplicate` (score >= the reranker's threshold).
        """
        positions, sims = self.rank(queries, k, method)
        scores = None if self.reranker is None else self.reranker_scores(queries, positions, sims)
        out = []
        for i, (row_pos, row_sim) in enumerate(zip(positions, sims, strict=True)):
            hits = []
            for j, (p, s) in enumerate(zip(row_pos, row_sim, strict=True)):
                if p < 0:
                    continue
                hit = {"id": _plain(self.index.ids[p]), "question": self.index.texts[p], "similarity": float(s)}
                if scores is not None:
                    hit["reranker_score"] = float(scores[i, j])
                    hit["duplicate"] = bool(scores[i, j] >= self.reranker.threshold)
                hits.append(hit)
            out.append(hits)
        return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# The searchers of the cached (index, encoder) pairs of this process, so that a hybrid's lexical index is fitted once.
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
        reranker = load_version_reranker(Path(model_dir))
        searcher = _SEARCHERS[(id(index), id(encoder))] = VersionSearcher(index, encoder, reranker)
    return searcher


def load_version_searcher(version_dir: Path, version: str | None = None) -> VersionSearcher | None:
    """The searcher of the version in `version_dir` (hashes and model checked), or None when it has no index."""
    version_dir = Path(version_dir)
    where = find_index_dir(version_dir)
    if where is None:
        return None
    index = load_index(where, expected_model_version=version or version_dir.name)
    return VersionSearcher(index, load_query_encoder(version_dir / "model"), load_version_reranker(version_dir / "model"))


def load_version_reranker(model_dir: Path) -> Reranker | None:
    """The pair reranker exported in a version's `model/` (hash-checked), or None when the version has none."""
    return load_reranker(model_dir) if has_reranker(model_dir) else None
