"""Sub-word features, the in-batch softmax loss, false-negative masking and labelled hard negatives."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from qdup.config import ModelConfig, RetrainConfig, TrainConfig, VocabConfig
from qdup.model import network
from qdup.model.batches import epoch_plan, pair_arrays, question_clusters, subword_table
from qdup.model.encode import similarities
from qdup.model.losses import InBatchSoftmaxLoss, TripletLoss
from qdup.model.network import SubwordHasher, build_encoder, subword_hasher
from qdup.model.train import train_model
from qdup.model.vocab import fit_vectorizer, vectorize_padded
from tests.model.test_train import paraphrases

SUB = ModelConfig(embedding_dim=16, lstm_units=16, max_length=12, subwords=True, subword_buckets=5000, token_dropout=0.0)


def _unit(rows):
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_hasher_sees_the_words_the_vectorizer_sees():
    texts = ["How do I learn Python?", "What's the U.S.A. capital-city??", "", "  spaced   out  ", "Ünïcode wörds, too!"]
    vec = fit_vectorizer(texts, VocabConfig())
    ids, lengths = vectorize_padded(vec, texts, 64)
    grams = np.asarray(SubwordHasher(1000, 3, 5, 32, 64)(tf.constant(texts)))
    # A step holds n-grams exactly where the vectorizer put a word.
    words = (grams > 0).any(axis=2).sum(axis=1)
    assert words.tolist() == [5, 4, 0, 2, 3]
    # The vectorizer's lengths, except the empty text that it gives one OOV token.
    assert words.tolist() == [n if t.strip() else 0 for n, t in zip(lengths.tolist(), texts)]
    # "<i>" is the one n-gram of the word "i"; a word of 4 letters has 4 + 3 + 2 n-grams of sizes 3..5.
    assert (grams[0, 2] > 0).sum() == 1 and (grams[0, 1] > 0).sum() == 3
    assert (grams[0, 0] > 0).sum() == len("<how>") - 2 + len("<how>") - 3 + len("<how>") - 4
    assert grams.max() <= 1000 and grams[grams > 0].min() >= 1


def test_hasher_width_follows_the_token_ids_and_caps_ngrams_per_word():
    hasher = SubwordHasher(97, 3, 5, 4, 12)
    out = np.asarray(hasher(tf.constant(["a supercalifragilistic word", "x"]), width_like=tf.zeros((2, 5), tf.int32)))
    assert out.shape == (2, 5, 4)
    assert (out[0, 1] > 0).all() and (out[0, 3:] == 0).all()
    cut = np.asarray(hasher(tf.constant(["one two three"]), width_like=tf.zeros((1, 2), tf.int32)))
    assert cut.shape == (1, 2, 4)


def test_subword_table_matches_the_hasher_on_vocabulary_words():
    df = paraphrases(200, seed=3)
    vec = fit_vectorizer(df["question1"].tolist() + df["question2"].tolist(), VocabConfig())
    table = subword_table(vec, SUB)
    vocab = vec.get_vocabulary()
    assert table.shape == (len(vocab), SUB.subword_max_per_word)
    assert (table[:2] == 0).all()  # padding and OOV have no n-grams
    hasher = SubwordHasher(SUB.subword_buckets, 3, 5, SUB.subword_max_per_word, SUB.max_length)
    word = vocab[5]
    np.testing.assert_array_equal(table[5], np.asarray(hasher(tf.constant([word])))[0, 0])


def test_oov_words_get_a_vector_from_their_spelling():
    df = paraphrases(200, seed=3)
    vec = fit_vectorizer(df["question1"].tolist() + df["question2"].tolist(), VocabConfig())
    keras.utils.set_random_seed(0)
    with_sub = build_encoder(vec.vocabulary_size(), SUB)
    # Two unknown words map to the same OOV id: words only, they encode identically; with sub-words, not.
    ids = tf.constant([[1], [1]])
    hasher = subword_hasher(with_sub, SUB.max_length)
    grams = hasher(tf.constant(["pythonic", "zebra"]), width_like=ids)
    v = np.asarray(with_sub([ids, grams]))
    assert np.abs(v[0] - v[1]).max() > 1e-3
    words_only = build_encoder(vec.vocabulary_size(), SUB.model_copy(update={"subwords": False}))
    w = np.asarray(words_only(ids))
    np.testing.assert_allclose(w[0], w[1])


def test_encodings_do_not_depend_on_padding():
    keras.utils.set_random_seed(1)
    enc = build_encoder(50, SUB)
    ids = tf.constant([[5, 7, 9]])
    grams = tf.constant(np.random.default_rng(0).integers(1, 5000, (1, 3, SUB.subword_max_per_word)), tf.int32)
    a = np.asarray(enc([ids, grams]))
    b = np.asarray(enc([tf.pad(ids, [[0, 0], [0, 4]]), tf.pad(grams, [[0, 0], [0, 4], [0, 0]])]))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_softmax_loss_matches_a_numpy_reference():
    v1 = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    v2 = _unit([[0.9, 0.1, 0], [0.2, 1, 0], [0, 0.3, 1], [1, 0.8, 0.1]])
    y_pred = np.concatenate([v1, v2], axis=1)
    y = np.stack([np.arange(4), np.arange(4), np.ones(4)], axis=1).astype(np.float32)
    got = float(InBatchSoftmaxLoss(scale=20.0, symmetric=True)(y, y_pred))

    def ce(a, b):
        logits = 20.0 * a @ b.T
        return np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits))

    assert got == pytest.approx(0.5 * (ce(v1, v2) + ce(v2, v1)), rel=1e-5)
    one_way = float(InBatchSoftmaxLoss(scale=20.0, symmetric=False)(y, y_pred))
    assert one_way == pytest.approx(ce(v1, v2), rel=1e-5)


def test_false_negatives_are_masked_in_both_losses():
    # Rows 0 and 1 are the same duplicate cluster: row 1's question is not a negative of row 0.
    v1 = _unit([[1, 0, 0], [1, 0.05, 0], [0, 0, 1]])
    v2 = _unit([[1, 0.02, 0], [1, 0.04, 0], [0, 0.1, 1]])
    y_pred = np.concatenate([v1, v2], axis=1)
    separate = np.array([[0, 0, 1], [1, 1, 1], [2, 2, 1]], dtype=np.float32)
    together = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 1]], dtype=np.float32)
    for loss in (InBatchSoftmaxLoss(scale=20.0), TripletLoss(margin=0.25)):
        assert float(loss(together, y_pred)) < float(loss(separate, y_pred)) - 0.1
    # With the clash masked, only the far row 2 is a candidate: softmax loss near 0.
    assert float(InBatchSoftmaxLoss(scale=20.0)(together, y_pred)) < 0.05


def test_labelled_non_duplicates_enter_the_ranking_term():
    v1 = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    v2 = _unit([[0.7, 0.7, 0], [0, 1, 0.1], [0, 0.05, 1]])  # row 0: a non-duplicate with cosine 0.7
    y_pred = np.concatenate([v1, v2], axis=1)
    y = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 1]], dtype=np.float32)
    plain = float(InBatchSoftmaxLoss(scale=20.0)(y, y_pred))
    ranked = float(InBatchSoftmaxLoss(scale=20.0, negatives_weight=1.0)(y, y_pred))
    cos = (v1 * v2).sum(axis=1)
    cosent = np.log1p(np.exp(20 * (cos[0] - cos[1])) + np.exp(20 * (cos[0] - cos[2])))
    assert ranked - plain == pytest.approx(cosent, rel=1e-4)
    # A non-duplicate row is never an anchor, only a candidate: the softmax part averages rows 1 and 2 alone.
    def ce(a, b):
        logits = 20.0 * a @ b.T
        return (np.log(np.exp(logits).sum(axis=1)) - np.diag(logits))[1:].mean()

    assert plain == pytest.approx(0.5 * (ce(v1, v2) + ce(v2, v1)), rel=1e-4)


def test_losses_round_trip_their_config():
    for loss in (InBatchSoftmaxLoss(scale=7.0, symmetric=False, negatives_weight=0.5), TripletLoss(margin=0.3, negatives_weight=2.0)):
        again = type(loss).from_config(loss.get_config())
        assert again.get_config() == loss.get_config()


def test_clusters_join_pairs_that_share_a_question():
    df = pd.DataFrame({"question1": ["a", "b", "x", "p"], "question2": ["b", "c", "y", "q"], "is_duplicate": [1, 1, 1, 0]})
    c = question_clusters(df)
    assert c["a"] == c["b"] == c["c"] and c["x"] == c["y"] and c["x"] != c["a"] and c["p"] != c["q"]


def test_negatives_join_every_batch_in_length_order():
    df = paraphrases(300, seed=4)
    neg = pd.DataFrame({"question1": df["question1"][:100].values, "question2": df["question2"][200:300].values, "is_duplicate": 0})
    vec = fit_vectorizer(df["question1"].tolist() + df["question2"].tolist(), VocabConfig())
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=12)
    from qdup.model.batches import concat_pairs

    pairs = concat_pairs(pair_arrays(df, vec, cfg, "train"), pair_arrays(neg, vec, cfg, "negatives"))
    plan = epoch_plan(pairs, 300, 32, 8, seed=1, epoch=1)
    assert len(plan) == len(epoch_plan(pairs, 300, 32, 0, seed=1, epoch=1))
    for batch in plan:
        assert (batch >= 300).sum() == 8 or len(batch) - (batch >= 300).sum() < 2
    used = np.concatenate([b[b >= 300] for b in plan]) - 300
    assert len(used) == 8 * len(plan) == 80 and len(np.unique(used)) == 80  # no negative twice before all are used
    assert plan[0].tolist() == epoch_plan(pairs, 300, 32, 8, seed=1, epoch=1)[0].tolist()


@pytest.mark.slow
def test_training_with_every_option_exports_a_safe_model(tmp_path):
    train = paraphrases(400, seed=0)
    val = paraphrases(96, seed=1)
    neg = pd.DataFrame({"question1": train["question1"][:200].values, "question2": train["question2"][200:].values, "is_duplicate": 0})
    vec = fit_vectorizer(train["question1"].tolist() + train["question2"].tolist(), VocabConfig())
    cfg = TrainConfig(epochs=3, batch_size=32, loss="softmax", hard_negatives=0.25, learning_rate=0.01)
    result = train_model(train, val, vec, SUB, cfg, seed=0, work_dir=tmp_path / "w", log=lambda m: None, negatives_df=neg)
    assert result.facts["negative_pairs"] == 200 and result.facts["negatives_per_batch"] == 8
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    from qdup.serving.export import export_models
    from qdup.serving.predictor import load_inference

    export_models(result.encoder_path, vec, SUB, 0.5, tmp_path / "export")
    predictor = load_inference(tmp_path / "export")
    enc = network.load_encoder(result.encoder_path)
    q1, q2 = ["how do i learn pythn", "what is the capital of spain"], ["what is the best way to learn python", "how do i learn chess"]
    np.testing.assert_allclose(predictor.similarity(q1, q2), similarities(enc, vec, q1, q2, SUB.max_length), atol=1e-5)
    with pytest.raises(Exception, match="negatives"):
        train_model(train, val, vec, SUB, cfg, seed=0, work_dir=tmp_path / "w2", log=lambda m: None, negatives_df=None)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [("model", "subword_buckets", 0), ("train", "scale", 0), ("train", "scale", -1.0), ("model", "subword_ngrams", [5, 3])],
)
def test_configs_that_cannot_work_are_refused_naming_the_field(tmp_path, section, field, value):
    with pytest.raises(Exception, match=field):
        RetrainConfig.model_validate({section: {field: value}})
    path = tmp_path / "bad.json"
    path.write_text(f'{{"{section}": {{"{field}": {str(value).lower() if not isinstance(value, list) else value}}}}}')
    proc = subprocess.run([sys.executable, "-m", "qdup.cli", "run", "--config", str(path), "--source", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert field in proc.stderr and "Traceback" not in proc.stderr
