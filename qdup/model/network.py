"""Keras 3 building blocks of the Siamese LSTM: encoder and the raw-string inference model (losses: `qdup.model.losses`).

Label convention: is_duplicate 1 = the two questions have the same intent. The similarity of a
pair is the cosine of the two L2-normalised encodings, in [-1, 1]; a pair is predicted to be a
duplicate iff similarity >= threshold.

Every custom object is registered under the "qdup" package so that `.keras` files load with
`keras.saving.load_model(path, safe_mode=True)` once this module is imported; there are no
Lambda layers, so nothing needs unsafe deserialisation.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf
from keras import ops

from qdup.config import ModelConfig
from qdup.errors import QdupError
from qdup.model.vocab import OOV_ID

PACKAGE = "qdup"
# Keras's TextVectorization standardize="lower_and_strip_punctuation" removes exactly these characters after
# tf.strings.lower; the sub-word hasher must see the words the vectorizer sees (tests/model/test_subwords.py).
STRIP_PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


class _TimePooling(keras.layers.Layer):
    """What the masked poolings share: (batch, time, features) -> (batch, features), the padding mask consumed."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        # The time axis is gone, so is the mask: downstream layers see one vector per question.
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMeanPooling(_TimePooling):
    """Mean over the time axis of (batch, time, features) that ignores masked (padding) steps.

    Without a mask it is the plain mean. A fully masked row gives zeros rather than 0/0: kept
    instead of keras.layers.GlobalAveragePooling1D, which returns NaN there (tests/model/test_model.py).
    """

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), axis=-1)
        total = ops.sum(inputs * weights, axis=1)
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)
        return total / count


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMaxPooling(_TimePooling):
    """Maximum over the time axis of (batch, time, features) that ignores masked (padding) steps; a fully masked row
    gives zeros. Beside the mean (ModelConfig.pooling="mean_max"), it keeps a strong feature of one word that a
    long question's mean would dilute. Keras's GlobalMaxPooling1D does not ignore masked steps."""

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.max(inputs, axis=1)
        keep = ops.expand_dims(ops.cast(mask, "bool"), axis=-1)
        low = ops.cast(-1e9, inputs.dtype)
        best = ops.max(ops.where(keep, inputs, low), axis=1)
        return ops.where(ops.any(keep, axis=1), best, ops.zeros_like(best))


