"""The word vocabulary: fit a Keras TextVectorization on training text, persist it, turn text into token ids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from qdup.config import VocabConfig
from qdup.errors import QdupError
from qdup.fileio import atomic_write_text
from qdup.model.vocabulary_file import OOV_ID, PAD_ID, read_vocabulary
from qdup.text import SPLIT, STANDARDIZE

# Texts are pushed through TensorFlow in slices this big, so memory stays bounded on 400k questions.
VECTORIZE_BATCH = 8192


def _check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    """Return `texts` as a list; a non-str entry is a data error, named by its position."""
    if isinstance(texts, str):
        raise QdupError(f"{what} must be a sequence of strings, not a single string: {texts[:60]!r}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise QdupError(f"{what}[{i}] is not a string: {t!r} ({type(t).__name__})")
    return out


def _new_vectorizer(max_tokens: int | None, vocabulary: list[str] | None = None) -> keras.layers.TextVectorization:
    # Dense int output padded per call to that call's longest text (no fixed output_sequence_length):
    # truncation and padding are decided by the callers, which know max_length.
    return keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize=STANDARDIZE,
        split=SPLIT,
        output_mode="int",
        vocabulary=vocabulary,
        name="vectorizer",
    )


def fit_vectorizer(texts: Sequence[str], cfg: VocabConfig) -> keras.layers.TextVectorization:
    """Adapt a TextVectorization on `texts` only (the train split's question1 + question2).

    Lower-cases, strips ASCII punctuation, splits on whitespace; id 0 is padding, 1 is the
    out-of-vocabulary token, ids 2.. are words by decreasing training frequency (ties by token).
    """
    items = _check_texts(texts)
    if not items:
        raise QdupError("cannot fit a vocabulary on no texts")
    vectorizer = _new_vectorizer(cfg.max_tokens)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(tf.constant(items, dtype=tf.string)).batch(VECTORIZE_BATCH))
    if vectorizer.vocabulary_size() <= 2:
        raise QdupError(f"the {len(items):,} texts contain no words after standardisation; the vocabulary is empty")
    return vectorizer


def write_vocabulary(vectorizer: keras.layers.TextVectorization, path: Path) -> int:
    """Write the vocabulary, one token per line, line i holding the token with id i; return its size.

    Line 0 is the (empty) padding token and line 1 the OOV token `[UNK]`. Tokens never contain
    whitespace (they come from a whitespace split), so a newline is a safe separator.
    """
    vocab = vectorizer.get_vocabulary(include_special_tokens=True)
    atomic_write_text(Path(path), "\n".join(vocab) + "\n")
    return len(vocab)


def load_vectorizer(path: Path) -> keras.layers.TextVectorization:
    """Rebuild the vectorizer from a vocabulary file; token ids are the file's line numbers."""
    tokens = read_vocabulary(path)
    vectorizer = _new_vectorizer(None, tokens[2:])
    if vectorizer.vocabulary_size() != len(tokens):
        raise QdupError(f"vocabulary file {path}: {len(tokens)} lines but {vectorizer.vocabulary_size()} distinct ids")
    return vectorizer


def _raw_ids(vectorizer: keras.layers.TextVectorization, texts: list[str]):
    """Yield (start, dense id matrix padded with 0) per slice of texts, untruncated."""
    for start in range(0, len(texts), VECTORIZE_BATCH):
        chunk = texts[start : start + VECTORIZE_BATCH]
        ids = np.asarray(vectorizer(tf.constant(chunk, dtype=tf.string)))
        yield start, ids


def oov_rate(vectorizer: keras.layers.TextVectorization, texts: Sequence[str]) -> float:
    """Fraction of all tokens of `texts` (untruncated) that map to the OOV id 1."""
    items = _check_texts(texts)
    tokens = 0
    oov = 0
    for _, ids in _raw_ids(vectorizer, items):
        tokens += int(np.count_nonzero(ids != PAD_ID))
        oov += int(np.count_nonzero(ids == OOV_ID))
    if tokens == 0:
        raise QdupError(f"the {len(items):,} texts contain no tokens; the OOV rate is undefined")
    return oov / tokens


def vectorize_padded(
    vectorizer: keras.layers.TextVectorization, texts: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `texts` as a right-padded int32 matrix (n, width) and int32 lengths (n,).

    Each text is truncated to its first `max_length` tokens; width is the longest truncated
    length. A text with no tokens after standardisation (e.g. "?") becomes one OOV token, as
    in the inference model, so that no sequence is fully masked (cuDNN rejects those).
    """
    if max_length < 1:
        raise QdupError(f"max_length must be >= 1, got {max_length}")
    items = _check_texts(texts)
    n = len(items)
    lengths = np.zeros(n, dtype=np.int32)
    parts: list[tuple[int, np.ndarray]] = []
    for start, ids in _raw_ids(vectorizer, items):
        ids = ids[:, :max_length].astype(np.int32)
        lengths[start : start + len(ids)] = np.count_nonzero(ids != PAD_ID, axis=1)
        parts.append((start, ids))
    width = max(1, int(lengths.max()) if n else 1)
    out = np.zeros((n, width), dtype=np.int32)
    for start, ids in parts:
        w = min(width, ids.shape[1])
        out[start : start + len(ids), :w] = ids[:, :w]
    empty = lengths == 0
    out[empty, 0] = OOV_ID
    lengths[empty] = 1
    return out, lengths


def vectorize(vectorizer: keras.layers.TextVectorization, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Token ids of each text as an int32 array of length 1..max_length (see `vectorize_padded`)."""
    ids, lengths = vectorize_padded(vectorizer, texts, max_length)
    return [row[:n] for row, n in zip(ids, lengths, strict=True)]
