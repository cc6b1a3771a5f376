"""A version's encoder for queries and corpora: the encoder (fast form, else Keras), vocabulary and threshold of an export dir."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdup.errors import QdupError
from qdup.fileio import sha256_file
from qdup.model.exported import FAST_FILE, INFERENCE_FILE, THRESHOLD_FILE, VOCAB_FILE, PairEncoder, load_pair_encoder, read_export_meta

VOCABULARY_FILE = VOCAB_FILE


@dataclass
class QueryEncoder:
    """Unit encodings of texts with one version's encoder; `threshold` is its calibrated duplicate decision."""

    encoder: PairEncoder
    max_length: int
    threshold: float

    def encode_one(self, text: str) -> np.ndarray:
        """(1, d) unit vector of one query."""
        if not isinstance(text, str) or not text.strip():
            raise QdupError(f"query: empty question {text!r}")
        return self.encoder.encode([text])

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """(n, d) float32 unit vectors; an empty or blank text is refused with its position."""
        items = list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str) or not t.strip():
                raise QdupError(f"query {i}: empty question {t!r}")
        return self.encoder.encode(items) if batch_size is None else self.encoder.encode(items, batch_size)


def load_query_encoder(export_dir: Path) -> QueryEncoder:
    """Load the encoder of an export dir (a version's `model/`): its fast form, else its Keras model (safe_mode=True)."""
    export_dir = Path(export_dir)
    meta = read_export_meta(export_dir)
    encoder, _ = load_pair_encoder(export_dir, meta)
    return QueryEncoder(encoder, int(meta["max_length"]), float(meta["threshold"]))


# Encoders loaded by this process, by (export folder, sha256 of its files): see load_query_encoder_cached.
_LOADED: dict[tuple[str, ...], QueryEncoder] = {}
_LOADED_MAX = 2
_LOADED_LOCK = threading.Lock()


def load_query_encoder_cached(export_dir: Path) -> QueryEncoder:
    """`load_query_encoder`, once per process for each export folder and content (a Dask worker's many chunks)."""
    export_dir = Path(export_dir).resolve()
    digests = []
    for name in (THRESHOLD_FILE, VOCABULARY_FILE, FAST_FILE, INFERENCE_FILE):
        if (export_dir / name).is_file():
            digests.append(f"{name}:{sha256_file(export_dir / name)}")
    if not any(d.startswith(THRESHOLD_FILE) for d in digests):
        raise QdupError(f"{export_dir} is not a qdup export: {THRESHOLD_FILE} is missing")
    key = (str(export_dir), *digests)
    with _LOADED_LOCK:
        encoder = _LOADED.get(key)
        if encoder is None:
            encoder = load_query_encoder(export_dir)
            while len(_LOADED) >= _LOADED_MAX:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[key] = encoder
        return encoder