@keras.saving.register_keras_serializable(package=PACKAGE)
class TruncateTokens(keras.layers.Layer):
    """Cut token ids (batch, time) to `max_length` and make every row hold at least one token.

    A row with no tokens gets the OOV id at step 0 (as `qdup.model.vocab.vectorize_padded` does),
    because a fully masked sequence is rejected by the cuDNN LSTM kernel. With
    `pad_to_max_length` the output is always exactly `max_length` wide, for encoders that do
    not mask padding (whose encodings then depend on the padded width).
    """

    def __init__(self, max_length: int, pad_to_max_length: bool = False, **kwargs):
        super().__init__(**kwargs)
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = int(max_length)
        self.pad_to_max_length = bool(pad_to_max_length)

    def call(self, inputs):
        ids = ops.cast(inputs, "int32")[:, : self.max_length]
        batch = ops.shape(ids)[0]
        if self.pad_to_max_length:
            ids = ops.concatenate([ids, ops.zeros((batch, self.max_length), dtype="int32")], axis=1)
            ids = ids[:, : self.max_length]
        else:
            # One zero column appended then cut back to max(width, 1): a batch of texts without
            # tokens would otherwise have zero time steps.
            width = ops.maximum(ops.shape(ids)[1], 1)
            ids = ops.concatenate([ids, ops.zeros((batch, 1), dtype="int32")], axis=1)[:, :width]
        empty = ops.all(ops.equal(ids, 0), axis=1)
        first = ops.where(empty, ops.full_like(ids[:, 0], OOV_ID), ids[:, 0])
        return ops.concatenate([ops.expand_dims(first, 1), ids[:, 1:]], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.max_length if self.pad_to_max_length else None)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="int32")

    def get_config(self):
        return super().get_config() | {"max_length": self.max_length, "pad_to_max_length": self.pad_to_max_length}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenDropout(keras.layers.Layer):
    """Training only: replace each word id (>= 2) by the OOV id with probability `rate`.

    Padding (0) is left alone, so masks and lengths do not change; at inference it is the identity.
    The model learns to cope with unknown words, which are common in new questions.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        drop = keras.random.uniform(ops.shape(inputs), seed=self.seed_generator) < self.rate
        drop = ops.logical_and(drop, ops.greater(inputs, OOV_ID))
        return ops.where(drop, ops.full_like(inputs, OOV_ID), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CosineSimilarity(keras.layers.Layer):
    """Row-wise dot product of two batches of unit vectors: their cosine, shape (batch,)."""

    def call(self, inputs):
        a, b = inputs
        return ops.sum(a * b, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return super().get_config()


@keras.saving.register_keras_serializable(package=PACKAGE)
class SubwordHasher(keras.layers.Layer):
    """Raw strings (batch,) -> hashed character n-gram ids (batch, words, max_per_word) int32, fastText style.

    Each word (standardised and split as the word vectorizer does, first `max_length` words) is wrapped in
    "<" and ">", cut into character n-grams of ngram_min..ngram_max, and each n-gram hashed into
    1..buckets (tf.strings.to_hash_bucket_fast; 0 is padding). A word keeps its first `max_per_word`
    n-grams. With `width_like` (token ids (batch, time)) the output is cut or padded to that width,
    so that step t holds the n-grams of the word whose id is at step t.
    """

    def __init__(self, buckets: int, ngram_min: int = 3, ngram_max: int = 5, max_per_word: int = 16, max_length: int = 64,
                 **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if buckets < 1 or not 1 <= ngram_min <= ngram_max or max_per_word < 1 or max_length < 1:
            raise ValueError(f"bad sub-word hasher settings: buckets={buckets}, ngrams={ngram_min}..{ngram_max}, "
                             f"max_per_word={max_per_word}, max_length={max_length}")
        self.buckets = int(buckets)
        self.ngram_min = int(ngram_min)
        self.ngram_max = int(ngram_max)
        self.max_per_word = int(max_per_word)
        self.max_length = int(max_length)

    def call(self, texts, width_like=None):
        texts = tf.reshape(tf.convert_to_tensor(texts, dtype=tf.string), [-1])
        words = tf.strings.split(tf.strings.regex_replace(tf.strings.lower(texts), STRIP_PUNCTUATION, ""))[:, : self.max_length]
        flat = words.flat_values
        marked = words.with_flat_values(tf.strings.join([tf.fill(tf.shape(flat), "<"), flat, tf.fill(tf.shape(flat), ">")]))
        chars = tf.strings.unicode_split(marked, "UTF-8")
        grams = tf.strings.ngrams(chars, ngram_width=tuple(range(self.ngram_min, self.ngram_max + 1)), separator="")
        ids = tf.strings.to_hash_bucket_fast(grams, self.buckets) + 1
        dense = tf.cast(ids[:, :, : self.max_per_word].to_tensor(0, shape=[None, None, self.max_per_word]), tf.int32)
        if width_like is not None:
            width = tf.shape(width_like)[1]
            dense = tf.pad(dense, [[0, 0], [0, tf.maximum(width - tf.shape(dense)[1], 0)], [0, 0]])[:, :width]
        return dense

    def compute_output_spec(self, texts, width_like=None):
        return keras.KerasTensor((texts.shape[0], None, self.max_per_word), dtype="int32")

    def get_config(self):
        return super().get_config() | {"buckets": self.buckets, "ngram_min": self.ngram_min, "ngram_max": self.ngram_max,
                                       "max_per_word": self.max_per_word, "max_length": self.max_length}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SubwordEmbedding(keras.layers.Layer):
    """[word vectors (batch, time, dim), hashed n-gram ids (batch, time, per_word)] -> word vectors + the mean of
    each word's n-gram embeddings (batch, time, dim).

    Padding ids (0) are left out of the mean; a word without n-grams gets its word vector alone. The word
    vectors' mask passes through (keras.layers.Add would drop it, since the ids carry none). The layer also
    carries the hashing settings, so `subword_hasher(encoder)` rebuilds the hasher a saved encoder was trained with.
    """

    def __init__(self, buckets: int, output_dim: int, ngram_min: int = 3, ngram_max: int = 5, max_per_word: int = 16,
                 embeddings_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.buckets = int(buckets)
        self.output_dim = int(output_dim)
        self.ngram_min = int(ngram_min)
        self.ngram_max = int(ngram_max)
        self.max_per_word = int(max_per_word)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)
        self.embedding = keras.layers.Embedding(self.buckets + 1, self.output_dim, embeddings_regularizer=self.embeddings_regularizer,
                                                name="ngram_embedding")

    def build(self, input_shape):
        self.embedding.build(input_shape[1])

    def call(self, inputs, mask=None):
        words, ids = inputs
        vectors = self.embedding(ids)
        weights = ops.expand_dims(ops.cast(ops.greater(ids, 0), vectors.dtype), axis=-1)
        return words + ops.sum(vectors * weights, axis=2) / ops.maximum(ops.sum(weights, axis=2), 1.0)

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[0]

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return super().get_config() | {
            "buckets": self.buckets, "output_dim": self.output_dim, "ngram_min": self.ngram_min, "ngram_max": self.ngram_max,
            "max_per_word": self.max_per_word, "embeddings_regularizer": keras.regularizers.serialize(self.embeddings_regularizer),
        }


def build_encoder(vocab_size: int, cfg: ModelConfig) -> keras.Model:
    """Token ids (batch, time) int32 [and hashed n-gram ids (batch, time, per_word)] -> unit-length encodings.

    [TokenDropout] -> Embedding (id 0 = padding, masked when cfg.mask_padding) [+ SubwordEmbedding of the
    same words when cfg.subwords] -> [Dropout] -> [SpatialDropout1D] -> (Bi)LSTM over all steps -> [Dropout]
    -> masked mean over time [beside the masked maximum, concatenated, when cfg.pooling="mean_max"] -> L2
    normalisation; bracketed dropout layers exist only when their rate is > 0. The LSTM keeps Keras's
    defaults (tanh/sigmoid, no recurrent dropout, not unrolled) so that it runs on cuDNN on a GPU. cfg.l2 > 0
    adds an L2 penalty on the embeddings and the LSTM kernels. Token dropout hides a word's
    id, never its n-grams: the model learns to read unknown words from their spelling.
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size must count padding, OOV and at least one word; got {vocab_size}")
    reg = keras.regularizers.L2(cfg.l2) if cfg.l2 > 0 else None
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    inputs = [tokens]
    x = tokens
    if cfg.token_dropout > 0:
        x = TokenDropout(cfg.token_dropout, name="token_dropout")(x)
    x = keras.layers.Embedding(
        vocab_size, cfg.embedding_dim, mask_zero=cfg.mask_padding, embeddings_regularizer=reg, name="embedding"
    )(x)
    if cfg.subwords:
        subwords = keras.Input(shape=(None, cfg.subword_max_per_word), dtype="int32", name="subwords")
        inputs.append(subwords)
        x = SubwordEmbedding(
            cfg.subword_buckets, cfg.embedding_dim, ngram_min=cfg.subword_ngrams[0], ngram_max=cfg.subword_ngrams[1],
            max_per_word=cfg.subword_max_per_word, embeddings_regularizer=reg, name="subword_embedding",
        )([x, subwords])
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    if cfg.spatial_dropout > 0:
        x = keras.layers.SpatialDropout1D(cfg.spatial_dropout, name="spatial_dropout")(x)
    lstm = keras.layers.LSTM(
        cfg.lstm_units, return_sequences=True, kernel_regularizer=reg, recurrent_regularizer=reg, name="lstm"
    )
    if cfg.bidirectional:
        lstm = keras.layers.Bidirectional(lstm, name="bilstm")
    x = lstm(x)
    if cfg.output_dropout > 0:
        x = keras.layers.Dropout(cfg.output_dropout, name="output_dropout")(x)
    if cfg.pooling == "mean_max":
        x = keras.layers.Concatenate(name="mean_max")([MaskedMeanPooling(name="mean_pool")(x), MaskedMaxPooling(name="max_pool")(x)])
    else:
        x = MaskedMeanPooling(name="mean_pool")(x)
    x = keras.layers.UnitNormalization(name="l2_normalise")(x)
    return keras.Model(inputs if len(inputs) > 1 else tokens, x, name="encoder")


