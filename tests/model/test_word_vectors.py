"""In-domain word vectors (word2vec, gensim) as the encoder's starting word embedding."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np

from qdup.config import ModelConfig, TrainConfig, VocabConfig
from qdup.model.word_vectors import word2vec_embeddings

TEXTS = ["How do I learn Python code?", "Best way to write Python code and program?", "Learn to program in Python",
         "How do I cook food in my kitchen?", "Best recipe to cook food?", "Kitchen recipe for food"] * 40
VOCAB = ["", "[UNK]", "python", "code", "program", "cook", "food", "recipe", "kitchen", "learn", "unseenword"]


TOPICS = ("python code program compile debug function variable syntax loop class".split(),
          "cook food recipe kitchen bake oven salt sugar dinner lunch".split())


def test_words_used_alike_start_closer_and_unseen_rows_are_seeded():
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 6)) for words in TOPICS for _ in range(300)]
    vocab = ["", "[UNK]", *TOPICS[0], *TOPICS[1], "unseenword"]
    m, info = word2vec_embeddings(texts, vocab, dim=16, seed=3, epochs=10)
    assert m.shape == (len(vocab), 16) and m.dtype == np.float32
    assert info["vocabulary_rows_from_word2vec"] == 20  # every word but padding, OOV and the unseen one
    # Words of one topic share their contexts: centred, their vectors point alike, and away from the other topic's.
    words = m[2:22] - m[2:22].mean(axis=0)
    unit = words / np.linalg.norm(words, axis=1, keepdims=True)
    cos = unit @ unit.T
    topic = np.arange(20) < 10
    same = topic[:, None] == topic[None, :]
    assert cos[same & ~np.eye(20, dtype=bool)].mean() > 0.2 > -0.2 > cos[~same].mean()
    again, _ = word2vec_embeddings(texts, vocab, dim=16, seed=3, epochs=10)
    np.testing.assert_array_equal(m, again)
    other, _ = word2vec_embeddings(texts, vocab, dim=16, seed=4, epochs=10)
    assert not np.array_equal(m, other)


def test_the_vectors_do_not_depend_on_pythons_string_hash():
    code = ("import hashlib; from qdup.model.word_vectors import word2vec_embeddings as w; from tests.model.test_word_vectors "
            "import TEXTS, VOCAB; print(hashlib.sha256(w(TEXTS, VOCAB, 8, 1, 3)[0].tobytes()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert len(digests) == 1
    here = hashlib.sha256(word2vec_embeddings(TEXTS, VOCAB, 8, 1, 3)[0].tobytes()).hexdigest()
    assert digests == {here}


def test_the_encoder_starts_from_the_word_vectors():
    from qdup.model.network import build_encoder
    from qdup.model.train import init_word_embedding
    from qdup.model.vocab import fit_vectorizer

    vectorizer = fit_vectorizer(TEXTS, VocabConfig())
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=12)
    encoder = build_encoder(vectorizer.vocabulary_size(), cfg)
    info = init_word_embedding(encoder, vectorizer, TEXTS, cfg, TrainConfig(embedding_init="word2vec", word2vec_epochs=3), 5)
    want, _ = word2vec_embeddings(TEXTS, vectorizer.get_vocabulary(), 8, 5, 3)
    np.testing.assert_array_equal(encoder.get_layer("embedding").get_weights()[0], want)
    assert info["vocabulary_rows_from_word2vec"] == vectorizer.vocabulary_size() - 2
