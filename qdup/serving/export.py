"""Export the trained model as a serving bundle: raw strings in, similarity out, threshold beside it, the reranker with it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from qdup.config import LABEL_CONVENTION, ModelConfig
from qdup.errors import QdupError
from qdup.evaluation.reranker_io import FILES as RERANKER_FILES
from qdup.evaluation.reranker_io import META_FILE as RERANKER_META
from qdup.evaluation.reranker_io import load_reranker
from qdup.fileio import atomic_dir, atomic_write_bytes, atomic_write_json, read_json, sha256_file
from qdup.model.encode import KerasPairEncoder, encode_keras
from qdup.model.exported import ENCODER_FILE, FAST_FILE, INFERENCE_FILE, THRESHOLD_FILE, VOCAB_FILE
from qdup.model.fast import FastEncoder
from qdup.model.features import QuestionFeaturizer
from qdup.model.network import build_inference_model, encoder_masks_padding
from qdup.model.onnx_export import encoder_to_onnx, subword_spec
from qdup.model.vocab import write_vocabulary
from qdup.model.vocabulary_file import read_vocabulary
from qdup.search.candidate_rerank import FILES as SEARCH_FILES
from qdup.search.candidate_rerank import META_FILE as SEARCH_META
from qdup.search.candidate_rerank import load_search_reranker
from qdup.serving.predictor import PROBE_PAIRS

PROBE_ATOL = 1e-5


def probe_texts() -> list[str]:
    """Questions the fast form is checked on against the Keras encoder: the probe pairs and awkward text."""
    extra = ["Ünïcödé façade naïve café ❤️ 日本語?", "a" * 300, "How   many\tspaces\nhere ?!", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17"]
    return [q for pair in PROBE_PAIRS for q in pair] + extra

def export_models(
    encoder_path: Path,
    vectorizer: keras.layers.TextVectorization,
    model_cfg: ModelConfig,
    threshold: float,
    out_dir: Path,
    reranker_dir: Path | None = None,
    reranker_serves: dict[str, Any] | None = None,
    search_reranker_dir: Path | None = None,
) -> dict[str, Any]:
    """Write the serving bundle to out_dir in one atomic step (temporary sibling, then rename).

    out_dir/inference.keras: two string inputs -> similarity, vectorizer and truncation inside;
    out_dir/encoder.keras: the trained encoder (token ids -> unit vectors);
    out_dir/vocabulary.txt: the vocabulary, line i = token id i;
    out_dir/encoder.onnx: the encoder's derived fast form (`qdup.model.onnx_export`), what serving runs;
    out_dir/threshold.json: the threshold (chosen on the calibration split) and what it means;
    with `reranker_dir`, the pair reranker's files (`qdup.evaluation.reranker_io.FILES`), loaded back
    (hash-checked) before they are kept; `reranker_serves` ({"serves": bool, "why": str}, the rerank stage's choice on
    the selection split) says whether it makes the duplicate decision (None: it does); with `search_reranker_dir`
    (it needs the pair reranker's featurizer), the search reranker's files (`qdup.search.candidate_rerank.FILES`), loaded back
    (hash-checked) before they are kept. Before the rename, the saved
    inference model is reloaded with safe_mode=True and must
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
        got = KerasPairEncoder(reloaded, model_cfg.max_length).similarity(p1, p2)
        # The derived fast form: written from the encoder's weights, read back from its file, held to the Keras encoder.
        atomic_write_bytes(tmp / FAST_FILE, encoder_to_onnx(encoder))
        fast = FastEncoder(tmp / FAST_FILE, QuestionFeaturizer(read_vocabulary(tmp / VOCAB_FILE), model_cfg.max_length,
                                                               subword_spec(encoder)), encoder_masks_padding(encoder))
        want = fast.similarity(p1, p2)
        if not np.allclose(got, want, atol=PROBE_ATOL):
            raise QdupError(
                f"the saved inference model disagrees with the encoder on probe pairs: {got.tolist()} vs {want.tolist()}"
            )
        texts = probe_texts()
        gap = float(np.abs(fast.encode(texts) - encode_keras(encoder, vectorizer, texts, model_cfg.max_length)).max())
        if gap > PROBE_ATOL:
            raise QdupError(f"the fast form ({FAST_FILE}) differs from the Keras encoder by {gap:.2e} on probe questions (> {PROBE_ATOL})")

        names = [INFERENCE_FILE, ENCODER_FILE, VOCAB_FILE, FAST_FILE]
        reranker_threshold = None
        if reranker_dir is not None:
            for name in RERANKER_FILES:
                shutil.copyfile(Path(reranker_dir) / name, tmp / name)
            reranker = load_reranker(tmp)
            reranker.score(p1, p2, want)  # the copied files load and score
            reranker_threshold = reranker.threshold
            names += list(RERANKER_FILES)
            if search_reranker_dir is not None:
                for name in SEARCH_FILES:
                    shutil.copyfile(Path(search_reranker_dir) / name, tmp / name)
                load_search_reranker(tmp, reranker.featurizer)  # the copied files load
                names += list(SEARCH_FILES)
        elif search_reranker_dir is not None:
            raise QdupError("a search reranker scores with its pair reranker's featurizer: export it with the pair reranker")
        files = {name: sha256_file(tmp / name) for name in names}
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
                "reranker": None if reranker_threshold is None else {
                    "threshold": reranker_threshold, "meta": RERANKER_META,
                    "serves": bool((reranker_serves or {}).get("serves", True)),
                    "why": (reranker_serves or {}).get("why"),
                    "decides": "duplicate iff reranker score >= its threshold" if (reranker_serves or {}).get("serves", True)
                    else "the encoder decides (similarity >= threshold); the reranker re-orders search candidates only",
                },
                "search_reranker": None if search_reranker_dir is None else {
                    "meta": SEARCH_META, "orders": "the first candidates of `reranked` search (not the duplicate decision)",
                },
                "fast_inference": {
                    "file": FAST_FILE, "runtime": "onnxruntime", "derived_from": ENCODER_FILE,
                    "masks_padding": encoder_masks_padding(encoder), "max_abs_diff_vs_keras": gap,
                },
                "keras": keras.__version__,
                "tensorflow": tf.__version__,
            },
        )
    meta = read_json(out_dir / THRESHOLD_FILE)
    return {
        "dir": str(out_dir),
        "threshold": meta["threshold"],
        "files": {name: str(out_dir / name) for name in (INFERENCE_FILE, ENCODER_FILE, VOCAB_FILE, FAST_FILE, THRESHOLD_FILE)},
        "sha256": meta["sha256"],
        "reranker_threshold": reranker_threshold,
    }
