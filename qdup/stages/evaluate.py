"""Stage `evaluate`: threshold chosen on calibration, metrics, sweep and ROC curve on test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdup.config import EvalConfig, ModelConfig
from qdup.data.splits import read_split
from qdup.evaluation.metrics import sweep_markdown
from qdup.evaluation.pairs import evaluate_model
from qdup.fileio import atomic_write_text, read_json
from qdup.model import network, vocab


def build_evaluate(
    splits_dir: Path, vocab_file: Path, encoder_file: Path, model_cfg: ModelConfig, eval_cfg: EvalConfig, out_dir: Path
) -> dict[str, Any]:
    """Evaluate the encoder at `encoder_file`; writes metrics.json, threshold_sweep.{json,md}, roc_curve.png."""
    encoder = network.load_encoder(encoder_file)
    vectorizer = vocab.load_vectorizer(vocab_file)
    metrics = evaluate_model(
        encoder, vectorizer, read_split(splits_dir / "calibration.parquet"), read_split(splits_dir / "test.parquet"),
        model_cfg, eval_cfg, out_dir,
    )
    sweep = read_json(out_dir / "threshold_sweep.json")["rows"]
    atomic_write_text(out_dir / "threshold_sweep.md", sweep_markdown(sweep))
    return {"metrics": metrics}
