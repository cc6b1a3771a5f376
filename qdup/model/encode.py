"""Encoding questions with a trained Keras encoder, and cosine similarity of pairs (evaluation, export, retrieval).

`encode` and `similarities` run the encoder's fast form (`qdup.model.fast`), built in memory from the Keras
model: the same path the server and `qdup predict` run from an export's derived file. The Keras graph
functions below remain for versions exported before the fast form existed (`KerasPairEncoder`) and as the
reference the fast form is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from qdup.errors import QdupError
from qdup.model.fast import BATCH_TEXTS
from qdup.model.network import SubwordHasher, encoder_masks_padding, subword_layer
from qdup.model.vocab import vectorize_padded


def encoder_fn(encoder: keras.Model):
    """The encoder as one graph function `run(ids, texts)` over any (batch, time) shape, traced once.

    Batches differ in padded length; Keras's own predict would retrace for new shapes. `texts` (the batch's
    raw strings) feed the sub-word hasher of an encoder with sub-word features, inside the same graph;
    a words-only encoder ignores them.
    """
    layer = subword_layer(encoder)
    if layer is None:

        @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32)])
        def words_only(ids):
            return encoder(ids, training=False)

        return lambda ids, texts=None: words_only(ids)
    # Word truncation is the ids' own width (width_like), so the hasher's max_length only has to be large enough.
    hasher = SubwordHasher(layer.buckets, layer.ngram_min, layer.ngram_max, layer.max_per_word, max_length=1 << 20)

    @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.string)])
    def with_subwords(ids, texts):
        return encoder([ids, hasher(texts, width_like=ids)], training=False)

    def run(ids, texts=None):
        if texts is None:
            raise QdupError("this encoder reads sub-words: pass the batch's texts with its token ids")
        return with_subwords(ids, tf.constant(list(texts), dtype=tf.string))

    return run


def encode_with(run, encoder: keras.Model, vectorizer, texts: Sequence[str], max_length: int, batch_size: int) -> np.ndarray:
    """`encode` with a compiled `run = encoder_fn(encoder)` that callers keep across calls."""
    if batch_size < 1:
        raise QdupError(f"batch_size must be >= 1, got {batch_size}")
    items = list(texts)
    ids, lengths = vectorize_padded(vectorizer, items, max_length)
    fixed = not encoder_masks_padding(encoder)
    if fixed and ids.shape[1] < max_length:
        ids = np.pad(ids, ((0, 0), (0, max_length - ids.shape[1])))
    out = np.zeros((len(ids), encoder.output_shape[-1]), dtype=np.float32)
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = ids[idx] if fixed else ids[idx, : int(lengths[idx].max())]
        out[idx] = run(tf.constant(batch), [items[i] for i in idx]).numpy()
    return out


class KerasPairEncoder:
    """The encoder inside a saved inference model (two raw-string inputs), as a `PairEncoder`: the fallback runtime."""

    def __init__(self, model: keras.Model, max_length: int):
        self.max_length = int(max_length)
        self.encoder = model.get_layer("encoder")
        vectorizers = [layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization)]
        if len(vectorizers) != 1:
            raise QdupError(f"the inference model should hold one TextVectorization layer, found {len(vectorizers)}")
        self.vectorizer = vectorizers[0]
        self.run = encoder_fn(self.encoder)

    def encode(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        return encode_with(self.run, self.encoder, self.vectorizer, list(texts), self.max_length, batch_size)

    def similarity(self, q1: Sequence[str], q2: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        return pair_cosines(self.run, self.encoder, self.vectorizer, q1, q2, self.max_length, batch_size)


def encode_keras(
    encoder: keras.Model,
    vectorizer: keras.layers.TextVectorization,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 1024,
) -> np.ndarray:
    """`encode` by the Keras graph itself: the reference the fast form is held to."""
    return encode_with(encoder_fn(encoder), encoder, vectorizer, texts, max_length, batch_size)


def encode(
    encoder: keras.Model,
    vectorizer: keras.layers.TextVectorization,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 1024,
) -> np.ndarray:
    """Unit-length encodings (n, d) float32 of `texts`, truncated to max_length tokens.

    Distinct texts are encoded once, in length order, each padded to its own length bucket; an encoder that
    does not mask padding gets every text padded to max_length, as in training.
    """
    from qdup.model.onnx_export import fast_encoder_from_keras

    return fast_encoder_from_keras(encoder, vectorizer, max_length).encode(list(texts), min(batch_size, BATCH_TEXTS))


def pair_cosines(
    run, encoder: keras.Model, vectorizer, q1: Sequence[str], q2: Sequence[str], max_length: int, batch_size: int
) -> np.ndarray:
    """Cosine similarity (float32, in [-1, 1]) of each pair, with `run = encoder_fn(encoder)`.

    Each distinct question is encoded once (questions recur across pairs), in length order.
    """
    if len(q1) != len(q2):
        raise QdupError(f"question lists differ in length: {len(q1)} question1 vs {len(q2)} question2")
    slot: dict[str, int] = {}
    i1 = np.fromiter((slot.setdefault(q, len(slot)) for q in q1), dtype=np.int64, count=len(q1))
    i2 = np.fromiter((slot.setdefault(q, len(slot)) for q in q2), dtype=np.int64, count=len(q2))
    enc = encode_with(run, encoder, vectorizer, list(slot), max_length, batch_size)
    # Unit vectors in float32 can give a dot product a rounding step past 1; a cosine cannot.
    return np.clip(np.einsum("ij,ij->i", enc[i1], enc[i2]), -1.0, 1.0).astype(np.float32)


def similarities(
    encoder: keras.Model,
    vectorizer: keras.layers.TextVectorization,
    q1: Sequence[str],
    q2: Sequence[str],
    max_length: int,
    batch_size: int = 1024,
) -> np.ndarray:
    """Cosine similarity (float32, in [-1, 1]) of each pair (q1[i], q2[i]), by the encoder's fast form."""
    from qdup.model.onnx_export import fast_encoder_from_keras

    return fast_encoder_from_keras(encoder, vectorizer, max_length).similarity(list(q1), list(q2), min(batch_size, BATCH_TEXTS))
