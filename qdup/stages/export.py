"""Stage `export`: the serving bundle (raw strings in, similarity out, threshold beside it, the pair reranker when fitted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdup.config import ModelConfig
from qdup.model import vocab
from qdup.serving.export import export_models

MODEL_DIR = "model"


def build_export(
    vocab_file: Path, encoder_file: Path, model_cfg: ModelConfig, threshold: float, out_dir: Path, reranker_dir: Path | None = None,
    reranker_serves: dict[str, Any] | None = None, search_reranker_dir: Path | None = None,
) -> dict[str, Any]:
    """Write `out_dir/model/`, checked to load with safe_mode=True and to agree with the encoder; the reranker's files beside."""
    vectorizer = vocab.load_vectorizer(vocab_file)
    info = export_models(encoder_file, vectorizer, model_cfg, threshold, out_dir / MODEL_DIR, reranker_dir=reranker_dir,
                         reranker_serves=reranker_serves, search_reranker_dir=search_reranker_dir)
    return {"model_dir": MODEL_DIR, "threshold": info["threshold"], "sha256": info["sha256"],
            "reranker_threshold": info.get("reranker_threshold"), "reranker_serves": reranker_serves}
