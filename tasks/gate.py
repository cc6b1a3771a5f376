"""Prefect task around `qdup.stages.gate.build_gate` (the decision record as an artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from qdup.config import RetrainConfig
from qdup.runtime import import_tensorflow_quietly
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks.common import TASK_OPTIONS, artifact, run_log


def gate_inputs(
    splits_key: str, evaluate_key: str, retrieval_key: str, export_key: str, production: str | None, cfg: RetrainConfig
) -> dict[str, Any]:
    """What the gate stage's key hashes: the challenger's parts, the production version it is judged against (a version
    never changes), and the settings of the judgement."""
    return {
        "splits": splits_key,
        "evaluate": evaluate_key,
        "retrieval": retrieval_key,
        "export": export_key,
        "production": production,
        "publish": {k: v for k, v in params(cfg.publish).items()
                    if k in ("gate_metric", "tolerance", "tolerances", "min_lift_over_baseline")},
        "bootstrap": {k: v for k, v in params(cfg.evaluate).items() if k.startswith("bootstrap_")},
        "search": params(cfg.search),
        "seed": cfg.seed,
        "code": code_fingerprint("qdup.stages.gate", "tasks.gate"),
    }


@task(name="gate", **TASK_OPTIONS)
def gate_task(
    splits: StageResult, evaluation: StageResult, retrieval: StageResult, export: StageResult, cfg: RetrainConfig,
    production: str | None,
) -> StageResult:
    """Challenger and production, each as it serves, on the gate split: the decision record publish then follows."""
    log = run_log()
    inputs = gate_inputs(splits.key, evaluation.key, retrieval.key, export.key, production, cfg)

    def build(out: Path) -> dict:
        import_tensorflow_quietly()
        from qdup.stages.gate import build_gate

        return build_gate(splits.path, export.file(export.manifest["model_dir"]), retrieval.manifest,
                          evaluation.manifest["metrics"], cfg, out, production)

    result = run_stage("gate", inputs, build, log)
    record = result.manifest["record"]
    log(f"[gate] {'promote' if record['promote'] else 'do not promote'}: {record['reason']}")
    artifact("qdup-gate", gate_markdown(record), "the gate's decision record")
    return result


def gate_markdown(record: dict[str, Any]) -> str:
    lines = [f"# Gate: {'promote' if record['promote'] else 'refused'}\n", f"{record['reason']}\n", f"Rows: {record['rows']['where']}\n"]
    for side in ("challenger", "production"):
        if side in record:
            s = record[side]
            figures = ", ".join(f"{k} {v:.4f}" for k, v in s["metrics"].items() if v is not None)
            lines.append(f"- {side} `{s['version']}`: decision {s['decision']}, search {s['search']}: {figures}")
    return "\n".join(lines) + "\n"
