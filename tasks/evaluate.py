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


def _with_interval(value: float | None, intervals: dict[str, Any] | None, metric: str) -> str:
    if value is None:
        return "—"
    m = ((intervals or {}).get("metrics") or {}).get(metric) or {}
    if m.get("low") is None or m.get("high") is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{m['low']:.4f}, {m['high']:.4f}]"


def baseline_markdown(metrics: dict[str, Any]) -> str:
    """Model vs the lexical baseline on test (each at its own calibrated threshold), with bootstrap intervals; "" without one."""
    base = metrics.get("baseline")
    if not base:
        return ""
    model_test, base_test = metrics["test"], base["test"]
    level = (metrics.get("intervals") or {}).get("level")
    head = f" ({round(100 * level):d}% bootstrap interval)" if level else ""
    lines = [
        f"# Model vs lexical baseline on test{head}", "",
        "| metric | model | lexical baseline |", "|---|---|---|",
    ]
    for metric in ("roc_auc", "pr_auc", "accuracy", "f1"):
        section = "ranking" if metric in ("roc_auc", "pr_auc") else "at_threshold"
        lines.append(
            f"| {metric} | {_with_interval(model_test[section].get(metric), metrics.get('intervals'), metric)} "
            f"| {_with_interval(base_test[section].get(metric), base.get('intervals'), metric)} |"
        )
    lift = metrics.get("lift_over_baseline")
    if lift:
        from qdup.evaluation.bootstrap import format_paired_difference

        lines += ["", "- " + format_paired_difference(lift, "model", "baseline")]
    return "\n".join(lines) + "\n"


def baseline_log_lines(comparison: str) -> list[str]:
    """The comparison table as log lines, from its header row on (the columns are unlabelled without it), without
    the Markdown rule row."""
    return [line for line in comparison.splitlines()[2:] if line.strip() and not line.startswith("|---")]


def pair_gate_metric(cfg: RetrainConfig) -> str:
    """The pair metric the model's lift over the baseline is measured on: the gate's, or ROC-AUC when the gate is a retrieval metric."""
    from qdup.evaluation.bootstrap import METRICS

    return cfg.publish.gate_metric if cfg.publish.gate_metric in METRICS else "roc_auc"


def evaluate_inputs(splits_key: str, vocab_key: str, train_key: str, cfg: RetrainConfig) -> dict[str, Any]:
    """What the evaluate stage's key hashes."""
    return {
        "splits": splits_key,
        "vocab": vocab_key,
        "train": train_key,
        "max_length": cfg.model.max_length,
        "evaluate": params(cfg.evaluate),
        "seed": cfg.seed,
        "gate_metric": pair_gate_metric(cfg),
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

        return build_evaluate(
            splits.path, vocab.file("vocabulary.txt"), train.file("encoder.keras"), cfg.model, cfg.evaluate, out,
            seed=cfg.seed, gate_metric=pair_gate_metric(cfg),
        )

    result = run_stage("evaluate", inputs, build, log)
    summary = metrics_rows(result.manifest["metrics"])
    for row in summary:
        log("[evaluate] " + ", ".join(f"{k}={v}" for k, v in row.items()))
    create_table_artifact(key="qdup-test-metrics", table=summary, description="test metrics (threshold from calibration)")
    comparison = baseline_markdown(result.manifest["metrics"])
    if comparison:
        for line in baseline_log_lines(comparison):
            log("[evaluate] " + line)
        artifact("qdup-baseline", comparison, "model vs lexical baseline on test, with bootstrap intervals")
    artifact("qdup-threshold-sweep", result.file("threshold_sweep.md").read_text(), "threshold sweep on test")
    # Embedded, so the UI shows the curve without access to this machine's disk.
    png = base64.b64encode(result.file("roc_curve.png").read_bytes()).decode()
    artifact("qdup-roc-curve", f"# ROC curve (test)\n\n![ROC curve](data:image/png;base64,{png})\n", "ROC on test")
    return result
