"""In-domain word vectors as the encoder's initial word embeddings: word2vec (gensim) fitted on the training questions.

The encoder's embedding otherwise starts from Keras's random uniform weights and learns every word only from the
duplicate pairs it appears in. Skip-gram word2vec reads every training question (both sides of every pair), so words
seen in few pairs start near the words they are used like.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from qdup.text import standardize

# Skip-gram with negative sampling, gensim's defaults otherwise (window 5, 5 negatives). min_count 1: the vocabulary
# decides which words have rows, and a word the vocabulary kept should get its vector.
WINDOW = 5
MIN_COUNT = 1


def _stable_hash(text: str) -> int:
    # gensim seeds each word's starting vector with hashfxn(word + seed); Python's own str hash differs per process.
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


def word2vec_embeddings(
    texts: Sequence[str], vocabulary: Sequence[str], dim: int, seed: int, epochs: int
) -> tuple[np.ndarray, dict[str, float | int]]:
    """A (len(vocabulary), dim) float32 matrix whose row i is the word2vec vector of vocabulary[i], fitted on `texts`
    (tokenised as the vocabulary is, `qdup.text.standardize`), on one thread with `seed` (the same matrix every run).

    Rows of tokens word2vec never saw (padding, the OOV token, a word absent from `texts`) are drawn from a seeded
    normal with the fitted vectors' standard deviation. Also returns what was fitted (words, vectors' scale).
    """
    from gensim.models import Word2Vec

    sentences = [tokens for tokens in (standardize(t) for t in texts) if tokens]
    model = Word2Vec(sentences, vector_size=dim, window=WINDOW, min_count=MIN_COUNT, sg=1, workers=1, seed=int(seed),
                     epochs=int(epochs), hashfxn=_stable_hash)
    fitted = model.wv
    scale = float(np.std(fitted.vectors)) if len(fitted) else 0.05
    rng = np.random.default_rng(int(seed))
    out = rng.normal(0.0, scale, size=(len(vocabulary), dim)).astype(np.float32)
    found = 0
    for i, word in enumerate(vocabulary):
        if word in fitted.key_to_index:
            out[i] = fitted[word]
            found += 1
    return out, {"words_fitted": len(fitted), "vocabulary_rows_from_word2vec": found, "scale": scale,
                 "sentences": len(sentences), "epochs": int(epochs)}