def subword_layer(encoder: keras.Model) -> SubwordEmbedding | None:
    """The encoder's sub-word embedding, or None for a words-only encoder."""
    return next((layer for layer in encoder.layers if isinstance(layer, SubwordEmbedding)), None)


def subword_hasher(encoder: keras.Model, max_length: int) -> SubwordHasher | None:
    """The hasher whose ids `encoder` was trained on (its settings are kept in the encoder), or None without sub-words."""
    layer = subword_layer(encoder)
    if layer is None:
        return None
    return SubwordHasher(layer.buckets, layer.ngram_min, layer.ngram_max, layer.max_per_word, max_length, name="subword_hasher")


def build_siamese(encoder: keras.Model) -> keras.Model:
    """Two questions through the same (shared-weight) encoder -> concat[v1, v2], (batch, 2d).

    Inputs: [question1, question2] token ids, or [question1, subwords1, question2, subwords2] for an encoder
    with sub-word features.
    """
    q1 = keras.Input(shape=(None,), dtype="int32", name="question1")
    q2 = keras.Input(shape=(None,), dtype="int32", name="question2")
    layer = subword_layer(encoder)
    if layer is None:
        out = keras.layers.Concatenate(axis=-1, name="pair")([encoder(q1), encoder(q2)])
        return keras.Model([q1, q2], out, name="siamese")
    s1 = keras.Input(shape=(None, layer.max_per_word), dtype="int32", name="subwords1")
    s2 = keras.Input(shape=(None, layer.max_per_word), dtype="int32", name="subwords2")
    out = keras.layers.Concatenate(axis=-1, name="pair")([encoder([q1, s1]), encoder([q2, s2])])
    return keras.Model([q1, s1, q2, s2], out, name="siamese")


