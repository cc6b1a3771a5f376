"""The fast form of the encoder (numpy inputs, ONNX Runtime) gives what the Keras encoder gives, and is trusted only when intact."""

from __future__ import annotations

import json
import logging
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from qdup.config import ModelConfig, VocabConfig
from qdup.errors import QdupError
from qdup.model.encode import encode, encode_keras
from qdup.model.features import QuestionFeaturizer, bucket_width
from qdup.model.network import SubwordHasher, build_encoder
from qdup.model.onnx_export import fast_encoder_from_keras, subword_spec
from qdup.model.vocab import fit_vectorizer, vectorize
from qdup.serving.export import export_models
from qdup.serving.predictor import load_inference

TRICKY = [
    "What's the BEST way to learn C++/C#?",
    "ÉCOLE or école?  Naïve\tquestion\nwith   spaces",
    "non\u00a0breaking space and \u2014 dash",
    "???",
    "x" * 3 + " a-b_c.d,e (f) [g] {h} 'i' \"j\" \\k",
    "one two three four five six seven eight nine ten eleven twelve",
    "İstanbul ΣΊΣΥΦΟΣ straße ❤️ 日本語",
    "a " * 40,
]


@pytest.fixture(scope="module")
def texts(demo_tsv):
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    return list(dict.fromkeys(list(df.question1) + list(df.question2)))[:300] + TRICKY


def test_token_and_subword_ids_are_the_keras_layers(texts):
    vec = fit_vectorizer(texts[:200] + TRICKY[:2], VocabConfig())
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=10, subword_buckets=997)
    enc = build_encoder(vec.vocabulary_size(), cfg)
    spec = subword_spec(enc)
    featurizer = QuestionFeaturizer(vec.get_vocabulary(include_special_tokens=True), cfg.max_length, spec)
    want_ids = vectorize(vec, texts, cfg.max_length)
    hasher = SubwordHasher(spec.buckets, spec.ngram_min, spec.ngram_max, spec.max_per_word, max_length=cfg.max_length)
    want_sub = hasher(tf.constant(texts)).numpy()
    for i, text in enumerate(texts):
        words = featurizer.words(text)
        ids, sub, lengths = featurizer.batch([words], max(1, len(words)))
        np.testing.assert_array_equal(ids[0], want_ids[i], err_msg=repr(text))
        n = len(words)
        assert lengths[0] == max(1, n)
        np.testing.assert_array_equal(sub[0, :n], want_sub[i, :n], err_msg=repr(text))
    assert [bucket_width(n, 64) for n in (1, 8, 9, 17, 64, 65)] == [4, 8, 12, 20, 64, 64]


def test_word_table_starts_again_when_full_and_is_shared_safely_between_threads(texts):
    from concurrent.futures import ThreadPoolExecutor

    vec = fit_vectorizer(texts[:50], VocabConfig())
    vocabulary = vec.get_vocabulary(include_special_tokens=True)
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=12, subword_buckets=997)
    spec = subword_spec(build_encoder(vec.vocabulary_size(), cfg))
    roomy = QuestionFeaturizer(vocabulary, cfg.max_length, spec)
    word_lists = [roomy.words(t) for t in texts]
    want = [roomy.batch(word_lists[i : i + 7], 12) for i in range(0, len(word_lists), 7)]
    # Room for 5 unseen words: the table empties itself many times over these texts and still gives the same inputs.
    tight = QuestionFeaturizer(vocabulary, cfg.max_length, spec, unseen_words=5)
    for start, (ids, sub, lengths) in zip(range(0, len(word_lists), 7), want, strict=True):
        got = tight.batch(word_lists[start : start + 7], 12)
        for a, b in zip(got, (ids, sub, lengths), strict=True):
            np.testing.assert_array_equal(a, b)
    assert len(roomy.batch(word_lists[:3], 12)[0]) == 3
    # Threads filling one new table at once (the server's model and search threads) get what one thread gets.
    shared = QuestionFeaturizer(vocabulary, cfg.max_length, spec)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: shared.batch(word_lists[i : i + 7], 12), range(0, len(word_lists), 7)))
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            np.testing.assert_array_equal(a, b)


