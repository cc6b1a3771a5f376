"""The reranker's pair features: encoder cosine, character TF-IDF, word overlap, BM25 and length features.

A `PairFeaturizer` holds the statistics fitted on the `train` split's questions only (the lexical baseline's
character n-gram TF-IDF, word document frequencies for BM25), and computes the features of any batch of pairs.
"""

from __future__ import annotations

import functools
import math
import operator
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import csr_array
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

from qdup.errors import QdupError
from qdup.evaluation.baseline import fit_char_tfidf
from qdup.text import standardize

FEATURE_NAMES = (
    "encoder_cosine",
    "char_tfidf_cosine",
    "word_jaccard",
    "idf_weighted_jaccard",
    "shared_tokens",
    "shared_share_of_shorter",
    "bm25_max",
    "bm25_min",
    "bm25_max_normalised",
    "tokens_min",
    "tokens_max",
    "tokens_abs_diff",
    "tokens_ratio",
    "chars_abs_diff",
    "chars_ratio",
    "digit_tokens_differ",
    "same_first_word",
)
# Okapi BM25 constants (Robertson & Zaragoza's usual choice, also rank_bm25's and Lucene's defaults).
BM25_K1 = 1.2
BM25_B = 0.75
# Pairs whose features are computed at once (features_and_same): bounds the per-entry temporaries near 300 MB.
FEATURE_BLOCK = 16_384


def standard_tokens(text: str) -> list[str]:
    """The question's words as the vocabulary sees them (`qdup.text.standardize`, plain Python: features are
    computed for tens of thousands of pairs per query batch, without TensorFlow)."""
    return standardize(text)


_IS_NOT_NONE = functools.partial(operator.is_not, None)
# Entries each cache of a PairFeaturizer may hold before it is emptied: a server scores unbounded streams of new questions.
CACHE_LIMIT = 200_000


def _ratio(num: np.ndarray, den: np.ndarray, where: np.ndarray, otherwise: float) -> np.ndarray:
    out = np.full(len(num), otherwise, dtype=np.float64)
    return np.divide(num, den, out=out, where=where)


def _fsums(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """math.fsum of each CSR row's values (exactly rounded: independent of order)."""
    flat, bounds = values.tolist(), indptr.tolist()
    return np.fromiter((math.fsum(flat[s:e]) for s, e in zip(bounds[:-1], bounds[1:], strict=True)), dtype=np.float64,
                       count=len(bounds) - 1)


def _segments(pair: np.ndarray, n: int) -> np.ndarray:
    """CSR row pointers of entries sorted by pair (0..n-1)."""
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair, minlength=n), out=ptr[1:])
    return ptr


def _row_entries(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, entry position) of every entry of CSR row rows[k], k after k, each row's entries in order."""
    lens = indptr[rows + 1] - indptr[rows]
    pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens - indptr[rows], lens)
    return np.repeat(np.arange(len(rows)), lens), pos


@dataclass(frozen=True)
class _PairedRows:
    """The entries of CSR rows a[k] and b[k] (sorted column indices) for each pair k, and the columns both hold.

    Numpy on the flat arrays: scipy's row indexing and element-wise products validate their input on each call, which
    costs more than a small batch's whole computation.
    """

    pair_a: np.ndarray  # pair of each entry of the a rows, pair after pair
    pos_a: np.ndarray  # its position in the matrix's data
    pair_b: np.ndarray
    pos_b: np.ndarray
    hit_a: np.ndarray  # a's entries whose column b holds too
    hit_b: np.ndarray  # b's entries whose column a holds too
    match: np.ndarray  # for each a entry in hit_a, the index (into pair_b/pos_b) of b's entry of that column

    @classmethod
    def of(cls, indptr: np.ndarray, indices: np.ndarray, a: np.ndarray, b: np.ndarray) -> _PairedRows:
        pair_a, pos_a = _row_entries(indptr, a)
        pair_b, pos_b = _row_entries(indptr, b)
        width = int(indices.max(initial=0)) + 1
        key_a = pair_a * width + indices[pos_a]
        key_b = pair_b * width + indices[pos_b]  # ascending: pair after pair, columns sorted
        at = np.minimum(np.searchsorted(key_b, key_a), max(len(key_b) - 1, 0))
        hit_a = key_b[at] == key_a if len(key_b) else np.zeros(len(key_a), dtype=bool)
        hit_b = np.zeros(len(key_b), dtype=bool)
        hit_b[at[hit_a]] = True
        return cls(pair_a, pos_a, pair_b, pos_b, hit_a, hit_b, at[hit_a])


