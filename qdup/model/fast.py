"""Fast inference without TensorFlow: an encoder's ONNX form run by ONNX Runtime on numpy inputs.

One path for every caller and batch size: distinct questions are encoded once, in length order, each
padded to its own length bucket (`qdup.model.features.bucket_width`), so a question's encoding does not
depend on what it was batched with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qdup.errors import QdupError
from qdup.model.features import QuestionFeaturizer, SubwordSpec, bucket_widths

# Texts per runtime call: the LSTM's per-step state of 64 texts stays in the CPU's cache, so 64 encodes faster than
# larger calls (bench.search's index build; bench.inference for real-length text).
BATCH_TEXTS = 64
THREADS_ENV = "QDUP_INFERENCE_THREADS"
# Distinct texts tokenised, sorted and encoded at a time.
ENCODE_CHUNK = 32_768


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """ONNX Runtime settings: `threads` intra-op threads (default $QDUP_INFERENCE_THREADS, else the CPUs), one inter-op,
    no spinning between calls."""
    opts = ort.SessionOptions()
    if threads is None and os.environ.get(THREADS_ENV):
        threads = int(os.environ[THREADS_ENV])
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # ONNX Runtime's intra-op threads otherwise spin for a while after each call, holding cores that the work after an
    # encoding needs (a search's lexical and fusion steps, the server's other requests): on a machine of few cores they
    # would make that work several times slower.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


class FastEncoder:
    """Unit encodings of questions by an encoder's ONNX form (bytes or a file) and its vocabulary."""

    def __init__(self, model: bytes | Path, featurizer: QuestionFeaturizer, masks_padding: bool, threads: int | None = None):
        source = str(model) if isinstance(model, Path) else model
        try:
            self.session = ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid models
            where = model if isinstance(model, Path) else "the encoder's ONNX form"
            raise QdupError(f"{where}: ONNX Runtime refused the model: {str(exc).splitlines()[0]}") from exc
        self.featurizer = featurizer
        self.masks_padding = bool(masks_padding)
        self.dims = int(self.session.get_outputs()[0].shape[1])
        names = {i.name for i in self.session.get_inputs()}
        if ("subwords" in names) != (featurizer.subwords is not None):
            raise QdupError("the encoder's ONNX form and its sub-word settings disagree (sub-word input present or not)")

    @property
    def max_length(self) -> int:
        return self.featurizer.max_length

    def _run(self, ids: np.ndarray, sub: np.ndarray | None, lengths: np.ndarray) -> np.ndarray:
        feeds = {"tokens": ids, "lengths": lengths}
        if sub is not None:
            feeds["subwords"] = sub
        return self.session.run(None, feeds)[0]

    def encode(self, texts: Sequence[str], batch_size: int = BATCH_TEXTS) -> np.ndarray:
        """(n, d) float32 unit vectors; each distinct text is encoded once, batches in length order per width bucket."""
        if batch_size < 1:
            raise QdupError(f"batch_size must be >= 1, got {batch_size}")
        slot: dict[str, int] = {}
        where = np.fromiter((slot.setdefault(t, len(slot)) for t in texts), dtype=np.int64, count=len(texts))
        distinct = list(slot)
        out = np.empty((len(distinct), self.dims), dtype=np.float32)
        # By chunks of texts: the word lists of half a million questions at once took more memory than their vectors.
        for first in range(0, len(distinct), ENCODE_CHUNK):
            self._encode_chunk(distinct[first : first + ENCODE_CHUNK], out[first : first + ENCODE_CHUNK], batch_size)
        # Every text distinct (an index's corpus): `where` is 0..n-1, and a gathered copy would double the memory.
        return out if len(distinct) == len(where) else out[where]

    def _encode_chunk(self, texts: list[str], out: np.ndarray, batch_size: int) -> None:
        words = [self.featurizer.words(t) for t in texts]
        max_length = self.featurizer.max_length
        lengths = np.fromiter((max(1, len(w)) for w in words), dtype=np.int64, count=len(words))
        widths = bucket_widths(lengths, max_length) if self.masks_padding else np.full(len(lengths), max_length, dtype=np.int64)
        order = np.lexsort((lengths, widths))
        for width in np.unique(widths):
            members = order[widths[order] == width]
            for start in range(0, len(members), batch_size):
                idx = members[start : start + batch_size]
                ids, sub, lens = self.featurizer.batch([words[i] for i in idx], int(width))
                # An encoder that does not mask padding reads every step of its fixed width, as in training.
                out[idx] = self._run(ids, sub, lens if self.masks_padding else np.full(len(idx), width, dtype=np.int32))

    def similarity(self, q1: Sequence[str], q2: Sequence[str], batch_size: int = BATCH_TEXTS) -> np.ndarray:
        """Cosine (float32, clipped to [-1, 1]) of each pair; every distinct question is encoded once."""
        if len(q1) != len(q2):
            raise QdupError(f"question lists differ in length: {len(q1)} question1 vs {len(q2)} question2")
        enc = self.encode(list(q1) + list(q2), batch_size)
        n = len(q1)
        # Unit vectors in float32 can give a dot product a rounding step past 1; a cosine cannot.
        return np.clip(np.einsum("ij,ij->i", enc[:n], enc[n:]), -1.0, 1.0).astype(np.float32)


def featurizer_for(vocabulary: Sequence[str], max_length: int, model_cfg: dict) -> QuestionFeaturizer:
    """The featurizer of an export, from its vocabulary and the model settings in threshold.json."""
    spec = None
    if model_cfg.get("subwords"):
        lo, hi = model_cfg["subword_ngrams"]
        spec = SubwordSpec(int(model_cfg["subword_buckets"]), int(lo), int(hi), int(model_cfg["subword_max_per_word"]))
    return QuestionFeaturizer(vocabulary, max_length, spec)
