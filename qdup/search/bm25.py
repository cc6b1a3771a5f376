"""The BM25 inverted index of lexical and hybrid search: built with the question index, saved in its folder, loaded."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdup.errors import QdupError
from qdup.search.tantivy_topk import TANTIVY_B, TANTIVY_DIR, TANTIVY_K1, TantivyTopK
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
# k1 and b are tantivy's (fixed there), so the top k it finds (`TantivyTopK`) are this index's top k.
BM25_PARAMS = {"k1": TANTIVY_K1, "b": TANTIVY_B, "method": "lucene", "tokens": "lowercased \\w+ words, Snowball English stems"}


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

    `topk`: a tantivy index of the same tokens (`TantivyTopK`, built and saved with this one) that finds a query's top k
    by block-max WAND; the documents it finds are rescored here, exactly. Without it (an index saved before it existed),
    queries use MaxScore over this index's own arrays (`_candidates`).
    """

    kind = BM25_KIND

    def __init__(self, retriever: Any, texts: Sequence[str], stem: bool = True, topk: TantivyTopK | None = None):
        scores = retriever.scores
        self.retriever = retriever
        self.texts = texts
        self._data = np.asarray(scores["data"], dtype=np.float32)
        self._indices = np.asarray(scores["indices"], dtype=np.int64)
        self._indptr = np.asarray(scores["indptr"], dtype=np.int64)
        self._n = int(scores["num_docs"])
        self._vocab: dict[str, int] = retriever.vocab_dict
        self.stem = stem
        self.topk = topk
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
        tokens = [terms(_WORD.findall(t.lower())) for t in texts]
        retriever.scores, retriever.vocab_dict = bm25_matrix(tokens)
        retriever.nonoccurrence_array = None  # Lucene's BM25 has no score for absent terms (bm25s sets it so too)
        topk = TantivyTopK.build(tokens)
        del tokens
        topk.check(len(texts))
        return cls(retriever, texts, stem, topk)

    def save(self, directory: Path) -> list[str]:
        """Write the index's files into `directory` (the question index's folder while it is written); their names."""
        if not self.stem:
            raise QdupError("lexical index: only the stemmed BM25 index is saved (the one load reads)")
        self.retriever.save(str(directory), show_progress=False, **BM25_FILES)
        return sorted([*BM25_FILES.values(), *(self.topk.save(directory) if self.topk is not None else [])])

    @classmethod
    def load(cls, directory: Path, texts: Sequence[str]) -> BM25Index:
        import bm25s

        retriever = bm25s.BM25.load(str(directory), mmap=False, load_corpus=False, show_progress=False, **BM25_FILES)
        where = Path(directory) / TANTIVY_DIR
        return cls(retriever, texts, topk=TantivyTopK.open(where, len(texts)) if where.is_dir() else None)

    def __len__(self) -> int:
        return self._n

    def token_ids(self, text: str) -> np.ndarray:
        """The distinct vocabulary ids of a text's word stems (unknown words dropped)."""
        vocab = self._vocab
        return np.unique(np.fromiter((vocab[t] for t in self._stem(_WORD.findall(text.lower())) if t in vocab), dtype=np.int64))

    def _terms(self, ids: np.ndarray) -> list[str]:
        """The vocabulary's words of ids (what the tantivy index holds)."""
        if getattr(self, "_words_of", None) is None:
            words: list[str] = [""] * len(self._vocab)
            for word, i in self._vocab.items():
                words[i] = word
            self._words_of = words
        return [self._words_of[int(i)] for i in ids]

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

        With `topk`: the k documents tantivy's block-max WAND finds, rescored here. Without, MaxScore (Turtle and Flood
        1995): the query's terms in decreasing order of the most each can add; the documents
        of the first j terms are scored exactly (the other terms looked up in their postings); once the k-th best of
        them beats the most the remaining terms could give a document holding none of the first j, no other document
        can enter the top k. So a query reads the postings of its rare words, and of its common ones ("how", "i",
        "the": a third of a 537k corpus each) only the entries of those documents: exact, and far cheaper than
        adding every posting (bm25s's own retrieve scores and sorts every document).
        """
        ids = self.token_ids(text)
        if not len(ids):
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if self.topk is not None:
            found = self.topk.top(self._terms(ids), k + (exclude >= 0))
            docs = np.sort(found[found != exclude])
            return docs, self._term_scores(ids, docs)
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
                "vocabulary": len(self._vocab), "postings": int(len(self._data)),
                "top_k": f"block-max WAND, {TantivyTopK.library()}" if self.topk is not None else "MaxScore"}


# What builds the lexical side of a corpus: the retrieval evaluation and the question index use the same one.
build_lexical = BM25Index.build


def has_lexical_files(directory: Path) -> bool:
    """Whether a saved question index holds a lexical index (indexes built before it existed do not)."""
    return (Path(directory) / BM25_FILES["params_name"]).is_file()
