"""Load an exported model (raw strings in, similarity out) and score pairs and files with it.

Label convention: is_duplicate 1 = same intent; similarity = cosine of the two L2-normalised
encodings in [-1, 1]; a pair is predicted to be a duplicate iff similarity >= threshold, or, for an
export whose pair reranker decides (threshold.json's reranker "serves": true, chosen on the selection
split), iff the reranker's score (a probability) >= the reranker's threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdup.errors import QdupError
from qdup.evaluation.reranker import Reranker
from qdup.evaluation.reranker_io import has_reranker, load_reranker
from qdup.fileio import atomic_write_bytes
from qdup.model.exported import THRESHOLD_FILE, PairEncoder, load_pair_encoder, read_export_meta
from qdup.search.candidate_rerank import load_version_search_reranker
from qdup.serving.questions import check_questions, read_pairs

# Pairs the export checks itself on (the saved model must agree with the training-time path), and the server probes a version with.
PROBE_PAIRS = (
    ("How do I learn Python?", "What is the best way to learn Python?"),
    ("What is the capital of France?", "How do I learn Python?"),
    ("???", "an unseen zyxwv token"),
    ("word " * 200, "word"),
)


class Predictor:
    """A loaded export: `similarity` for raw question pairs and the calibrated `threshold`; `reranker` when the export has one.

    `encoder` is the export's fast form (`qdup.model.fast.FastEncoder`), or, for a version exported without one,
    its Keras model (`qdup.model.encode.KerasPairEncoder`); `runtime` says which.
    """

    def __init__(
        self, encoder: PairEncoder, threshold: float, max_length: int, meta: dict[str, Any] | None = None,
        reranker: Reranker | None = None, runtime: str = "onnxruntime", search_reranker: Reranker | None = None,
    ):
        self.encoder = encoder
        # Orders the first candidates of `reranked` search (qdup.search.candidate_rerank); never the pair decision.
        self.search_reranker = search_reranker
        self.threshold = float(threshold)
        self.max_length = int(max_length)
        self.meta = dict(meta or {})
        self.reranker = reranker
        self.runtime = runtime
        # Which score makes the duplicate decision: the reranker's only where the export says it serves (an export from
        # before that choice existed: wherever it has one).
        serves = ((self.meta.get("reranker") or {}).get("serves", True)) if reranker is not None else False
        self.decided_by = "reranker" if serves else "encoder"

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Unit encodings (n, d) float32 of questions (each a non-blank str, else QdupError naming its index)."""
        items = check_questions(texts, "questions")
        # None: the runtime's own batch size (the fast form's is smaller than Keras's).
        return self.encoder.encode(items) if batch_size is None else self.encoder.encode(items, batch_size)

    def similarity(self, q1s: Sequence[str], q2s: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Cosine similarity (float32) of each pair; questions over max_length tokens are truncated.

        Every question must be a non-blank str; otherwise QdupError names its index and value. Each
        distinct question is encoded once, padded to its own length bucket, so a pair gets the same
        similarity whatever it is batched with.
        """
        a = check_questions(q1s, "question1")
        b = check_questions(q2s, "question2")
        if len(a) != len(b):
            raise QdupError(f"question lists differ in length: {len(a)} question1 vs {len(b)} question2")
        if batch_size is None:
            return self.encoder.similarity(a, b)
        if batch_size < 1:
            raise QdupError(f"batch_size must be >= 1, got {batch_size}")
        return self.encoder.similarity(a, b, batch_size)

    @property
    def decision_threshold(self) -> float:
        """The threshold the duplicate decision uses: the reranker's (on its score) when it decides, else the cosine's."""
        return self.reranker.threshold if self.decided_by == "reranker" else self.threshold

    def decide(self, q1s: Sequence[str], q2s: Sequence[str], batch_size: int | None = None) -> dict[str, np.ndarray | None]:
        """similarity (encoder cosine), reranker_score (None without a reranker) and duplicate for each pair."""
        sim = self.similarity(q1s, q2s, batch_size)
        if self.reranker is None:
            return {"similarity": sim, "reranker_score": None, "duplicate": sim >= self.threshold}
        score = self.reranker.score(list(q1s), list(q2s), sim)
        if self.decided_by == "encoder":
            return {"similarity": sim, "reranker_score": score, "duplicate": sim >= self.threshold}
        return {"similarity": sim, "reranker_score": score, "duplicate": self.reranker.decide(score)}

    def served_scores(self, q1s: Sequence[str], q2s: Sequence[str]) -> np.ndarray:
        """The score each pair's decision compares with `decision_threshold` (float64): the reranker's or the cosine."""
        got = self.decide(q1s, q2s)
        return np.asarray(got["reranker_score"] if self.decided_by == "reranker" else got["similarity"], dtype=np.float64)

    def predict(self, q1s: Sequence[str], q2s: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """True where a pair is predicted to be a duplicate (the reranker's decision where it decides, else similarity >= threshold)."""
        return self.decide(q1s, q2s, batch_size)["duplicate"]


def load_inference(path: Path) -> Predictor:
    """Load an export directory written by `export_models` (its fast form, else its Keras model with safe_mode=True)."""
    path = Path(path)
    meta = read_export_meta(path)
    encoder, runtime = load_pair_encoder(path, meta)
    reranker = load_reranker(path) if has_reranker(path) else None
    if reranker is None and meta.get("reranker"):
        raise QdupError(f"{path / THRESHOLD_FILE} names a reranker but {path} holds none")
    search_reranker = load_version_search_reranker(path, reranker, meta)
    return Predictor(encoder, threshold=float(meta["threshold"]), max_length=int(meta["max_length"]), meta=meta,
                     reranker=reranker, runtime=runtime, search_reranker=search_reranker)



def score_file(
    predictor: Predictor,
    pairs_tsv: Path,
    out_parquet: Path,
    chunk_size: int = 16384,
    progress: Callable[[int, int], None] | None = None,
    pairs: Any = None,
) -> dict[str, Any]:
    """Score a TSV of pairs (columns question1, question2, optional id) into Parquet, atomically.

    Output columns: id (when the input has one), similarity (float32), reranker_score (float64, with a
    reranker), duplicate (bool: the predictor's decision, `Predictor.decide`). Every row is validated before anything is scored.
    Pairs are scored in chunks of `chunk_size` (large, so that `Predictor.similarity` can sort
    and deduplicate the questions of many pairs); `progress(done, total)` is called after each. `pairs`: the file
    already read by `qdup.serving.questions.read_pairs` (the CLI reads it before the model loads).
    """
    # Imported here: `qdup predict` of one pair should not pay for them.
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_parquet = Path(out_parquet)
    df = read_pairs(pairs_tsv) if pairs is None else pairs
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