def test_encoding_by_chunks_gives_the_same_vectors(texts, monkeypatch):
    import qdup.model.fast

    vec = fit_vectorizer(texts[:200], VocabConfig())
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=12, subword_buckets=509)
    keras.utils.set_random_seed(2)
    fast = fast_encoder_from_keras(build_encoder(vec.vocabulary_size(), cfg), vec, cfg.max_length)
    whole = fast.encode(texts)
    monkeypatch.setattr(qdup.model.fast, "ENCODE_CHUNK", 7)
    np.testing.assert_allclose(fast.encode(texts), whole, atol=1e-6)
    np.testing.assert_allclose(fast.encode(texts[:20] * 2), np.tile(whole[:20], (2, 1)), atol=1e-6)


@pytest.mark.parametrize("mask, subwords, bidirectional, pooling", [
    (True, True, True, "mean"), (False, True, True, "mean"), (True, False, False, "mean"), (False, False, True, "mean"),
    (True, False, True, "mean_max"), (False, True, False, "mean_max")])
def test_fast_form_equals_the_keras_encoder(texts, mask, subwords, bidirectional, pooling):
    vec = fit_vectorizer(texts[:200], VocabConfig())
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=12, mask_padding=mask, subwords=subwords,
                      bidirectional=bidirectional, subword_buckets=509, pooling=pooling)
    keras.utils.set_random_seed(1)
    enc = build_encoder(vec.vocabulary_size(), cfg)
    want = encode_keras(enc, vec, texts, cfg.max_length)
    fast = fast_encoder_from_keras(enc, vec, cfg.max_length)
    got = fast.encode(texts)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # One path for every batch size: a text alone, in small batches or among all gives the same vector.
    np.testing.assert_allclose(fast.encode(texts, batch_size=3), got, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([fast.encode([t]) for t in texts[-10:]]), got[-10:], atol=1e-6)
    np.testing.assert_allclose(encode(enc, vec, texts[:5] * 3, cfg.max_length), np.tile(got[:5], (3, 1)), atol=1e-6)
    # A lone surrogate (JSON allows "\ud800") is still a question: encoded, not a crash.
    assert np.isfinite(fast.encode(["what is \ud800 this"])).all()


@pytest.fixture(scope="module")
def export(tmp_path_factory, texts):
    tmp = tmp_path_factory.mktemp("fast")
    vec = fit_vectorizer(texts[:200], VocabConfig())
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=12, subword_buckets=509)
    keras.utils.set_random_seed(2)
    enc = build_encoder(vec.vocabulary_size(), cfg)
    enc.save(tmp / "encoder.keras")
    export_models(tmp / "encoder.keras", vec, cfg, 0.5, tmp / "export")
    return tmp / "export"


def test_an_altered_or_missing_fast_file_refuses_the_export(export, tmp_path):
    bad = tmp_path / "altered"
    shutil.copytree(export, bad)
    data = bytearray((bad / "encoder.onnx").read_bytes())
    data[-10] ^= 1
    (bad / "encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(QdupError, match=r"encoder\.onnx: sha256 differs from threshold\.json"):
        load_inference(bad)
    (bad / "encoder.onnx").unlink()
    with pytest.raises(QdupError, match=r"encoder\.onnx: missing"):
        load_inference(bad)


def test_an_export_without_a_fast_file_is_served_by_keras_and_says_so(export, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(export, old)
    (old / "encoder.onnx").unlink()
    meta = json.loads((old / "threshold.json").read_text())
    del meta["fast_inference"]
    (old / "threshold.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        keras_predictor = load_inference(old)
    assert keras_predictor.runtime == "keras"
    assert "has no derived fast-inference file" in caplog.text
    fast_predictor = load_inference(export)
    assert fast_predictor.runtime == "onnxruntime"
    q1, q2 = ["how do i learn python", "why is the sky blue"], ["what is the best way to learn python", "python"]
    np.testing.assert_allclose(keras_predictor.similarity(q1, q2), fast_predictor.similarity(q1, q2), atol=1e-5)


def test_runtime_threads_do_not_spin_between_calls():
    """Spinning intra-op threads would hold the cores a search's lexical and fusion steps need right after encoding."""
    from qdup.model.fast import session_options

    opts = session_options(2)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
