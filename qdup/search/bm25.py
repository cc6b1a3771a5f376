"""The BM25 inverted index of lexical and hybrid search: built with the question index, saved in its folder, loaded."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdup.errors import QdupError
from qdup.search.topk import top_k_rows

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
# Lucene's defaults (tantivy's too, compared in bench/SEARCH.md).
BM25_PARAMS = {"k1": 1.2, "b": 0.75, "method": "lucene", "tokens": "lowercased \\w+ words, Snowball English stems"}


# Candidate generation reads at most this many postings of each query term (its highest-scoring ones) and scores
# exactly the best RESCORED_PER_RESULT per result asked for, at least MIN_RESCORED: chosen in bench/SEARCH.md, where
# the ranking quality at full size is measured beside the exact top k.
POSTINGS_PER_TERM = 2000
RESCORED_PER_RESULT = 4
MIN_RESCORED = 400


def _score_ordered(data: np.ndarray, term: np.ndarray) -> bool:
    """Whether each term's postings are in decreasing score order (a saved index is; a freshly built one is not)."""
    return bool(np.all((data[1:] <= data[:-1]) | (term[1:] != term[:-1])))


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

    Hand-written because bm25s's own `index` loops over documents in Python (slow on a large corpus) and numbers
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

    A query's top k (`_candidates`): each query term's `postings_per_term` highest-scoring postings (each term's postings
    are kept in decreasing score order, which bm25s's format allows: it only sums them) give the candidates, the best of
    them by those partial sums are scored exactly (a document-major copy of the scores), and the top k of those are
    returned with their exact scores. A term with no more postings than that is read whole, so the result is the exact
    top k whenever no query term has more; past that, a query's cost stays bounded whatever its words.
    """

    kind = BM25_KIND

    def __init__(self, retriever: Any, texts: Sequence[str], stem: bool = True, postings_per_term: int = POSTINGS_PER_TERM):
        scores = retriever.scores
        self.retriever = retriever
        self.texts = texts
        self._n = int(scores["num_docs"])
        self._vocab: dict[str, int] = retriever.vocab_dict
        self.stem = stem
        if postings_per_term < 1:
            raise QdupError(f"lexical index: postings_per_term must be at least 1, got {postings_per_term}")
        self.postings_per_term = int(postings_per_term)
        self._stem = _stemmer().stemWords if stem else _words
        self._local = threading.local()
        self._indptr = np.asarray(scores["indptr"], dtype=np.int64)
        if self._n != len(texts):
            raise QdupError(f"lexical index: {self._n} documents for a corpus of {len(texts)} questions")
        data, indices = np.asarray(scores["data"], dtype=np.float32), np.asarray(scores["indices"])
        if len(self._indptr) != len(self._vocab) + 1 or not self._indptr[-1] == len(data) == len(indices):
            raise QdupError(f"lexical index: {len(self._vocab)} terms, {len(self._indptr)} term offsets and "
                            f"{len(data)} postings do not fit together")
        term = np.repeat(np.arange(len(self._indptr) - 1, dtype=np.int32), np.diff(self._indptr))
        if not _score_ordered(data, term):
            # Each term's postings by decreasing score (ties by document): the prefix candidate generation reads. The
            # retriever keeps the same arrays, so a saved index is already in this order when loaded.
            order = np.lexsort((indices, -data, term))
            data, indices = data[order], indices[order]
            scores["data"], scores["indices"] = data, indices
        self._data, self._indices = data, indices.astype(np.int32, copy=False)
        # The same scores by document (CSR: each document's terms): exact scores of given documents.
        by_doc = np.argsort(self._indices, kind="stable")  # by document, each one's terms in term order
        self._doc_ptr = np.concatenate([[0], np.cumsum(np.bincount(self._indices, minlength=self._n))]).astype(np.int64)
        self._doc_terms, self._doc_scores = term[by_doc], data[by_doc]

    @classmethod
    def build(cls, texts: Sequence[str], stem: bool = True, postings_per_term: int = POSTINGS_PER_TERM) -> BM25Index:
        import bm25s

        if not len(texts):
            raise QdupError("lexical index: no texts")
        terms = _stemmer().stemWords if stem else _words
        retriever = bm25s.BM25(k1=BM25_PARAMS["k1"], b=BM25_PARAMS["b"], method=BM25_PARAMS["method"])
        tokens = [terms(_WORD.findall(t.lower())) for t in texts]
        retriever.scores, retriever.vocab_dict = bm25_matrix(tokens)
        retriever.nonoccurrence_array = None  # Lucene's BM25 has no score for absent terms (bm25s sets it so too)
        del tokens
        return cls(retriever, texts, stem, postings_per_term)

    def save(self, directory: Path) -> list[str]:
        """Write the index's files into `directory` (the question index's folder while it is written); their names."""
        if not self.stem:
            raise QdupError("lexical index: only the stemmed BM25 index is saved (the one load reads)")
        self.retriever.save(str(directory), show_progress=False, **BM25_FILES)
        return sorted(BM25_FILES.values())

    @classmethod
    def load(cls, directory: Path, texts: Sequence[str], postings_per_term: int = POSTINGS_PER_TERM) -> BM25Index:
        import bm25s

        retriever = bm25s.BM25.load(str(directory), mmap=False, load_corpus=False, show_progress=False, **BM25_FILES)
        return cls(retriever, texts, postings_per_term=postings_per_term)

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

    def _sum_postings(self, ids: np.ndarray, most: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The documents of the terms `ids`' postings (at most `most` per term, the highest-scoring; None: all), each
        once, with the sum of those postings' scores."""
        if not len(ids):
            return np.empty(0, np.int64), np.empty(0, np.float32)
        starts, ends = self._indptr[ids], self._indptr[ids + 1]
        if most is not None:
            ends = np.minimum(ends, starts + most)
        docs = np.concatenate([self._indices[a:z] for a, z in zip(starts, ends, strict=True)]).astype(np.int64)
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

    def _exact(self, ids: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """Sum over the terms `ids` (sorted, distinct) of each document's score in `docs`: each document's own terms
        (the document-major copy) matched against the query's."""
        starts, ends = self._doc_ptr[docs], self._doc_ptr[docs + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(len(docs)), lengths)
        at = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
        hit = np.isin(self._doc_terms[at], ids, assume_unique=False)
        return np.bincount(owner[hit], weights=self._doc_scores[at][hit], minlength=len(docs)).astype(np.float32)

    def scores(self, text: str) -> np.ndarray:
        """BM25 score of `text` against every corpus question (0 for those sharing no word)."""
        out = np.zeros(self._n, dtype=np.float32)
        docs, sums = self._sum_postings(self.token_ids(text), None)
        out[docs] = sums
        return out

    def _candidates(self, text: str, k: int, exclude: int) -> tuple[np.ndarray, np.ndarray]:
        """Documents holding the top k of `text` (never `exclude`), with their exact BM25 scores: the best
        `RESCORED_PER_RESULT * k` (at least `MIN_RESCORED`) by the sums of each term's first `postings_per_term`
        postings, scored exactly. Exact whenever no query term has more postings than that.

        Hand-written because the libraries' exact top k (tantivy's block-max WAND, MaxScore over bm25s's arrays) read
        most of the postings of a question's many common words ("how", "i", "the", "best": a sizeable share of the
        corpus each), so their cost grows with the corpus; this bounds a query's work by its number of words
        (impact-ordered postings read to a fixed depth, as in anytime ranking, Lin and Trotman 2015). bench/SEARCH.md
        measures its ranking quality beside the exact top k.
        """
        ids = self.token_ids(text)
        if not len(ids):
            return np.empty(0, np.int64), np.empty(0, np.float32)
        docs, sums = self._sum_postings(ids, self.postings_per_term)
        if exclude >= 0:
            keep = docs != exclude
            docs, sums = docs[keep], sums[keep]
        want = max(RESCORED_PER_RESULT * k, MIN_RESCORED)
        if len(docs) > want:
            docs = docs[np.argpartition(-sums, want - 1)[:want]]
        docs = np.sort(docs)
        return docs, self._exact(ids, docs)

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
            out[i] = np.where(row >= 0, self._exact(self.token_ids(text), docs)[back], -np.inf)
        return out

    def pair_scores(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """BM25 score of corpus question queries[i] with each candidates[i, j] (-1: none, scored -inf)."""
        return self.query_pair_scores([self.texts[int(q)] for q in queries], candidates)

    def describe(self) -> dict[str, Any]:
        """What the index manifest records of it."""
        import bm25s

        return {"kind": self.kind, "library": f"bm25s {bm25s.__version__}", **BM25_PARAMS, "documents": self._n,
                "vocabulary": len(self._vocab), "postings": int(len(self._data)),
                "top_k": f"each query term's {self.postings_per_term} best postings, the best candidates rescored exactly"}


# What builds the lexical side of a corpus: the retrieval evaluation and the question index use the same one.
build_lexical = BM25Index.build


def has_lexical_files(directory: Path) -> bool:
    """Whether a saved question index holds a lexical index (indexes built before it existed do not)."""
    return (Path(directory) / BM25_FILES["params_name"]).is_file()
