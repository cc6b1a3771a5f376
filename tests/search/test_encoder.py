"""The query encoder's plain-Python tokenisation gives the TextVectorization layer's ids and the same vectors."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from qdup.config import ModelConfig, VocabConfig
from qdup.model.encode import encode, encoder_fn
from qdup.model.network import build_encoder
from qdup.model.vocab import fit_vectorizer, vectorize
from qdup.search.encoder import QueryEncoder

TRICKY = [
    "What's the BEST way to learn C++/C#?",
    "ÉCOLE or école?  Naïve\tquestion\nwith   spaces",
    "non\u00a0breaking space and \u2014 dash",
    "???",
    "x" * 3 + " a-b_c.d,e (f) [g] {h} 'i' \"j\" \\k",
    "one two three four five six seven eight nine ten eleven twelve",
    "İstanbul ΣΊΣΥΦΟΣ straße",
]


def test_token_ids_and_vectors_match_the_keras_path(demo_tsv):
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    texts = list(dict.fromkeys(list(df.question1) + list(df.question2)))[:300] + TRICKY
    vec = fit_vectorizer(texts[:200] + TRICKY[:2], VocabConfig())
    for mask in (True, False):
        cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=10, mask_padding=mask)
        keras.utils.set_random_seed(0)
        enc = build_encoder(vec.vocabulary_size(), cfg)
        qe = QueryEncoder(enc, vec, cfg.max_length, 0.5, encoder_fn(enc))
        want_ids = vectorize(vec, texts, cfg.max_length)
        for text, want in zip(texts, want_ids, strict=True):
            np.testing.assert_array_equal(qe.token_ids(text), want, err_msg=repr(text))
        want_vecs = encode(enc, vec, texts[-20:], cfg.max_length)
        got = np.concatenate([qe.encode_one(t) for t in texts[-20:]])
        np.testing.assert_allclose(got, want_vecs, atol=1e-5)
