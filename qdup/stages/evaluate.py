"""Stage `evaluate`: threshold chosen on calibration, metrics, sweep and ROC curve on test, beside a lexical baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdup.config import SELECTION_SPLIT, EvalConfig, ModelConfig
from qdup.data.splits import read_split
from qdup.evaluation.metrics import sweep_markdown
from qdup.evaluation.pairs import evaluate_model
from qdup.evaluation.scores import TEST_SCORES_FILE, read_test_scores
from qdup.evaluation.trust import trust_blocks
from qdup.fileio import atomic_write_json, atomic_write_text, read_json
from qdup.model import network, vocab


def build_evaluate(
    splits_dir: Path,
    vocab_file: Path,
    encoder_file: Path,
    model_cfg: ModelConfig,
    eval_cfg: EvalConfig,
    out_dir: Path,
    seed: int = 42,
    gate_metric: str = "roc_auc",
) -> dict[str, Any]:
    """Evaluate the encoder at `encoder_file`; writes metrics.json (with the lexical baseline and bootstrap
    intervals), test_scores.parquet, threshold_sweep.{json,md}, roc_curve.png."""
    encoder = network.load_encoder(encoder_file)
    vectorizer = vocab.load_vectorizer(vocab_file)
    calibration, test = read_split(splits_dir / "calibration.parquet"), read_split(splits_dir / "test.parquet")
    metrics = evaluate_model(encoder, vectorizer, calibration, test, model_cfg, eval_cfg, out_dir)
    trust = trust_blocks(
        read_split(splits_dir / "train.parquet"), calibration, test, read_test_scores(out_dir / TEST_SCORES_FILE),
        metrics["threshold"]["value"], eval_cfg, seed, gate_metric,
    )
    # Which split decides what: nothing is chosen on test.
    gate = {
        "split": SELECTION_SPLIT,
        "pair_metric": gate_metric,
        "decides": ["threshold", "promotion gate (challenger vs production)", "baseline-lift check"],
        "retrieval_gate_metrics": "the retrieval stage's validation part",
        "test": "reported only",
    }
    metrics = {**metrics, **trust, "gate": gate}
    atomic_write_json(out_dir / "metrics.json", metrics)
    sweep = read_json(out_dir / "threshold_sweep.json")["rows"]
    atomic_write_text(out_dir / "threshold_sweep.md", sweep_markdown(sweep))
    return {"metrics": metrics}