def encoder_masks_padding(encoder: keras.Model) -> bool:
    """Whether the encoder ignores padding (its Embedding has mask_zero)."""
    return bool(encoder.get_layer("embedding").mask_zero)


def build_inference_model(
    encoder: keras.Model, vectorizer: keras.layers.TextVectorization, max_length: int
) -> keras.Model:
    """Two batches of raw question strings, shape (batch,) -> cosine similarity, shape (batch,).

    The vectorizer, truncation to `max_length` tokens, the sub-word hasher (when the encoder has
    sub-word features) and the encoder are all inside, so the saved model needs nothing but this
    module to be imported.
    """
    q1 = keras.Input(shape=(), dtype="string", name="question1")
    q2 = keras.Input(shape=(), dtype="string", name="question2")
    truncate = TruncateTokens(max_length, pad_to_max_length=not encoder_masks_padding(encoder), name="truncate")
    hasher = subword_hasher(encoder, max_length)
    encoded = []
    for q in (q1, q2):
        ids = truncate(vectorizer(q))
        encoded.append(encoder(ids) if hasher is None else encoder([ids, hasher(q, width_like=ids)]))
    sim = CosineSimilarity(name="cosine")(encoded)
    return keras.Model([q1, q2], sim, name="inference")


def load_saved_model(path: Path) -> keras.Model:
    """Load a qdup Keras file with safe_mode=True; a file that is unsafe or not a model is refused in one line.

    Importing this module registered qdup's custom layers, which saved models name.
    """
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QdupError(f"{path}: refused to load the model (safe_mode=True): {first}") from exc


def load_encoder(path: Path) -> keras.Model:
    """Load a saved encoder (see `load_saved_model`)."""
    return load_saved_model(path)
