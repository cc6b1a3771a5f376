"""Load an exported model (raw strings in, similarity out) and score pairs and files with it.

Label convention: is_duplicate 1 = same intent; similarity = cosine of the two L2-normalised
encodings in [-1, 1]; a pair is predicted to be a duplicate iff similarity >= threshold, or, for an
export with a pair reranker, iff the reranker's score (a probability) >= the reranker's threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from qdup.errors import QdupError
from qdup.evaluation.reranker import Reranker, has_reranker, load_reranker
from qdup.fileio import atomic_write_bytes, read_json

# Importing qdup.model.encode imports qdup.model.network, which registers the custom layers that saved models name.
from qdup.model.encode import encode_with, encoder_fn, pair_cosines
from qdup.model.network import load_saved_model

INFERENCE_FILE = "inference.keras"
ENCODER_FILE = "encoder.keras"
THRESHOLD_FILE = "threshold.json"
VOCAB_FILE = "vocabulary.txt"
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
    """A loaded export: `similarity` for raw question pairs and the calibrated `threshold`; `reranker` when the export has one."""

    def __init__(
        self, model: keras.Model, threshold: float, max_length: int, meta: dict[str, Any] | None = None,
        reranker: Reranker | None = None,
    ):
        self.model = model
        self.threshold = float(threshold)
        self.max_length = int(max_length)
        self.meta = dict(meta or {})
        self.reranker = reranker

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

    def encode(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """Unit encodings (n, d) float32 of questions (each a non-blank str, else QdupError naming its index)."""
        items = check_questions(texts, "questions")
        return encode_with(self._encode_run, self._encoder, self._vectorizer, items, self.max_length, batch_size)

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

    @property
    def decision_threshold(self) -> float:
        """The threshold the duplicate decision uses: the reranker's (on its score) when there is one, else the cosine's."""
        return self.threshold if self.reranker is None else self.reranker.threshold

    def decide(self, q1s: Sequence[str], q2s: Sequence[str], batch_size: int = 1024) -> dict[str, np.ndarray | None]:
        """similarity (encoder cosine), reranker_score (None without a reranker) and duplicate for each pair."""
        sim = self.similarity(q1s, q2s, batch_size)
        if self.reranker is None:
            return {"similarity": sim, "reranker_score": None, "duplicate": sim >= self.threshold}
        score = self.reranker.score(list(q1s), list(q2s), sim)
        return {"similarity": sim, "reranker_score": score, "duplicate": self.reranker.decide(score)}

    def predict(self, q1s: Sequence[str], q2s: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """True where a pair is predicted to be a duplicate (the reranker's decision when there is one, else similarity >= threshold)."""
        return self.decide(q1s, q2s, batch_size)["duplicate"]


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
    model = load_saved_model(model_path)
    reranker = load_reranker(path) if has_reranker(path) else None
    if reranker is None and meta.get("reranker"):
        raise QdupError(f"{meta_path} names a reranker but {path} holds none")
    return Predictor(model=model, threshold=float(meta["threshold"]), max_length=int(meta["max_length"]), meta=meta,
                     reranker=reranker)


def score_file(
    predictor: Predictor,
    pairs_tsv: Path,
    out_parquet: Path,
    chunk_size: int = 16384,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score a TSV of pairs (columns question1, question2, optional id) into Parquet, atomically.

    Output columns: id (when the input has one), similarity (float32), reranker_score (float64, with a
    reranker), duplicate (bool: the predictor's decision, `Predictor.decide`). Every row is validated before anything is scored.
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
    score = np.zeros(total, dtype=np.float64)
    duplicate = np.zeros(total, dtype=bool)
    q1, q2 = df["question1"].tolist(), df["question2"].tolist()
    if chunk_size < 1:
        raise QdupError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, total, chunk_size):
        end = min(start + chunk_size, total)
        got = predictor.decide(q1[start:end], q2[start:end])
        sim[start:end], duplicate[start:end] = got["similarity"], got["duplicate"]
        if got["reranker_score"] is not None:
            score[start:end] = got["reranker_score"]
        if progress is not None:
            progress(end, total)

    columns: dict[str, pa.Array] = {}
    if "id" in df.columns:
        columns["id"] = pa.array(df["id"].to_numpy())
    columns["similarity"] = pa.array(sim, type=pa.float32())
    if predictor.reranker is not None:
        columns["reranker_score"] = pa.array(score, type=pa.float64())
    columns["duplicate"] = pa.array(duplicate, type=pa.bool_())
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, compression="zstd")
    atomic_write_bytes(out_parquet, sink.getvalue().to_pybytes())
    return {"path": str(out_parquet), "rows": total, "duplicates": int(np.count_nonzero(duplicate))}