@dataclass(frozen=True)
class _Bm25:
    """Okapi BM25 between a batch's distinct questions: their token codes in order, and each (question, token) weight.

    `scores` adds one weight per query token occurrence, in query order: the same additions in the same order as a
    per-pair loop, so the sums equal its to the last bit (a saved reranker's trees compare features with thresholds
    that are training features themselves).
    """

    codes: np.ndarray  # token codes of every question, question after question
    starts: np.ndarray  # question u's codes are codes[starts[u]:starts[u + 1]]
    keys: np.ndarray  # question * n_terms + token code of each weight, ascending
    weights: np.ndarray
    n_terms: int

    def scores(self, query: np.ndarray, doc: np.ndarray) -> np.ndarray:
        """BM25 of question doc[k] for question query[k], for each k."""
        pair, pos = _row_entries(self.starts, query)
        key = doc[pair] * self.n_terms + self.codes[pos]
        at = np.minimum(np.searchsorted(self.keys, key), max(len(self.keys) - 1, 0))
        found = self.keys[at] == key if len(self.keys) else np.zeros(len(key), dtype=bool)
        # bincount adds each pair's weights in array order (its query's token order), as the per-pair loop does.
        return np.bincount(pair[found], weights=self.weights[at[found]], minlength=len(query)).astype(np.float64)


