"""Prefect task around `qdup.stages.export.build_export`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from qdup.config import RetrainConfig
from qdup.runtime import import_tensorflow_quietly
from qdup.stagecache import StageResult, code_fingerprint, run_stage
from tasks.common import TASK_OPTIONS, artifact, run_log


def export_inputs(
    vocab_key: str, train_key: str, evaluate_key: str, cfg: RetrainConfig, rerank_key: str | None = None,
    retrieval_key: str | None = None,
) -> dict[str, Any]:
    """What the export stage's key hashes (the threshold comes with the evaluation's key, the reranker with its own, the
    search reranker with the retrieval stage's)."""
    return {
        "vocab": vocab_key,
        "train": train_key,
        "evaluate": evaluate_key,
        "rerank": rerank_key,
        "retrieval": retrieval_key,
        "max_length": cfg.model.max_length,
        "code": code_fingerprint("qdup.stages.export", "tasks.export"),
    }


def exports_search_reranker(cfg: RetrainConfig) -> bool:
    """Whether the retrieval stage fits a search reranker, which the export then carries (`search.rerank_fit`)."""
    return cfg.rerank.enabled and cfg.search.rerank_fit == "candidates"


@task(name="export", **TASK_OPTIONS)
def export_task(
    vocab: StageResult, train: StageResult, evaluation: StageResult, cfg: RetrainConfig, rerank: StageResult | None = None,
    retrieval: StageResult | None = None,
) -> StageResult:
    """The serving bundle: raw strings in, similarity out, threshold beside it, the reranker when there is one; safe_mode loadable."""
    log = run_log()
    threshold = evaluation.manifest["metrics"]["threshold"]["value"]
    carried = retrieval if retrieval is not None and exports_search_reranker(cfg) else None
    inputs = export_inputs(vocab.key, train.key, evaluation.key, cfg, None if rerank is None else rerank.key,
                           None if carried is None else carried.key)
    reranker_dir = None if rerank is None else rerank.file(rerank.manifest["reranker_dir"])
    search_reranker_dir = None if carried is None else carried.file(carried.manifest["search_reranker_dir"])

    def build(out: Path) -> dict:
        # Imported here: TensorFlow loads only when the stage really runs.
        import_tensorflow_quietly()
        from qdup.stages.export import build_export

        return build_export(vocab.file("vocabulary.txt"), train.file("encoder.keras"), cfg.model, threshold, out, reranker_dir,
                            None if rerank is None else rerank.manifest.get("serves"), search_reranker_dir)

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
