"""Prefect task around `qdup.stages.export.build_export`."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from qdup.config import RetrainConfig
from qdup.stagecache import StageResult, code_fingerprint, run_stage
from tasks.common import TASK_OPTIONS, artifact, run_log


@task(name="export", **TASK_OPTIONS)
def export_task(vocab: StageResult, train: StageResult, evaluation: StageResult, cfg: RetrainConfig) -> StageResult:
    """The serving bundle: raw strings in, similarity out, threshold beside it; safe_mode loadable."""
    log = run_log()
    threshold = evaluation.manifest["metrics"]["threshold"]["value"]
    inputs = {
        "vocab": vocab.key,
        "train": train.key,
        "evaluate": evaluation.key,
        "threshold": threshold,
        "max_length": cfg.model.max_length,
        "code": code_fingerprint("qdup.stages.export", "tasks.export"),
    }

    def build(out: Path) -> dict:
        # Imported here: TensorFlow loads only when the stage really runs.
        from qdup.stages.export import build_export

        return build_export(vocab.file("vocabulary.txt"), train.file("encoder.keras"), cfg.model, threshold, out)

    result = run_stage("export", inputs, build, log)
    artifact(
        "qdup-export",
        "# Export\n\n| file | sha256 |\n|---|---|\n"
        + "".join(f"| `{name}` | `{digest[:16]}` |\n" for name, digest in sorted(result.manifest["sha256"].items()))
        + f"\nthreshold {threshold:.4f} (chosen on calibration); loads with `safe_mode=True`\n",
        "serving bundle",
    )
    log(f"[export] model: {result.file('model')} (threshold {threshold:.4f}); try: qdup predict --model {result.file('model')} \"q1\" \"q2\"")
    return result
