"""A version's encoder for queries and corpora: encoder.keras, vocabulary.txt and threshold.json of an export dir."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

import qdup.model.network  # noqa: F401  (registers the custom layers that safe_mode loading needs)
from qdup.errors import QdupError
from qdup.fileio import read_json, sha256_file
from qdup.model.encode import encode_with, encoder_fn
from qdup.model.network import encoder_masks_padding
from qdup.model.vocab import OOV_ID, load_vectorizer
from qdup.text import standardize

ENCODER_FILE = "encoder.keras"
VOCABULARY_FILE = "vocabulary.txt"
THRESHOLD_FILE = "threshold.json"
@dataclass
class QueryEncoder:
    """Unit encodings of texts with one version's encoder; `threshold` is its calibrated duplicate decision."""

    encoder: keras.Model
    vectorizer: Any
    max_length: int
    threshold: float
    run: Any
    _lookup: dict[str, int] | None = field(default=None, repr=False)

    def token_ids(self, text: str) -> np.ndarray:
        """Token ids of one text, as the vectorizer gives them, in plain Python.

        A single query through the Keras layer costs milliseconds of eager TensorFlow ops (string
        lower, regex, ragged split, table lookup); the same steps on one string take microseconds.
        """
        if self._lookup is None:
            vocab = self.vectorizer.get_vocabulary(include_special_tokens=True)
            self._lookup = {token: i for i, token in enumerate(vocab) if i > OOV_ID}
        words = standardize(text)
        ids = [self._lookup.get(w, OOV_ID) for w in words[: self.max_length]] or [OOV_ID]
        return np.asarray(ids, dtype=np.int32)

    def encode_one(self, text: str) -> np.ndarray:
        """(1, d) unit vector of one query: the low-latency path of `encode`."""
        if not isinstance(text, str) or not text.strip():
            raise QdupError(f"query: empty question {text!r}")
        ids = self.token_ids(text)
        if not encoder_masks_padding(self.encoder):
            ids = np.pad(ids, (0, self.max_length - len(ids)))
        return self.run(ids[None, :], [text]).numpy()

    def encode(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """(n, d) float32 unit vectors; an empty or blank text is refused with its position."""
        items = list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str) or not t.strip():
                raise QdupError(f"query {i}: empty question {t!r}")
        return encode_with(self.run, self.encoder, self.vectorizer, items, self.max_length, batch_size)


def load_query_encoder(export_dir: Path) -> QueryEncoder:
    """Load the encoder of an export dir (a version's `model/`), with safe_mode=True."""
    export_dir = Path(export_dir)
    paths = [export_dir / name for name in (ENCODER_FILE, VOCABULARY_FILE, THRESHOLD_FILE)]
    for p in paths:
        if not p.is_file():
            raise QdupError(f"{export_dir} is not a qdup export: {p.name} is missing")
    meta = read_json(paths[2])
    for key in ("threshold", "max_length"):
        if key not in meta:
            raise QdupError(f"{paths[2]} has no {key!r}")
    encoder = keras.saving.load_model(paths[0], safe_mode=True, compile=False)
    return QueryEncoder(encoder, load_vectorizer(paths[1]), int(meta["max_length"]), float(meta["threshold"]), encoder_fn(encoder))


# Encoders loaded by this process, by (export folder, sha256 of its files): see load_query_encoder_cached.
_LOADED: dict[tuple[str, ...], QueryEncoder] = {}
_LOADED_MAX = 2
_LOADED_LOCK = threading.Lock()


def load_query_encoder_cached(export_dir: Path) -> QueryEncoder:
    """`load_query_encoder`, once per process for each export folder and content (a Dask worker's many chunks)."""
    export_dir = Path(export_dir).resolve()
    digests = []
    for name in (ENCODER_FILE, VOCABULARY_FILE, THRESHOLD_FILE):
        try:
            digests.append(sha256_file(export_dir / name))
        except FileNotFoundError:
            raise QdupError(f"{export_dir} is not a qdup export: {name} is missing") from None
    key = (str(export_dir), *digests)
    with _LOADED_LOCK:
        encoder = _LOADED.get(key)
        if encoder is None:
            encoder = load_query_encoder(export_dir)
            while len(_LOADED) >= _LOADED_MAX:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[key] = encoder
        return encoder
