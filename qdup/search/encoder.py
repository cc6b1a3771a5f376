"""A version's encoder for queries and corpora: encoder.keras, vocabulary.txt and threshold.json of an export dir."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

import qdup.model.network  # noqa: F401  (registers the custom layers that safe_mode loading needs)
from qdup.errors import QdupError
from qdup.fileio import read_json
from qdup.model.encode import encode_with, encoder_fn
from qdup.model.vocab import load_vectorizer

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
