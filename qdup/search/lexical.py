"""Lexical retrieval (word BM25 inverted index, built with the question index; character n-gram TF-IDF as the old baseline)
and its fusion with dense retrieval (RRF, weighted sum)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

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

BM25_KIND = "bm25"
# The files of a saved BM25 index, beside the question index's own (bm25s's names, prefixed so that they say what they are).
BM25_FILES = {
    "data_name": "lexical_bm25.data.npy",
    "indices_name": "lexical_bm25.indices.npy",
    "indptr_name": "lexical_bm25.indptr.npy",
    "vocab_name": "lexical_bm25.vocab.json",
    "params_name": "lexical_bm25.params.json",
}
# Words: runs of letters and digits, lowercased, then Snowball's English stemmer (PyStemmer): "learning" finds "learn".
# Measured against no stemming and against tantivy's analyzers in bench/SEARCH.md.
_WORD = re.compile(r"\w+")
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene", "tokens": "lowercased \\w+ words, Snowball English stems"}


class Lexical(Protocol):
    """A lexical index of a corpus: what the retrieval evaluation and the search service both call."""

    kind: str

    def __len__(self) -> int: ...

    def search(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def pair_scores(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...

    def query_pair_scores(self, texts: Sequence[str], candidates: np.ndarray) -> np.ndarray: ...


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def _words(words: list[str]) -> list[str]:
    return words


def bm25_matrix(
    token_lists: Sequence[list[str]], k1: float = BM25_PARAMS["k1"], b: float = BM25_PARAMS["b"]
) -> tuple[dict[str, Any], dict[str, int]]:
    """bm25s's eager BM25 index of tokenised documents, built with whole-array operations: its `scores` arrays (CSC by
    term: data = each (term, document) pair's Lucene BM25 score, indices = documents, indptr) and vocabulary.

    Hand-written because bm25s's own `index` loops over documents in Python (35 s for 535k questions here) and numbers
    its vocabulary in set order, which changes with Python's string hashing; this gives the same scores (a test compares
    them with bm25s's) in a fraction of the time, with terms numbered in first-seen order, so a rebuild is identical.
    Like bm25s, the vocabulary ends with the empty token "" (no postings).
    """
    import pandas as pd

    n_docs = len(token_lists)
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=n_docs)
    flat = np.fromiter((tok for toks in token_lists for tok in toks), dtype=object, count=int(lengths.sum()))
    codes, uniques = pd.factorize(flat, sort=False)
    vocab = {str(t): i for i, t in enumerate(uniques)}
    vocab.setdefault("", len(vocab))
    n_terms = len(vocab)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    # (term, document) pairs with their term frequency, sorted by term then document: the CSC order.
    pairs, tf = np.unique(codes.astype(np.int64) * n_docs + doc, return_counts=True)
    term, doc = np.divmod(pairs, n_docs)
    df = np.bincount(term, minlength=n_terms)
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
    avg = lengths.mean() if n_docs else 0.0
    norm = k1 * (1 - b + b * lengths[doc] / avg) if avg > 0 else np.full(len(doc), k1)
    data = (idf[term] * tf / (norm + tf)).astype(np.float32)
    indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
    return {"data": data, "indices": doc.astype(np.int32), "indptr": indptr, "num_docs": n_docs}, vocab


class BM25Index:
    """Okapi BM25 (Lucene's variant) over word stems: an inverted index of precomputed term scores (bm25s's eager sparse
    matrix, CSC by term, saved and loaded with bm25s), built once with the question index, saved beside it and loaded,
    never fitted on a request.

    `texts` are the corpus questions (kept by reference, for `search_positions`). `stem=False` (words as they are) exists
    for the comparison in bench/SEARCH.md only; such an index is not saved.
    """

    kind = BM25_KIND

    def __init__(self, retriever: Any, texts: Sequence[str], stem: bool = True):
        scores = retriever.scores
        self.retriever = retriever
        self.texts = texts
        self._data = np.asarray(scores["data"], dtype=np.float32)
        self._indices = np.asarray(scores["indices"], dtype=np.int64)
        self._indptr = np.asarray(scores["indptr"], dtype=np.int64)
        self._n = int(scores["num_docs"])
        self._vocab: dict[str, int] = retriever.vocab_dict
        self.stem = stem
        self._stem = _stemmer().stemWords if stem else _words
        self._local = threading.local()
        # Each term's highest score in any document: what it can add at most (MaxScore pruning in `_candidates`).
        self._max = np.zeros(len(self._indptr) - 1, dtype=np.float32)
        filled = np.flatnonzero(np.diff(self._indptr) > 0)
        if len(filled):
            self._max[filled] = np.maximum.reduceat(self._data, self._indptr[filled])
        if self._n != len(texts):
            raise QdupError(f"lexical index: {self._n} documents for a corpus of {len(texts)} questions")
        if len(self._indptr) != len(self._vocab) + 1 or not self._indptr[-1] == len(self._data) == len(self._indices):
            raise QdupError(f"lexical index: {len(self._vocab)} terms, {len(self._indptr)} term offsets and "
                            f"{len(self._data)} postings do not fit together")

    @classmethod
    def build(cls, texts: Sequence[str], stem: bool = True) -> BM25Index:
        import bm25s

        if not len(texts):
            raise QdupError("lexical index: no texts")
        terms = _stemmer().stemWords if stem else _words
        retriever = bm25s.BM25(k1=BM25_PARAMS["k1"], b=BM25_PARAMS["b"], method=BM25_PARAMS["method"])
        retriever.scores, retriever.vocab_dict = bm25_matrix([terms(_WORD.findall(t.lower())) for t in texts])
        retriever.nonoccurrence_array = None  # Lucene's BM25 has no score for absent terms (bm25s sets it so too)
        return cls(retriever, texts, stem)

    def save(self, directory: Path) -> list[str]:
        """Write the index's files into `directory` (the question index's folder while it is written); their names."""
        if not self.stem:
            raise QdupError("lexical index: only the stemmed BM25 index is saved (the one load reads)")
        self.retriever.save(str(directory), show_progress=False, **BM25_FILES)
        return sorted(BM25_FILES.values())

    @classmethod
    def load(cls, directory: Path, texts: Sequence[str]) -> BM25Index:
        import bm25s

        retriever = bm25s.BM25.load(str(directory), mmap=False, load_corpus=False, show_progress=False, **BM25_FILES)
        return cls(retriever, texts)

    def __len__(self) -> int:
        return self._n

    def token_ids(self, text: str) -> np.ndarray:
        """The distinct vocabulary ids of a text's word stems (unknown words dropped)."""
        vocab = self._vocab
        return np.unique(np.fromiter((vocab[t] for t in self._stem(_WORD.findall(text.lower())) if t in vocab), dtype=np.int64))

    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        # Per thread (searches may run on several): a score accumulator kept at zero between queries, and a scratch
        # array that marks one posting per document.
        local = self._local
        if getattr(local, "acc", None) is None:
            local.acc = np.zeros(self._n, dtype=np.float32)
            local.mark = np.zeros(self._n, dtype=np.int64)
        return local.acc, local.mark

    def _postings(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The documents holding any of the terms `ids` (each once) and the sum of those terms' scores in each."""
        if not len(ids):
            return np.empty(0, np.int64), np.empty(0, np.float32)
        starts, ends = self._indptr[ids], self._indptr[ids + 1]
        docs = np.concatenate([self._indices[a:z] for a, z in zip(starts, ends, strict=True)])
        vals = np.concatenate([self._data[a:z] for a, z in zip(starts, ends, strict=True)])
        acc, mark = self._buffers()
        np.add.at(acc, docs, vals)
        # Every document once: the last posting written for it marks it.
        order = np.arange(len(docs))
        mark[docs] = order
        unique = docs[mark[docs] == order]
        sums = acc[unique]
        acc[docs] = 0.0
        return unique, sums

    def _term_scores(self, ids: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """Sum over the terms `ids` of each document's score in `docs` (sorted, distinct): each term's postings
        (sorted by document) searched for the documents, or, when the documents are many next to the postings,
        the postings spread into the accumulator and read back (whichever touches fewer entries)."""
        total = np.zeros(len(docs), dtype=np.float32)
        acc, _ = self._buffers()
        for t in ids:
            a, z = int(self._indptr[t]), int(self._indptr[t + 1])
            if z == a:
                continue
            seg = self._indices[a:z]
            if len(docs) * np.log2(z - a + 1) < 4 * (z - a):
                at = np.minimum(np.searchsorted(seg, docs), len(seg) - 1)
                total += np.where(seg[at] == docs, self._data[a + at], 0.0).astype(np.float32)
            else:
                acc[seg] = self._data[a:z]
                total += acc[docs]
                acc[seg] = 0.0
        return total

    def scores(self, text: str) -> np.ndarray:
        """BM25 score of `text` against every corpus question (0 for those sharing no word)."""
        out = np.zeros(self._n, dtype=np.float32)
        docs, sums = self._postings(self.token_ids(text))
        out[docs] = sums
        return out

    def _candidates(self, text: str, k: int, exclude: int) -> tuple[np.ndarray, np.ndarray]:
        """Documents that surely hold the top k of `text` (never `exclude`), with their exact BM25 scores.

        MaxScore (Turtle and Flood 1995): the query's terms in decreasing order of the most each can add; the documents
        of the first j terms are scored exactly (the other terms looked up in their postings); once the k-th best of
        them beats the most the remaining terms could give a document holding none of the first j, no other document
        can enter the top k. So a query reads the postings of its rare words, and of its common ones ("how", "i",
        "the": a third of a 537k corpus each) only the entries of those documents: exact, and far cheaper than
        adding every posting (bm25s's own retrieve scores and sorts every document).
        """
        ids = self.token_ids(text)
        if not len(ids):
            return np.empty(0, np.int64), np.empty(0, np.float32)
        ids = ids[np.argsort(-self._max[ids], kind="stable")]
        # rest[j]: the most the terms after the first j + 1 can add to one document.
        rest = np.concatenate([np.cumsum(self._max[ids][::-1])[::-1][1:], [0.0]])
        for j in range(1, len(ids) + 1):
            docs, sums = self._postings(ids[:j])
            if exclude >= 0:
                keep = docs != exclude
                docs, sums = docs[keep], sums[keep]
            if j < len(ids) and len(docs) >= k:
                kth = np.partition(sums, len(sums) - k)[len(sums) - k]
                # The other terms only raise these k scores; a document outside them scores at most rest[j - 1], and so
                # does one of them that, given every remaining term, would still stay below the k-th.
                if kth > rest[j - 1]:
                    keep = sums + rest[j - 1] >= kth
                    docs, sums = docs[keep], sums[keep]
                    order = np.argsort(docs)  # sorted lookups walk each posting list once
                    docs, sums = docs[order], sums[order]
                    return docs, sums + self._term_scores(ids[j:], docs)
        return docs, sums

    def _top(self, text: str, k: int, exclude: int = -1) -> tuple[np.ndarray, np.ndarray]:
        docs, sums = self._candidates(text, k, exclude)
        idx = np.full(k, -1, dtype=np.int64)
        top = np.full(k, -np.inf, dtype=np.float32)
        if len(docs):
            # Ties by lower position, as everywhere in search: sort the survivors by (score desc, position).
            order, best = top_k_rows(sums[None, :], min(k, len(docs)))
            found = docs[order[0]]
            tie = np.lexsort((found, -best[0]))
            idx[: len(found)] = found[tie]
            top[: len(found)] = best[0][tie]
        return idx, top

    def search(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k corpus positions and BM25 scores of new query texts (-1 / -inf: fewer than k share a word)."""
        out = [self._top(t, k) for t in texts]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for corpus questions used as queries, each query left out of its own results."""
        out = [self._top(self.texts[int(q)], k, int(q)) for q in queries]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])

    def query_pair_scores(self, texts: Sequence[str], candidates: np.ndarray) -> np.ndarray:
        """BM25 score of query text i with each corpus position candidates[i, j] (-1: none, scored -inf; 0: no word shared)."""
        out = np.full(candidates.shape, -np.inf, dtype=np.float32)
        for i, text in enumerate(texts):
            row = candidates[i]
            docs, back = np.unique(np.where(row >= 0, row, 0), return_inverse=True)
            out[i] = np.where(row >= 0, self._term_scores(self.token_ids(text), docs)[back], -np.inf)
        return out

    def pair_scores(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """BM25 score of corpus question queries[i] with each candidates[i, j] (-1: none, scored -inf)."""
        return self.query_pair_scores([self.texts[int(q)] for q in queries], candidates)

    def describe(self) -> dict[str, Any]:
        """What the index manifest records of it."""
        import bm25s

        return {"kind": self.kind, "library": f"bm25s {bm25s.__version__}", **BM25_PARAMS, "documents": self._n,
                "vocabulary": len(self._vocab), "postings": int(len(self._data))}


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


# What builds the lexical side of a corpus: the retrieval evaluation and the question index use the same one.
LexicalBuilder = Callable[[Sequence[str]], Lexical]
build_lexical: LexicalBuilder = BM25Index.build


def has_lexical_files(directory: Path) -> bool:
    """Whether a saved question index holds a lexical index (indexes built before it existed do not)."""
    return (Path(directory) / BM25_FILES["params_name"]).is_file()


def candidate_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the distinct positions of two ranked lists (-1 padding), sorted, duplicates and gaps as -1."""
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    repeat = np.zeros_like(both, dtype=bool)
    repeat[:, 1:] = both[:, 1:] == both[:, :-1]
    both[repeat] = -1
    return both


def _rank_of(candidates: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """1-based rank of each candidate in its row's ranked list, 0 where absent."""
    # One (rows, candidates, ranked) comparison: a few hundred by a hundred per row, cheaper than a dict per row.
    same = (candidates[:, :, None] == ranked[:, None, :]) & (candidates[:, :, None] >= 0)
    return np.where(same.any(axis=2), same.argmax(axis=2) + 1, 0).astype(np.int64)


def rrf_scores(candidates: np.ndarray, dense_idx: np.ndarray, lexical_idx: np.ndarray, rrf_k: int) -> np.ndarray:
    """Reciprocal rank fusion: sum over the two lists of 1 / (rrf_k + rank); absent from a list adds 0."""
    total = np.zeros(candidates.shape, dtype=np.float64)
    for ranked in (dense_idx, lexical_idx):
        rank = _rank_of(candidates, ranked)
        total += np.where(rank > 0, 1.0 / (rrf_k + rank), 0.0)
    return np.where(candidates >= 0, total, -np.inf)


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
    safe = np.where(candidates >= 0, candidates, 0)
    sims = np.einsum("nkd,nd->nk", embeddings[safe], embeddings[queries])
    return np.where(candidates >= 0, sims, -np.inf).astype(np.float32)


def _runs(split_part: QuerySet, embeddings: np.ndarray, lexical: Lexical, k: int) -> dict[str, np.ndarray]:
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


def _hybrid(run: dict[str, np.ndarray], method: str, weight: float | None, rrf_k: int, k: int) -> np.ndarray:
    cands = run["candidates"]
    scores = fused_scores(cands, run["dense"], run["lexical"], run["dense_scores"], run["lexical_scores"], method, weight, rrf_k)
    return rank_by(cands, scores, k)


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
    lexical_builder: LexicalBuilder | None = None,
) -> dict[str, Any]:
    """Lexical, dense and hybrid retrieval on the same split; the hybrid's form and weight chosen on validation.

    `embeddings[i]` is the unit encoding of split.corpus[i]. Hybrid candidates are the union of both top-k
    lists, rescored by `fused_scores` (RRF, or weight * dense cosine + (1 - weight) * normalised lexical score), weight on
    a grid of cfg.hybrid_weight_step. The lexical side is `lexical_builder` (default `build_lexical`: the BM25 index the
    question index is built with, so what is chosen here is what search serves). Validation alone chooses the hybrid and the best method; test is only reported.

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
    lexical = (lexical_builder or build_lexical)(split.corpus)
    val, test = _runs(split.val, embeddings, lexical, k), _runs(split.test, embeddings, lexical, k)
    options: list[tuple[str, float | None]] = [("rrf", None)]
    steps = round(1.0 / cfg.hybrid_weight_step)
    options += [("weighted", round(i / steps, 6)) for i in range(steps + 1)]
    tried = []
    for method, weight in options:
        m = ranking_metrics(_hybrid(val, method, weight, cfg.rrf_k, k), split.val.relevant)
        tried.append({"method": method, "weight": weight, select_metric: m[select_metric]})
    best = max(tried, key=lambda t: t[select_metric])  # first best wins ties: RRF, then lower weights
    method, weight = best["method"], best["weight"]
    result: dict[str, Any] = {"select_metric": select_metric, "hybrid_grid": tried}
    for name, rank_val, rank_test in (
        ("lexical", val["lexical"], test["lexical"]),
        ("dense", val["dense"], test["dense"]),
        ("hybrid", _hybrid(val, method, weight, cfg.rrf_k, k), _hybrid(test, method, weight, cfg.rrf_k, k)),
    ):
        result[name] = {
            "val": ranking_metrics(rank_val, split.val.relevant),
            "test": ranking_metrics(rank_test, split.test.relevant),
        }
    result["hybrid"]["method"] = method
    result["hybrid"]["weight"] = weight
    result["lexical_index"] = lexical.kind
    result["best"] = max(("lexical", "dense", "hybrid"), key=lambda n: result[n]["val"][select_metric])
    if rerank is not None:
        ranked = {part_name: {
            "lexical": run["lexical"], "dense": run["dense"], "hybrid": _hybrid(run, method, weight, cfg.rrf_k, k),
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
