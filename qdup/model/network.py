"""Keras 3 building blocks of the Siamese LSTM: encoder, triplet loss, and the raw-string inference model.

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
from keras import ops

from qdup.config import ModelConfig
from qdup.errors import QdupError
from qdup.model.vocab import OOV_ID

PACKAGE = "qdup"


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over the time axis of (batch, time, features) that ignores masked (padding) steps.

    Without a mask it is the plain mean. A fully masked row gives zeros rather than 0/0: kept
    instead of keras.layers.GlobalAveragePooling1D, which returns NaN there (tests/model/test_model.py).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), axis=-1)
        total = ops.sum(inputs * weights, axis=1)
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)
        return total / count

    def compute_mask(self, inputs, mask=None):
        # The time axis is gone, so is the mask: downstream layers see one vector per question.
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return super().get_config()


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
class TripletLoss(keras.losses.Loss):
    """Triplet loss with in-batch hard and mean negatives (the reference course's loss).

    `y_pred` is the Siamese output, shape (batch, 2d) = concat[v1, v2] of unit vectors, where
    row i of v1 and v2 are a duplicate pair; `y_true` is ignored (every pair in a training batch
    is a duplicate and the other rows act as negatives). With scores = v2 · v1ᵀ:

    - positive_i = scores[i, i];
    - mean_negative_i = mean of row i's off-diagonal scores;
    - closest_negative_i = largest off-diagonal score of row i that is not above positive_i
      (entries above it are replaced by -2, below any cosine);
    - loss_i = max(0, margin - positive_i + closest_negative_i) + max(0, margin - positive_i + mean_negative_i).

    The per-row values are summed over the batch (reduction "sum"), as in the reference,
    so the loss grows with the batch size. A batch needs at least 2 pairs.
    """

    def __init__(self, margin: float = 0.25, name: str = "triplet_loss", reduction: str = "sum", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        d = y_pred.shape[-1] // 2
        v1 = y_pred[:, :d]
        v2 = y_pred[:, d:]
        batch = ops.shape(y_pred)[0]
        scores = ops.matmul(v2, ops.transpose(v1))
        eye = ops.eye(batch, dtype=scores.dtype)
        positive = ops.diagonal(scores)
        mean_negative = ops.sum(scores * (1.0 - eye), axis=1) / (ops.cast(batch, scores.dtype) - 1.0)
        negative_without_positive = scores - 2.0 * eye
        above_positive = negative_without_positive > ops.expand_dims(positive, 1)
        closest_negative = ops.max(ops.where(above_positive, -2.0, negative_without_positive), axis=1)
        hard = ops.maximum(0.0, self.margin - positive + closest_negative)
        soft = ops.maximum(0.0, self.margin - positive + mean_negative)
        return hard + soft

    def get_config(self):
        return super().get_config() | {"margin": self.margin}


def build_encoder(vocab_size: int, cfg: ModelConfig) -> keras.Model:
    """Token ids (batch, time) int32 -> unit-length encodings (batch, units or 2*units).

    [TokenDropout] -> Embedding (id 0 = padding, masked when cfg.mask_padding) -> [Dropout]
    -> [SpatialDropout1D] -> (Bi)LSTM over all steps -> [Dropout] -> masked mean over time ->
    L2 normalisation; bracketed layers exist only when their rate is > 0. The LSTM keeps
    Keras's defaults (tanh/sigmoid, no recurrent dropout, not unrolled) so that it runs on
    cuDNN on a GPU. cfg.l2 > 0 adds an L2 penalty on the embeddings and the LSTM kernels.
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size must count padding, OOV and at least one word; got {vocab_size}")
    reg = keras.regularizers.L2(cfg.l2) if cfg.l2 > 0 else None
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = tokens
    if cfg.token_dropout > 0:
        x = TokenDropout(cfg.token_dropout, name="token_dropout")(x)
    x = keras.layers.Embedding(
        vocab_size, cfg.embedding_dim, mask_zero=cfg.mask_padding, embeddings_regularizer=reg, name="embedding"
    )(x)
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
    x = MaskedMeanPooling(name="mean_pool")(x)
    x = keras.layers.UnitNormalization(name="l2_normalise")(x)
    return keras.Model(tokens, x, name="encoder")


def build_siamese(encoder: keras.Model) -> keras.Model:
    """Two token-id inputs through the same (shared-weight) encoder -> concat[v1, v2], (batch, 2d)."""
    q1 = keras.Input(shape=(None,), dtype="int32", name="question1")
    q2 = keras.Input(shape=(None,), dtype="int32", name="question2")
    out = keras.layers.Concatenate(axis=-1, name="pair")([encoder(q1), encoder(q2)])
    return keras.Model([q1, q2], out, name="siamese")


def encoder_masks_padding(encoder: keras.Model) -> bool:
    """Whether the encoder ignores padding (its Embedding has mask_zero)."""
    return bool(encoder.get_layer("embedding").mask_zero)


def build_inference_model(
    encoder: keras.Model, vectorizer: keras.layers.TextVectorization, max_length: int
) -> keras.Model:
    """Two batches of raw question strings, shape (batch,) -> cosine similarity, shape (batch,).

    The vectorizer, truncation to `max_length` tokens and the encoder are all inside, so the
    saved model needs nothing but this module to be imported.
    """
    q1 = keras.Input(shape=(), dtype="string", name="question1")
    q2 = keras.Input(shape=(), dtype="string", name="question2")
    truncate = TruncateTokens(max_length, pad_to_max_length=not encoder_masks_padding(encoder), name="truncate")
    v1 = encoder(truncate(vectorizer(q1)))
    v2 = encoder(truncate(vectorizer(q2)))
    sim = CosineSimilarity(name="cosine")([v1, v2])
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
