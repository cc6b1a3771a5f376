"""An export directory's files (the layout `qdup.serving.export` writes) and its encoder, loaded on the fast form when
there is one: the model layer's view of an export, which search and serving both load from."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qdup.errors import QdupError
from qdup.fileio import read_json, sha256_file

INFERENCE_FILE = "inference.keras"
ENCODER_FILE = "encoder.keras"
# The derived fast-inference form of encoder.keras (qdup.model.onnx_export), hashed in threshold.json.
FAST_FILE = "encoder.onnx"
THRESHOLD_FILE = "threshold.json"
VOCAB_FILE = "vocabulary.txt"

# Propagates: under `qdup run` a fallback's warning reaches the stage display (qdup.cli.progress).
log = logging.getLogger(__name__)


class PairEncoder(Protocol):
    """What a predictor needs of an encoder: unit encodings of questions, and cosines of pairs."""

    max_length: int

    def encode(self, texts: Sequence[str], batch_size: int = ...) -> np.ndarray: ...

    def similarity(self, q1: Sequence[str], q2: Sequence[str], batch_size: int = ...) -> np.ndarray: ...


def read_export_meta(path: Path) -> dict[str, Any]:
    """threshold.json of an export directory, with the keys every loader needs checked."""
    meta_path = Path(path) / THRESHOLD_FILE
    if not meta_path.is_file():
        raise QdupError(f"{path} is not a qdup export: {THRESHOLD_FILE} is missing")
    meta = read_json(meta_path)
    for key in ("threshold", "max_length"):
        if key not in meta:
            raise QdupError(f"{meta_path} has no {key!r}")
    return meta


def load_pair_encoder(path: Path, meta: dict[str, Any]) -> tuple[PairEncoder, str]:
    """The encoder of an export and the runtime it runs on: the fast form when the export has one (its file and the
    vocabulary checked against threshold.json's sha256, an altered or missing one refused), else the Keras model
    (said in a log line: versions exported before the fast form existed)."""
    path = Path(path)
    max_length = int(meta["max_length"])
    fast = meta.get("fast_inference")
    if fast:
        from qdup.model.fast import FastEncoder, featurizer_for
        from qdup.model.vocabulary_file import read_vocabulary

        digests = meta.get("sha256") or {}
        for name in (FAST_FILE, VOCAB_FILE):
            file = path / name
            if not file.is_file():
                raise QdupError(f"{file}: missing; {THRESHOLD_FILE} names it as part of this export")
            if name not in digests:
                raise QdupError(f"{path / THRESHOLD_FILE}: no sha256 for {name}")
            if sha256_file(file) != digests[name]:
                raise QdupError(f"{file}: sha256 differs from {THRESHOLD_FILE}; the file was altered or damaged")
        featurizer = featurizer_for(read_vocabulary(path / VOCAB_FILE), max_length, meta.get("model") or {})
        return FastEncoder(path / FAST_FILE, featurizer, bool(fast["masks_padding"])), "onnxruntime"
    model_path = path / INFERENCE_FILE
    if not model_path.is_file():
        raise QdupError(f"{path} is not a qdup export: {INFERENCE_FILE} is missing")
    log.warning("%s has no derived fast-inference file (%s): serving its Keras model, %s", path, FAST_FILE, INFERENCE_FILE)
    from qdup.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    from qdup.model.encode import KerasPairEncoder
    from qdup.model.network import load_saved_model

    return KerasPairEncoder(load_saved_model(model_path), max_length), "keras"
