"""The encoder's inputs in plain Python/numpy: token ids and hashed sub-word ids of questions, padded per length bucket.

This is the one tokenisation path of inference (server, `qdup predict`, search, index build, mining,
evaluation). It gives what the Keras graph gives (TextVectorization's ids, `SubwordHasher`'s n-gram ids;
tests/model/test_fast_inference.py checks both on real-length and awkward text) without TensorFlow:
`qdup.text.standardize` splits a text as the vectorizer does, and each word's id and n-gram ids are
computed once and kept in a table (questions share most of their words).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import farmhash
import numpy as np

from qdup.model.vocabulary_file import OOV_ID
from qdup.text import standardize

# Padded widths a batch may have: a text is padded to the first bucket at least its own length, so its
# encoding never depends on the texts it is batched with (and a compiled runtime sees few shapes).
WIDTH_BUCKETS = (4, 8, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 256, 512)
# Words whose ids and n-gram ids are remembered: the vocabulary plus this many unseen words at most.
WORD_CACHE = 200_000


@dataclass(frozen=True)
class SubwordSpec:
    """How an encoder hashes a word's character n-grams (the settings `SubwordEmbedding` keeps)."""

    buckets: int
    ngram_min: int
    ngram_max: int
    max_per_word: int


def bucket_widths(lengths: np.ndarray, max_length: int) -> np.ndarray:
    """The padded width of texts of `lengths` tokens: the first WIDTH_BUCKETS entry >= each, at most max_length."""
    buckets = np.asarray(WIDTH_BUCKETS, dtype=np.int64)
    at = np.searchsorted(buckets, np.asarray(lengths, dtype=np.int64), side="left")
    widths = np.where(at < len(buckets), buckets[np.minimum(at, len(buckets) - 1)], max_length)
    return np.minimum(widths, max_length)


def bucket_width(length: int, max_length: int) -> int:
    """`bucket_widths` of one text."""
    return int(bucket_widths(np.array([length]), max_length)[0])


class QuestionFeaturizer:
    """Token ids (and n-gram ids) of questions, as the vocabulary layer and `SubwordHasher` give them.

    Each word seen gets a row in a table of its token id and n-gram ids, so that a batch is gathered from the
    table by numpy in one step rather than word by word (the per-word loop was a third of an encoding call).
    The table holds the vocabulary plus `unseen_words` other words at most: past that it starts again empty.
    Safe to share between threads (the server's model and search threads): batches are built under a lock.
    """

    def __init__(self, vocabulary: Sequence[str], max_length: int, subwords: SubwordSpec | None, unseen_words: int = WORD_CACHE):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = int(max_length)
        self.subwords = subwords
        self._ids = {token: i for i, token in enumerate(vocabulary) if i > OOV_ID}
        self._per_word = subwords.max_per_word if subwords else 0
        self._capacity = max(0, int(unseen_words)) + len(self._ids)
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._rows: dict[str, int] = {}
        self._tokens = np.zeros(1024, dtype=np.int32)
        self._grams = np.zeros((1024, self._per_word), dtype=np.int32)

    def _add(self, word: str) -> int:
        """The table row of a word not in it yet (its token id and n-gram ids written there)."""
        row = len(self._rows)
        if row == len(self._tokens):
            self._tokens = np.concatenate([self._tokens, np.zeros_like(self._tokens)])
            self._grams = np.concatenate([self._grams, np.zeros_like(self._grams)])
        self._tokens[row] = self._ids.get(word, OOV_ID)
        spec = self.subwords
        if spec is not None:
            chars = "<" + word + ">"
            grams: list[int] = []
            for n in range(spec.ngram_min, spec.ngram_max + 1):
                for i in range(len(chars) - n + 1):
                    if len(grams) == spec.max_per_word:
                        break
                    # tf.strings.to_hash_bucket_fast is FarmHash Fingerprint64 of the UTF-8 bytes modulo the buckets;
                    # pyfarmhash computes the same function (surrogatepass: a lone surrogate from JSON still hashes).
                    grams.append(farmhash.fingerprint64(chars[i : i + n].encode("utf-8", "surrogatepass")) % spec.buckets + 1)
            self._grams[row, : len(grams)] = grams
        self._rows[word] = row
        return row

    def words(self, text: str) -> list[str]:
        """The words of `text` the encoder reads: standardised, the first max_length."""
        return standardize(text)[: self.max_length]

    def batch(self, word_lists: Sequence[list[str]], width: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Inputs of one batch of texts' `words`, padded to `width`: ids (n, width) int32, n-gram ids (n, width, per_word)
        int32 or None, and lengths (n,) int32. A text with no word becomes one OOV token (as `vectorize_padded` does)."""
        n = len(word_lists)
        kept = [words[:width] for words in word_lists]
        counts = np.fromiter((len(words) for words in kept), dtype=np.int64, count=n)
        ids = np.zeros((n, width), dtype=np.int32)
        ids[counts == 0, 0] = OOV_ID
        lengths = np.maximum(counts, 1).astype(np.int32)
        sub = None if self.subwords is None else np.zeros((n, width, self._per_word), dtype=np.int32)
        with self._lock:
            if len(self._rows) + int(counts.sum()) > self._capacity:
                self._clear()
            table = self._rows
            every = list(chain.from_iterable(kept))
            for word in set(every).difference(table):
                self._add(word)
            flat = np.fromiter(map(table.__getitem__, every), dtype=np.int64, count=len(every))
            tokens = self._tokens[flat]
            grams = None if sub is None else self._grams[flat]
        rows = np.repeat(np.arange(n), counts)
        steps = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
        ids[rows, steps] = tokens
        if sub is not None:
            sub[rows, steps] = grams
        return ids, sub, lengths