@dataclass
class PairFeaturizer:
    """Lexical statistics of the training questions, and the features of any question pair.

    Features are computed for a whole batch at once: each distinct question is tokenised and TF-IDF-transformed
    once (words and questions seen before come from bounded caches), then every pair feature is an array operation
    over the pairs on per-question entries (TF-IDF rows, distinct tokens with counts and BM25 weights, token codes in
    order). The sums are made in the same order as the per-pair definitions make them, so the features are the same
    floats: tests/evaluation/test_reranker.py compares them, bit for bit, with a per-pair implementation.
    """

    tfidf: TfidfVectorizer
    bm25_idf: dict[str, float]
    bm25_unseen_idf: float
    bm25_avgdl: float
    documents: int
    _tokens: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _word_ngrams: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v = self.tfidf
        if (v.analyzer != "char_wb" or v.preprocessor is not None or v.strip_accents is not None or v.binary
                or v.input != "content" or v.norm != "l2" or not v.use_idf):
            raise QdupError(
                f"reranker TF-IDF: analyzer={v.analyzer!r} preprocessor={v.preprocessor!r} strip_accents={v.strip_accents!r} "
                f"binary={v.binary} input={v.input!r} norm={v.norm!r} use_idf={v.use_idf}; the featurizer computes "
                "L2-normalised TF-IDF of plain char_wb n-grams of str only")
        # char_wb n-grams never cross whitespace: a question's n-gram counts are the sum of its words' (the vectoriser
        # splits its lowercased text with str.split, after collapsing whitespace runs that str.split treats alike), so
        # each distinct word is analysed once (by scikit-learn's own analyser, lowercasing already done) and cached as
        # its known n-grams' column ids.
        self._analyze_word = TfidfVectorizer(analyzer="char_wb", ngram_range=v.ngram_range, lowercase=False).build_analyzer()

    def _question_tokens(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        cache = self._tokens
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        out = []
        for text in texts:
            got = cache.get(text)
            if got is None:
                # Tuples of strings: the garbage collector stops tracking them, so a full cache costs it nothing.
                got = cache[text] = tuple(standard_tokens(text))
            out.append(got)
        return out

    def _ngram_ids(self, word: str) -> bytes:
        """The column ids (C ints) of the known n-grams of `word`, in the analyser's order; cached."""
        ids = filter(_IS_NOT_NONE, map(self.tfidf.vocabulary_.get, self._analyze_word(word)))
        got = self._word_ngrams[word] = array("i", ids).tobytes()
        return got

    def tfidf_rows(self, texts: Sequence[str]) -> csr_array:
        """The TF-IDF vectors (L2-normalised CSR rows, as `self.tfidf.transform(texts)`) of `texts`."""
        cache = self._word_ngrams
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        lower = self.tfidf.lowercase
        docs = []
        for text in texts:
            words = (text.lower() if lower else text).split()
            ids = [cache.get(w) for w in words]
            if None in ids:
                ids = [cache.get(w) or self._ngram_ids(w) for w in words]
            docs.append(b"".join(ids))
        width = np.dtype(np.intc).itemsize
        indptr = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, docs), dtype=np.int64, count=len(docs)) // width, out=indptr[1:])
        indices = np.frombuffer(b"".join(docs), dtype=np.intc)
        counts = csr_array((np.ones(len(indices)), indices, indptr), shape=(len(docs), len(self.tfidf.vocabulary_)))
        counts.sum_duplicates()
        # TfidfTransformer.transform's steps, with its own numpy operations and L2 normalisation, so the rows equal
        # TfidfVectorizer.transform's bit for bit; without its input validation, which costs more than a small batch.
        if self.tfidf.sublinear_tf:
            np.log(counts.data, out=counts.data)
            counts.data += 1.0
        counts.data *= self.tfidf.idf_[counts.indices]
        inplace_csr_row_normalize_l2(counts)
        return counts

    def features(self, q1: Sequence[str], q2: Sequence[str], cosine: Sequence[float] | np.ndarray) -> np.ndarray:
        """(n, len(FEATURE_NAMES)) float64 features; symmetric in the two questions."""
        return self.features_and_same(q1, q2, cosine)[0]

    def features_and_same(
        self, q1: Sequence[str], q2: Sequence[str], cosine: Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`features`, and whether each pair's questions have the same non-empty tokens in the same order."""
        cos = np.asarray(cosine, dtype=np.float64)
        if not (len(q1) == len(q2) == len(cos)):
            raise QdupError(f"reranker features: {len(q1)} question1, {len(q2)} question2 and {len(cos)} cosines")
        if len(cos) <= FEATURE_BLOCK:
            return self._block_features(q1, q2, cos)
        # By blocks of pairs: a pair's features depend on that pair alone, and the per-entry arrays of every pair's
        # TF-IDF rows at once set the rerank stage's peak memory at full size (memray).
        q1, q2 = list(q1), list(q2)
        parts = [self._block_features(q1[a : a + FEATURE_BLOCK], q2[a : a + FEATURE_BLOCK], cos[a : a + FEATURE_BLOCK])
                 for a in range(0, len(cos), FEATURE_BLOCK)]
        return np.concatenate([x for x, _ in parts]), np.concatenate([same for _, same in parts])

    def _block_features(self, q1: Sequence[str], q2: Sequence[str], cos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(q1)
        out = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float64)
        if not n:
            return out, np.zeros(0, dtype=bool)
        slot: dict[str, int] = {}
        i1 = np.fromiter((slot.setdefault(q, len(slot)) for q in q1), dtype=np.int64, count=n)
        i2 = np.fromiter((slot.setdefault(q, len(slot)) for q in q2), dtype=np.int64, count=n)
        texts = list(slot)
        u = len(texts)
        out[:, 0] = cos

        x = self.tfidf_rows(texts)
        # Rows are L2-normalised: the cosine is the row-wise dot product, summed as tfidf_pair_cosines's scipy calls sum
        # it (x[i1].multiply(x[i2]).sum(axis=1): the non-zero products in column order, np.add.reduceat per row).
        px = _PairedRows.of(x.indptr, x.indices, i1, i2)
        prod = x.data[px.pos_a[px.hit_a]] * x.data[px.pos_b[px.match]]
        nonzero = prod != 0
        prod, pair = prod[nonzero], px.pair_a[px.hit_a][nonzero]
        cosines = np.zeros(n, dtype=np.float64)
        if len(prod):
            first_of_pair = np.flatnonzero(np.concatenate([[True], pair[1:] != pair[:-1]]))
            cosines[pair[first_of_pair]] = np.add.reduceat(prod, first_of_pair)
        out[:, 1] = np.clip(cosines, 0.0, 1.0)

        # Each distinct question's standardised tokens: codes in order, and distinct codes (ascending) with counts.
        toks = self._question_tokens(texts)
        n_tok = np.fromiter(map(len, toks), dtype=np.int64, count=u)
        term_of: dict[str, int] = {}
        codes = np.fromiter((term_of.setdefault(t, len(term_of)) for ts in toks for t in ts), dtype=np.int64,
                            count=int(n_tok.sum()))
        terms = list(term_of)
        n_terms = max(len(terms), 1)
        idf = np.fromiter((self.bm25_idf.get(t, self.bm25_unseen_idf) for t in terms), dtype=np.float64, count=len(terms))
        has_digit = np.fromiter((not t.isalpha() and any(c.isdigit() for c in t) for t in terms), dtype=np.float64,
                                count=len(terms))
        starts = np.zeros(u + 1, dtype=np.int64)
        np.cumsum(n_tok, out=starts[1:])
        first = np.full(u, -1, dtype=np.int64)  # each question's first token, -1 for none
        first[n_tok > 0] = codes[starts[:-1][n_tok > 0]]
        keys, tf = np.unique(np.repeat(np.arange(u) * n_terms, n_tok) + codes, return_counts=True)
        row, term = keys // n_terms, keys % n_terms
        distinct = np.bincount(row, minlength=u)
        term_ptr = np.zeros(u + 1, dtype=np.int64)
        np.cumsum(distinct, out=term_ptr[1:])
        digits = np.bincount(row, weights=has_digit[term], minlength=u)
        # Okapi BM25 weight of each (question as document, token): idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl)),
        # in the order of operations of the per-pair definition, so that each weight is the same float.
        norm = BM25_K1 * (1 - BM25_B + BM25_B * n_tok / self.bm25_avgdl)
        tf = tf.astype(np.float64)
        bm25 = _Bm25(codes, starts, keys, idf[term] * tf * (BM25_K1 + 1) / (tf + norm[row]), n_terms)

        pt = _PairedRows.of(term_ptr, term, i1, i2)
        shared_terms = term[pt.pos_a[pt.hit_a]]
        shared_pair = pt.pair_a[pt.hit_a]
        shared = np.bincount(shared_pair, minlength=n).astype(np.float64)
        na, nb = distinct[i1], distinct[i2]
        union = na + nb - shared
        out[:, 2] = _ratio(shared, union, union > 0, 0.0)
        # math.fsum: exactly rounded, so the sum over a set depends neither on its order nor on the pair's.
        idf_shared = _fsums(idf[shared_terms], _segments(shared_pair, n))
        union_pair = np.concatenate([pt.pair_a, pt.pair_b[~pt.hit_b]])
        order = np.argsort(union_pair, kind="stable")
        union_terms = term[np.concatenate([pt.pos_a, pt.pos_b[~pt.hit_b]])[order]]
        idf_union = _fsums(idf[union_terms], _segments(union_pair, n))
        out[:, 3] = _ratio(idf_shared, idf_union, idf_union > 0, 0.0)
        out[:, 4] = shared
        out[:, 5] = _ratio(shared, np.minimum(na, nb), (na > 0) & (nb > 0), 0.0)
        ab, ba = bm25.scores(i1, i2), bm25.scores(i2, i1)
        out[:, 6], out[:, 7] = np.maximum(ab, ba), np.minimum(ab, ba)
        # Normalised by each question's score against itself, so long questions do not dominate.
        own = bm25.scores(np.arange(u), np.arange(u))
        selfs = np.maximum(own[i1], own[i2])
        out[:, 8] = _ratio(out[:, 6], selfs, selfs > 0, 0.0)
        la, lb = n_tok[i1], n_tok[i2]
        out[:, 9], out[:, 10] = np.minimum(la, lb), np.maximum(la, lb)
        out[:, 11] = np.abs(la - lb)
        out[:, 12] = _ratio(out[:, 9], out[:, 10], out[:, 10] > 0, 1.0)
        chars = np.fromiter(map(len, texts), dtype=np.int64, count=u)
        ca, cb = chars[i1], chars[i2]
        lo, hi = np.minimum(ca, cb), np.maximum(ca, cb)
        out[:, 13] = hi - lo
        out[:, 14] = _ratio(lo, hi, hi > 0, 1.0)
        # The sets of digit-bearing tokens differ unless both hold as many as they share.
        da, db = digits[i1], digits[i2]
        digits_shared = np.bincount(shared_pair, weights=has_digit[shared_terms], minlength=n)
        out[:, 15] = ((da != db) | (digits_shared != da)).astype(np.float64)
        out[:, 16] = ((first[i1] >= 0) & (first[i1] == first[i2])).astype(np.float64)

        sequence: dict[tuple[str, ...], int] = {}
        seq = np.fromiter((sequence.setdefault(t, len(sequence)) for t in toks), dtype=np.int64, count=u)
        same = (n_tok[i1] > 0) & (seq[i1] == seq[i2])
        return out, same


def fit_featurizer(train_df: pd.DataFrame, *, ngram_range: tuple[int, int] = (2, 5), min_df: int = 1) -> PairFeaturizer:
    """Statistics of the train split's distinct questions: the lexical baseline's TF-IDF and BM25 document frequencies."""
    tfidf = fit_char_tfidf(train_df, ngram_range=ngram_range, min_df=min_df)
    docs = list(dict.fromkeys(train_df["question1"].astype(str).tolist() + train_df["question2"].astype(str).tolist()))
    df: Counter[str] = Counter()
    total = 0
    for q in docs:
        toks = standard_tokens(q)
        total += len(toks)
        df.update(set(toks))
    n = len(docs)
    # Lucene's non-negative BM25 IDF; a word never seen in training counts as seen in no document.
    idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
    return PairFeaturizer(tfidf, idf, math.log(1 + (n + 0.5) / 0.5), max(total / max(n, 1), 1e-9), n)
