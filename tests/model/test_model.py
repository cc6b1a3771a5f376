"""Model components: the triplet loss by hand, masked pooling, the encoder, Siamese and inference models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from qdup.config import ModelConfig, VocabConfig
from qdup.model.losses import TripletLoss
from qdup.model.network import (
    CosineSimilarity,
    MaskedMeanPooling,
    TokenDropout,
    TruncateTokens,
    build_encoder,
    build_inference_model,
    build_siamese,
)
from qdup.model.vocab import fit_vectorizer

V1 = np.array([[0.26726124, 0.53452248, 0.80178373], [0.5178918, 0.57543534, 0.63297887]])
V2 = np.array([[0.26726124, 0.53452248, 0.80178373], [-0.5178918, -0.57543534, -0.63297887]])
TINY = ModelConfig(embedding_dim=8, lstm_units=8, max_length=6, subwords=False)  # the words-only path; sub-words: test_subwords.py


def _loss(v1: np.ndarray, v2: np.ndarray, margin: float = 0.25, **kw) -> np.ndarray:
    y_pred = np.concatenate([v1, v2], axis=1).astype("float32")
    return np.asarray(TripletLoss(margin=margin, **kw)(np.zeros(len(v1)), y_pred))


def _reference_loss(v1: np.ndarray, v2: np.ndarray, margin: float) -> float:
    """The loss written out row by row, independent of the vectorised implementation."""
    total = 0.0
    n = len(v1)
    for i in range(n):
        pos = float(v2[i] @ v1[i])
        negs = [float(v2[i] @ v1[j]) for j in range(n) if j != i]
        mean_neg = sum(negs) / (n - 1)
        # Off-diagonal entries above the positive are replaced by -2; the diagonal counts as pos - 2.
        candidates = [s if s <= pos else -2.0 for s in negs] + [pos - 2.0]
        closest = max(candidates)
        total += max(0.0, margin - pos + closest) + max(0.0, margin - pos + mean_neg)
    return total


def test_triplet_loss_reference_case():
    assert float(_loss(V1, V2)) == pytest.approx(0.7035, abs=1e-3)
    assert _reference_loss(V1, V2, 0.25) == pytest.approx(0.7035, abs=1e-3)


def test_triplet_loss_swapped_pairs_by_hand():
    # scores = [[0, 1], [1, 0]]: positives 0, every negative (1) is above its positive, so the
    # hard term is max(0, 0.25 - 0 + max(-2, 0 - 2)) = 0 and the mean term 0.25 - 0 + 1 = 1.25 per row.
    eye = np.eye(2)
    assert float(_loss(eye, eye[::-1])) == pytest.approx(2.5, abs=1e-6)
    # Orthogonal negatives, perfect positives: every term is max(0, 0.25 - 1 + 0) = 0.
    assert float(_loss(eye, eye)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("batch, dim, margin, seed", [(4, 3, 0.25, 0), (6, 5, 0.5, 1), (3, 2, 1.0, 2)])
def test_triplet_loss_matches_row_by_row_numpy(batch, dim, margin, seed):
    rng = np.random.default_rng(seed)
    v1 = rng.normal(size=(batch, dim))
    v1 /= np.linalg.norm(v1, axis=1, keepdims=True)
    v2 = v1 + 0.6 * rng.normal(size=(batch, dim))
    v2 /= np.linalg.norm(v2, axis=1, keepdims=True)
    v1, v2 = v1.astype("float32"), v2.astype("float32")
    assert float(_loss(v1, v2, margin)) == pytest.approx(_reference_loss(v1, v2, margin), abs=1e-5)


def test_triplet_loss_sums_over_the_batch():
    per_row = _loss(V1, V2, reduction="none")
    assert per_row.shape == (2,)
    assert per_row.tolist() == pytest.approx([0.4070, 0.2965], abs=1e-3)
    assert float(_loss(V1, V2)) == pytest.approx(float(per_row.sum()), abs=1e-6)


def test_triplet_loss_config_round_trip():
    loss = TripletLoss(margin=0.4)
    restored = TripletLoss.from_config(loss.get_config())
    assert restored.margin == 0.4 and restored.reduction == "sum"
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, TripletLoss) and again.margin == 0.4
    assert float(_loss(V1, V2, margin=0.4)) == pytest.approx(float(again(np.zeros(2), np.concatenate([V1, V2], 1))), abs=1e-6)


def test_masked_mean_pooling_by_hand():
    x = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]], dtype="float32")
    mask = np.array([[True, True, False], [True, True, True]])
    pool = MaskedMeanPooling()
    np.testing.assert_allclose(pool(x, mask=mask), [[2.0, 3.0], [7.0, 8.0]])
    np.testing.assert_allclose(pool(x), [[104 / 3, 106 / 3], [7.0, 8.0]], rtol=1e-6)
    np.testing.assert_allclose(pool(x, mask=np.zeros((2, 3), bool)), np.zeros((2, 2)))
    assert MaskedMeanPooling.from_config(pool.get_config()).supports_masking


def test_masked_max_pooling_by_hand_and_the_mean_max_encoder_saves_and_loads(tmp_path):
    import keras

    from qdup.model.network import MaskedMaxPooling

    x = np.array([[[1.0, -2.0], [3.0, -4.0], [100.0, 100.0]], [[5.0, 6.0], [-7.0, 8.0], [9.0, -10.0]]], dtype="float32")
    mask = np.array([[True, True, False], [True, True, True]])
    pool = MaskedMaxPooling()
    np.testing.assert_allclose(pool(x, mask=mask), [[3.0, -2.0], [9.0, 8.0]])
    np.testing.assert_allclose(pool(x), [[100.0, 100.0], [9.0, 8.0]])
    np.testing.assert_allclose(pool(x, mask=np.zeros((2, 3), bool)), np.zeros((2, 2)))
    encoder = build_encoder(50, ModelConfig(embedding_dim=4, lstm_units=3, bidirectional=True, subwords=False,
                                            pooling="mean_max"))
    assert encoder.output_shape == (None, 12)  # mean and maximum of both directions' 3 units
    ids = np.array([[5, 6, 7, 0], [8, 0, 0, 0]], dtype="int32")
    encoder.save(tmp_path / "e.keras")
    again = keras.saving.load_model(tmp_path / "e.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(again.predict(ids, verbose=0), encoder.predict(ids, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "ids, max_length, pad, expected",
    [
        ([[5, 6, 7, 0], [8, 0, 0, 0]], 3, False, [[5, 6, 7], [8, 0, 0]]),
        ([[5, 6, 7, 0], [0, 0, 0, 0]], 3, False, [[5, 6, 7], [1, 0, 0]]),
        ([[5, 6], [9, 0]], 4, True, [[5, 6, 0, 0], [9, 0, 0, 0]]),
        ([[5, 6], [9, 0]], 4, False, [[5, 6], [9, 0]]),
    ],
)
def test_truncate_tokens(ids, max_length, pad, expected):
    out = TruncateTokens(max_length, pad_to_max_length=pad)(np.array(ids, dtype="int64"))
    assert np.asarray(out).tolist() == expected


def test_truncate_tokens_gives_empty_batches_one_step():
    out = TruncateTokens(5)(tf.zeros((2, 0), tf.int64))
    assert np.asarray(out).tolist() == [[1], [1]]
    with pytest.raises(ValueError, match="max_length"):
        TruncateTokens(0)


@pytest.mark.parametrize("bidirectional, dim", [(False, 8), (True, 16)])
def test_encoder_gives_unit_vectors(bidirectional, dim):
    keras.utils.set_random_seed(0)
    enc = build_encoder(20, TINY.model_copy(update={"bidirectional": bidirectional, "dropout": 0.1}))
    out = np.asarray(enc(np.array([[3, 4, 5], [6, 0, 0]], dtype="int32")))
    assert enc.name == "encoder" and out.shape == (2, dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_the_encoding(bidirectional):
    keras.utils.set_random_seed(1)
    enc = build_encoder(30, TINY.model_copy(update={"bidirectional": bidirectional}))
    short = np.array([[4, 9, 2, 7]], dtype="int32")
    padded = np.array([[4, 9, 2, 7, 0, 0, 0, 0, 0]], dtype="int32")
    np.testing.assert_allclose(enc(short), enc(padded), atol=1e-5)
    # In a batch beside a longer question as well.
    batch = np.array([[4, 9, 2, 7, 0, 0], [1, 2, 3, 4, 5, 6]], dtype="int32")
    np.testing.assert_allclose(enc(batch)[0], enc(short)[0], atol=1e-5)


def test_without_masking_padding_does_change_the_encoding():
    keras.utils.set_random_seed(1)
    enc = build_encoder(30, TINY.model_copy(update={"mask_padding": False}))
    short = np.array([[4, 9, 2, 7]], dtype="int32")
    padded = np.array([[4, 9, 2, 7, 0, 0, 0]], dtype="int32")
    assert np.abs(np.asarray(enc(short)) - np.asarray(enc(padded))).max() > 1e-4


def test_siamese_shares_one_encoder_and_concatenates():
    keras.utils.set_random_seed(2)
    enc = build_encoder(30, TINY)
    siamese = build_siamese(enc)
    assert siamese.name == "siamese"
    assert [layer.name for layer in siamese.layers].count("encoder") == 1
    a = np.array([[3, 4, 0], [5, 6, 7]], dtype="int32")
    b = np.array([[8, 0, 0], [9, 10, 11]], dtype="int32")
    out = np.asarray(siamese([a, b]))
    d = enc.output_shape[-1]
    assert d == (16 if TINY.bidirectional else 8) and out.shape == (2, 2 * d)
    np.testing.assert_allclose(out[:, :d], enc(a), atol=1e-6)
    np.testing.assert_allclose(out[:, d:], enc(b), atol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in _all_layers(siamese))


def test_inference_model_matches_encoder_and_truncates(tmp_path):
    keras.utils.set_random_seed(3)
    vec = fit_vectorizer(["how do i learn python", "what is the capital of france"], VocabConfig())
    enc = build_encoder(vec.vocabulary_size(), TINY.model_copy(update={"max_length": 3}))
    model = build_inference_model(enc, vec, max_length=3)
    q1 = tf.constant(["How do I learn Python?", "how do i swim", "what is"])
    q2 = tf.constant(["What is the capital of France?", "how do i fly", "capital"])
    sim = np.asarray(model([q1, q2]))
    assert sim.shape == (3,)
    # "how do i swim" and "how do i fly" agree on their first 3 tokens.
    assert sim[1] == pytest.approx(1.0, abs=1e-5)
    ids = lambda texts: np.asarray(vec(tf.constant(texts)))[:, :3].astype("int32")  # noqa: E731
    expected = np.sum(np.asarray(enc(ids(["how do i learn python"]))) * np.asarray(enc(ids(["what is the capital of france"]))))
    assert sim[0] == pytest.approx(expected, abs=1e-5)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in _all_layers(model))
    model.save(tmp_path / "inference.keras")
    loaded = keras.saving.load_model(tmp_path / "inference.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded([q1, q2])), sim, atol=1e-6)


def test_cosine_similarity_layer():
    a = np.array([[1.0, 0.0], [0.6, 0.8]], dtype="float32")
    b = np.array([[0.0, 1.0], [0.6, 0.8]], dtype="float32")
    np.testing.assert_allclose(CosineSimilarity()([a, b]), [0.0, 1.0], atol=1e-6)


def test_encoder_needs_a_vocabulary():
    with pytest.raises(ValueError, match="vocab_size"):
        build_encoder(2, TINY)


@pytest.mark.parametrize("mask_padding", [True, False])
def test_inference_model_agrees_with_the_training_time_path(mask_padding):
    from qdup.model.encode import similarities

    keras.utils.set_random_seed(4)
    vec = fit_vectorizer(["how do i learn python", "what is the capital of france", "why"], VocabConfig())
    cfg = TINY.model_copy(update={"mask_padding": mask_padding, "max_length": 4})
    enc = build_encoder(vec.vocabulary_size(), cfg)
    model = build_inference_model(enc, vec, cfg.max_length)
    q1 = ["how do i learn python today", "why", "???", "capital"]
    q2 = ["what is the capital of france", "how do i", "why", "what is the capital of france"]
    got = np.asarray(model([tf.constant(q1), tf.constant(q2)]))
    np.testing.assert_allclose(got, similarities(enc, vec, q1, q2, cfg.max_length, batch_size=2), atol=1e-5)


def test_token_dropout_replaces_only_words_and_only_in_training():
    ids = np.tile(np.array([[5, 6, 7, 8, 1, 0, 0, 0]], dtype="int32"), (2000, 1))
    layer = TokenDropout(0.3, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(ids)), ids)  # inference: the identity
    out = np.asarray(layer(ids, training=True))
    np.testing.assert_array_equal(out[:, 4:], ids[:, 4:])  # OOV and padding stay as they are
    words = out[:, :4]
    assert set(np.unique(words).tolist()) <= {1, 5, 6, 7, 8}
    assert np.mean(words == 1) == pytest.approx(0.3, abs=0.02)
    restored = TokenDropout.from_config(layer.get_config())
    assert restored.rate == 0.3 and restored.seed == 0
    with pytest.raises(ValueError, match="rate"):
        TokenDropout(1.0)


REGULARISED = TINY.model_copy(
    update={"dropout": 0.2, "spatial_dropout": 0.2, "token_dropout": 0.2, "output_dropout": 0.2, "l2": 1e-4}
)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_regularised_encoder_is_deterministic_at_inference_and_ignores_padding(bidirectional, tmp_path):
    keras.utils.set_random_seed(5)
    enc = build_encoder(30, REGULARISED.model_copy(update={"bidirectional": bidirectional}))
    names = {layer.name for layer in enc.layers}
    assert {"token_dropout", "dropout", "spatial_dropout", "output_dropout"} <= names
    assert len(enc.losses) == (5 if bidirectional else 3)  # L2: embeddings + (kernel, recurrent) per LSTM
    short = np.array([[4, 9, 2, 7]], dtype="int32")
    padded = np.array([[4, 9, 2, 7, 0, 0, 0]], dtype="int32")
    a = np.asarray(enc(short))
    np.testing.assert_allclose(a, enc(short), atol=1e-6)
    np.testing.assert_allclose(a, enc(padded), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # Dropout is active when training: the same input gives another encoding.
    batch = np.tile(short, (8, 1))
    assert np.abs(np.asarray(enc(batch, training=True)) - a).max() > 1e-4
    enc.save(tmp_path / "enc.keras")
    loaded = keras.saving.load_model(tmp_path / "enc.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(short)), a, atol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in _all_layers(loaded))


def test_zero_rates_add_no_layers():
    enc = build_encoder(30, TINY.model_copy(update={"dropout": 0.0, "spatial_dropout": 0.0, "token_dropout": 0.0,
                                                    "output_dropout": 0.0, "l2": 0.0}))
    assert not any("dropout" in layer.name for layer in enc.layers)
    assert not enc.losses


def test_masked_mean_pooling_is_kept_because_keras_global_average_gives_nan_for_an_all_padding_question():
    """Keras's GlobalAveragePooling1D honours masks but divides 0 by 0 for a question with no tokens
    ("???" strips to nothing); qdup's pooling returns zeros there and equals Keras's everywhere else."""
    x = np.arange(2 * 3 * 2, dtype="float32").reshape(2, 3, 2)
    mask = np.array([[True, True, False], [False, False, False]])
    ours = np.asarray(MaskedMeanPooling()(x, mask=mask))
    keras_gap = np.asarray(keras.layers.GlobalAveragePooling1D()(x, mask=mask))
    np.testing.assert_allclose(ours[0], keras_gap[0])
    np.testing.assert_allclose(ours[0], x[0, :2].mean(axis=0))
    assert np.isnan(keras_gap[1]).all()
    np.testing.assert_array_equal(ours[1], [0.0, 0.0])
