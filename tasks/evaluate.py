"""Prefect task around `qdup.stages.evaluate.build_evaluate` (metrics table, sweep and ROC artifacts)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from qdup.config import RetrainConfig
from qdup.runtime import import_tensorflow_quietly
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks.common import TASK_OPTIONS, artifact, run_log


def metrics_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline test metrics as table rows: chosen threshold and the reference 0.7."""
    test = metrics["test"]
    rows = []
    for label, key, thr in (
        ("calibration-chosen", "at_threshold", metrics["threshold"]["value"]),
        ("reference", "at_reference_threshold", metrics["threshold"]["reference"]),
    ):
        at = test[key]
        rows.append(
            {
                "threshold": f"{label} {thr:.4f}",
                "accuracy": round(at["accuracy"], 4),
                "precision": None if at["precision"] is None else round(at["precision"], 4),
                "recall": None if at["recall"] is None else round(at["recall"], 4),
                "f1": None if at["f1"] is None else round(at["f1"], 4),
                "roc_auc": round(test["ranking"]["roc_auc"], 4),
                "pr_auc": round(test["ranking"]["pr_auc"], 4),
            }
        )
    return rows


def evaluate_inputs(splits_key: str, vocab_key: str, train_key: str, cfg: RetrainConfig) -> dict[str, Any]:
    """What the evaluate stage's key hashes."""
    return {
        "splits": splits_key,
        "vocab": vocab_key,
        "train": train_key,
        "max_length": cfg.model.max_length,
        "evaluate": params(cfg.evaluate),
        "code": code_fingerprint("qdup.stages.evaluate", "tasks.evaluate"),
    }


@task(name="evaluate", **TASK_OPTIONS)
def evaluate_task(splits: StageResult, vocab: StageResult, train: StageResult, cfg: RetrainConfig) -> StageResult:
    """Threshold on calibration, metrics on test; a failure fails the flow (no default metrics)."""
    log = run_log()
    inputs = evaluate_inputs(splits.key, vocab.key, train.key, cfg)

    def build(out: Path) -> dict:
        # Imported here: TensorFlow loads only when the stage really runs.
        import_tensorflow_quietly()
        from qdup.stages.evaluate import build_evaluate

        return build_evaluate(splits.path, vocab.file("vocabulary.txt"), train.file("encoder.keras"), cfg.model, cfg.evaluate, out)

    result = run_stage("evaluate", inputs, build, log)
    summary = metrics_rows(result.manifest["metrics"])
    for row in summary:
        log("[evaluate] " + ", ".join(f"{k}={v}" for k, v in row.items()))
    create_table_artifact(key="qdup-test-metrics", table=summary, description="test metrics (threshold from calibration)")
    artifact("qdup-threshold-sweep", result.file("threshold_sweep.md").read_text(), "threshold sweep on test")
    # Embedded, so the UI shows the curve without access to this machine's disk.
    png = base64.b64encode(result.file("roc_curve.png").read_bytes()).decode()
    artifact("qdup-roc-curve", f"# ROC curve (test)\n\n![ROC curve](data:image/png;base64,{png})\n", "ROC on test")
    return result
