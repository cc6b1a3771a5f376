"""Export the trained model for serving (raw strings in, similarity out), load it back, score files.

Label convention: is_duplicate 1 = same intent; similarity = cosine of the two L2-normalised
encodings in [-1, 1]; a pair is predicted to be a duplicate iff similarity >= threshold.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from qdup.config import ModelConfig
from qdup.errors import QdupError
from qdup.fileio import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    sha256_file,
)
from tasks.evaluate import LABEL_CONVENTION, encoder_fn, pair_cosines, similarities

# Importing tasks.model registers the custom layers that the saved models name.
from tasks.model import build_inference_model
from tasks.vocab import write_vocabulary

INFERENCE_FILE = "inference.keras"
ENCODER_FILE = "encoder.keras"
THRESHOLD_FILE = "threshold.json"
VOCAB_FILE = "vocabulary.txt"
# Pairs the export checks itself on: the saved model must agree with the training-time path.
PROBE_PAIRS = (
    ("How do I learn Python?", "What is the best way to learn Python?"),
    ("What is the capital of France?", "How do I learn Python?"),
    ("???", "an unseen zyxwv token"),
    ("word " * 200, "word"),
)
PROBE_ATOL = 1e-5
# Predictor.similarity's single-call path (latency) up to this many pairs; above, the batch path.
SMALL_BATCH = 64


def _first_invalid(values: Sequence[Any]) -> tuple[int, Any, str] | None:
    """(index, value, reason) of the first entry that is not a non-blank string, else None."""
    for i, v in enumerate(values):
        if not isinstance(v, str):
            return i, v, f"is not a string ({type(v).__name__})"
        if not v.strip():
            return i, v, "is empty or whitespace-only"
    return None


def check_questions(values: Sequence[Any], name: str) -> list[str]:
    """Validate a batch of questions; QdupError names the offending index and value."""
    if isinstance(values, (str, bytes)):
        raise QdupError(f"{name} must be a sequence of strings, not a single {type(values).__name__}: {values[:60]!r}")
    items = list(values)
    bad = _first_invalid(items)
    if bad is not None:
        i, v, reason = bad
        raise QdupError(f"{name}[{i}] {reason}: {v!r}")
    return items


class Predictor:
    """A loaded export: `similarity` for raw question pairs and the calibrated `threshold`."""

    def __init__(self, model: keras.Model, threshold: float, max_length: int, meta: dict[str, Any] | None = None):
        self.model = model
        self.threshold = float(threshold)
        self.max_length = int(max_length)
        self.meta = dict(meta or {})

        # One graph for every batch size (traced once), rather than Keras predict's per-shape retracing.
        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string), tf.TensorSpec((None,), tf.string)])
        def run(q1, q2):
            return model([q1, q2], training=False)

        self._run = run
        # The batch path runs the same encoder and vectorizer, taken out of the saved model.
        self._encoder = model.get_layer("encoder")
        vectorizers = [layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization)]
        if len(vectorizers) != 1:
            raise QdupError(f"the inference model should hold one TextVectorization layer, found {len(vectorizers)}")
        self._vectorizer = vectorizers[0]
        self._encode_run = encoder_fn(self._encoder)

    def similarity(self, q1s: Sequence[str], q2s: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """Cosine similarity (float32) of each pair; questions over max_length tokens are truncated.

        Every question must be a non-blank str; otherwise QdupError names its index and value.
        Up to SMALL_BATCH pairs go through the saved model's graph in one call (lowest latency).
        Larger inputs encode each distinct question once, in length order so that each batch is
        padded only to its own longest question, then take the cosines; the encodings do not
        depend on the padding, so both paths agree to float rounding.
        """
        a = check_questions(q1s, "question1")
        b = check_questions(q2s, "question2")
        if len(a) != len(b):
            raise QdupError(f"question lists differ in length: {len(a)} question1 vs {len(b)} question2")
        if batch_size < 1:
            raise QdupError(f"batch_size must be >= 1, got {batch_size}")
        if len(a) > SMALL_BATCH:
            return pair_cosines(self._encode_run, self._encoder, self._vectorizer, a, b, self.max_length, batch_size)
        out = self._run(tf.constant(a, dtype=tf.string), tf.constant(b, dtype=tf.string)).numpy()
        # As in evaluation: float32 rounding can step a cosine just past +-1.
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def predict(self, q1s: Sequence[str], q2s: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """True where a pair is predicted to be a duplicate (similarity >= threshold)."""
        return self.similarity(q1s, q2s, batch_size) >= self.threshold


def export_models(
    encoder_path: Path,
    vectorizer: keras.layers.TextVectorization,
    model_cfg: ModelConfig,
    threshold: float,
    out_dir: Path,
) -> dict[str, Any]:
    """Write the serving bundle to out_dir in one atomic step (temporary sibling, then rename).

    out_dir/inference.keras: two string inputs -> similarity, vectorizer and truncation inside;
    out_dir/encoder.keras: the trained encoder (token ids -> unit vectors);
    out_dir/vocabulary.txt: the vocabulary, line i = token id i;
    out_dir/threshold.json: the threshold (chosen on the calibration split) and what it means.
    Before the rename, the saved inference model is reloaded with safe_mode=True and must
    reproduce the encoder's similarities on probe pairs.
    """
    encoder_path = Path(encoder_path)
    out_dir = Path(out_dir)
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise QdupError(f"threshold must be a finite cosine in [-1, 1], got {threshold!r}")
    if not encoder_path.is_file():
        raise QdupError(f"encoder file not found: {encoder_path}")
    encoder = keras.saving.load_model(encoder_path, safe_mode=True, compile=False)
    inference = build_inference_model(encoder, vectorizer, model_cfg.max_length)

    with atomic_dir(out_dir) as tmp:
        inference.save(tmp / INFERENCE_FILE)
        shutil.copyfile(encoder_path, tmp / ENCODER_FILE)
        vocab_size = write_vocabulary(vectorizer, tmp / VOCAB_FILE)

        reloaded = keras.saving.load_model(tmp / INFERENCE_FILE, safe_mode=True, compile=False)
        p1 = [a for a, _ in PROBE_PAIRS]
        p2 = [b for _, b in PROBE_PAIRS]
        got = Predictor(reloaded, float(threshold), model_cfg.max_length).similarity(p1, p2)
        want = similarities(encoder, vectorizer, p1, p2, model_cfg.max_length)
        if not np.allclose(got, want, atol=PROBE_ATOL):
            raise QdupError(
                f"the saved inference model disagrees with the encoder on probe pairs: {got.tolist()} vs {want.tolist()}"
            )

        files = {name: sha256_file(tmp / name) for name in (INFERENCE_FILE, ENCODER_FILE, VOCAB_FILE)}
        atomic_write_json(
            tmp / THRESHOLD_FILE,
            {
                "threshold": float(threshold),
                "chosen_on": "calibration",
                "similarity": "cosine",
                "label_convention": LABEL_CONVENTION,
                "max_length": model_cfg.max_length,
                "vocab_size": vocab_size,
                "model": model_cfg.model_dump(mode="json"),
                "sha256": files,
                "keras": keras.__version__,
                "tensorflow": tf.__version__,
            },
        )
    meta = read_json(out_dir / THRESHOLD_FILE)
    return {
        "dir": str(out_dir),
        "threshold": meta["threshold"],
        "files": {name: str(out_dir / name) for name in (INFERENCE_FILE, ENCODER_FILE, VOCAB_FILE, THRESHOLD_FILE)},
        "sha256": meta["sha256"],
    }


def load_inference(path: Path) -> Predictor:
    """Load an export directory written by `export_models` (safe_mode=True: no arbitrary code)."""
    path = Path(path)
    meta_path = path / THRESHOLD_FILE
    model_path = path / INFERENCE_FILE
    for p in (meta_path, model_path):
        if not p.is_file():
            raise QdupError(f"{path} is not a qdup export: {p.name} is missing")
    meta = read_json(meta_path)
    for key in ("threshold", "max_length"):
        if key not in meta:
            raise QdupError(f"{meta_path} has no {key!r}")
    model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    return Predictor(model=model, threshold=float(meta["threshold"]), max_length=int(meta["max_length"]), meta=meta)


def score_file(
    predictor: Predictor,
    pairs_tsv: Path,
    out_parquet: Path,
    chunk_size: int = 16384,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score a TSV of pairs (columns question1, question2, optional id) into Parquet, atomically.

    Output columns: id (when the input has one), similarity (float32), duplicate (bool,
    similarity >= predictor.threshold). Every row is validated before anything is scored.
    Pairs are scored in chunks of `chunk_size` (large, so that `Predictor.similarity` can sort
    and deduplicate the questions of many pairs); `progress(done, total)` is called after each.
    """
    pairs_tsv = Path(pairs_tsv)
    out_parquet = Path(out_parquet)
    if not pairs_tsv.is_file():
        raise QdupError(f"pairs file not found: {pairs_tsv}")
    # Questions stay text as written: no NA inference ("NA", "null" are questions too); an empty
    # cell reads as "" and is then rejected by name.
    try:
        df = pd.read_csv(pairs_tsv, sep="\t", dtype={"question1": str, "question2": str}, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise QdupError(f"{pairs_tsv} is not a readable TSV: {e}") from e
    except pd.errors.EmptyDataError:
        raise QdupError(f"{pairs_tsv} is empty (no header line)") from None
    for col in ("question1", "question2"):
        if col not in df.columns:
            raise QdupError(f"{pairs_tsv} has no {col!r} column (columns: {list(df.columns)})")
    for col in ("question1", "question2"):
        bad = _first_invalid(df[col].tolist())
        if bad is not None:
            i, v, reason = bad
            raise QdupError(f"{pairs_tsv}: {col} of data row {i} (file line {i + 2}) {reason}: {v!r}")

    total = len(df)
    sim = np.zeros(total, dtype=np.float32)
    q1, q2 = df["question1"].tolist(), df["question2"].tolist()
    if chunk_size < 1:
        raise QdupError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, total, chunk_size):
        end = min(start + chunk_size, total)
        sim[start:end] = predictor.similarity(q1[start:end], q2[start:end])
        if progress is not None:
            progress(end, total)

    duplicate = sim >= predictor.threshold
    columns: dict[str, pa.Array] = {}
    if "id" in df.columns:
        columns["id"] = pa.array(df["id"].to_numpy())
    columns["similarity"] = pa.array(sim, type=pa.float32())
    columns["duplicate"] = pa.array(duplicate, type=pa.bool_())
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, compression="zstd")
    atomic_write_bytes(out_parquet, sink.getvalue().to_pybytes())
    return {"path": str(out_parquet), "rows": total, "duplicates": int(np.count_nonzero(duplicate))}
