"""The encoder's inputs in plain Python/numpy: token ids and hashed sub-word ids of questions, padded per length bucket.

This is the one tokenisation path of inference (server, `qdup predict`, search, index build, mining,
evaluation). It gives what the Keras graph gives (TextVectorization's ids, `SubwordHasher`'s n-gram ids;
tests/model/test_fast_inference.py checks both on real-length and awkward text) without TensorFlow:
`qdup.text.standardize` splits a text as the vectorizer does, and each word's id and n-gram ids are
computed once and remembered (questions share most of their words).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

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


def bucket_width(length: int, max_length: int) -> int:
    """The padded width of a text of `length` tokens: the first WIDTH_BUCKETS entry >= length, at most max_length."""
    for width in WIDTH_BUCKETS:
        if width >= length:
            return min(width, max_length)
    return max_length


class QuestionFeaturizer:
    """Token ids (and n-gram ids) of questions, as the vocabulary layer and `SubwordHasher` give them."""

    def __init__(self, vocabulary: Sequence[str], max_length: int, subwords: SubwordSpec | None):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = int(max_length)
        self.subwords = subwords
        self._ids = {token: i for i, token in enumerate(vocabulary) if i > OOV_ID}
        self._empty_row = np.zeros(subwords.max_per_word if subwords else 0, dtype=np.int32)
        # lru_cache bounds the memory an endless stream of unseen words can take.
        self._word = lru_cache(maxsize=WORD_CACHE + len(self._ids))(self._word_features)

    def _word_features(self, word: str) -> tuple[int, np.ndarray]:
        token = self._ids.get(word, OOV_ID)
        spec = self.subwords
        if spec is None:
            return token, self._empty_row
        chars = "<" + word + ">"
        grams: list[int] = []
        for n in range(spec.ngram_min, spec.ngram_max + 1):
            for i in range(len(chars) - n + 1):
                if len(grams) == spec.max_per_word:
                    break
                # tf.strings.to_hash_bucket_fast is FarmHash Fingerprint64 of the UTF-8 bytes modulo the buckets;
                # pyfarmhash computes the same function (surrogatepass: a lone surrogate from JSON still hashes).
                grams.append(farmhash.fingerprint64(chars[i : i + n].encode("utf-8", "surrogatepass")) % spec.buckets + 1)
        row = np.zeros(spec.max_per_word, dtype=np.int32)
        row[: len(grams)] = grams
        return token, row

    def words(self, text: str) -> list[str]:
        """The words of `text` the encoder reads: standardised, the first max_length."""
        return standardize(text)[: self.max_length]

    def batch(self, word_lists: Sequence[list[str]], width: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Inputs of one batch of texts' `words`, padded to `width`: ids (n, width) int32, n-gram ids (n, width, per_word)
        int32 or None, and lengths (n,) int32. A text with no word becomes one OOV token (as `vectorize_padded` does)."""
        n = len(word_lists)
        ids = np.zeros((n, width), dtype=np.int32)
        lengths = np.ones(n, dtype=np.int32)
        sub = None if self.subwords is None else np.zeros((n, width, self.subwords.max_per_word), dtype=np.int32)
        rows, steps, grams = [], [], []
        word = self._word
        for r, all_words in enumerate(word_lists):
            words = all_words[:width]
            if not words:
                ids[r, 0] = OOV_ID
                continue
            lengths[r] = len(words)
            for t, w in enumerate(words):
                token, gram_row = word(w)
                ids[r, t] = token
                if sub is not None:
                    rows.append(r)
                    steps.append(t)
                    grams.append(gram_row)
        if sub is not None and grams:
            sub[rows, steps] = np.stack(grams)
        return ids, sub, lengths
