"""Prefect task around `qdup.stages.retrieval.build_retrieval` (retrieval metrics table artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from qdup.config import RetrainConfig
from qdup.runtime import import_tensorflow_quietly
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks.common import TASK_OPTIONS, run_log


def retrieval_inputs(
    splits_key: str, vocab_key: str, train_key: str, cfg: RetrainConfig, rerank_key: str | None = None
) -> dict[str, Any]:
    """What the retrieval stage's key hashes (the reranker, when there is one, by its stage's key)."""
    return {
        "splits": splits_key,
        "rerank_stage": rerank_key,
        "vocab": vocab_key,
        "train": train_key,
        "max_length": cfg.model.max_length,
        "seed": cfg.seed,
        "search": params(cfg.search),
        # A search reranker is fitted with the pair reranker's tree settings (also in the rerank stage's key).
        "rerank": params(cfg.rerank),
        "code": code_fingerprint("qdup.stages.retrieval", "tasks.retrieval"),
    }


@task(name="retrieval", **TASK_OPTIONS)
def retrieval_task(
    splits: StageResult, vocab: StageResult, train: StageResult, cfg: RetrainConfig, rerank: StageResult | None = None
) -> StageResult:
    """Dense, lexical, hybrid (and reranked) retrieval on held-out questions; the hybrid chosen on the validation part."""
    log = run_log()
    inputs = retrieval_inputs(splits.key, vocab.key, train.key, cfg, None if rerank is None else rerank.key)
    reranker_dir = None if rerank is None else rerank.file(rerank.manifest["reranker_dir"])

    def build(out: Path) -> dict:
        import_tensorflow_quietly()
        from qdup.stages.retrieval import build_retrieval

        return build_retrieval(splits.path, vocab.file("vocabulary.txt"), train.file("encoder.keras"), cfg.model, cfg.search,
                               cfg.seed, out, reranker_dir, cfg.rerank)

    result = run_stage("retrieval", inputs, build, log)
    from qdup.stages.retrieval import table_rows

    rows = table_rows(result.manifest)
    for row in rows:
        log("[retrieval] " + ", ".join(f"{k}={v}" for k, v in row.items()))
    hybrid = result.manifest["hybrid"]
    log(f"[retrieval] hybrid {hybrid['method']} (weight {hybrid['weight']}); best on validation: {result.manifest['best']}")
    create_table_artifact(key="qdup-retrieval-metrics", table=rows,
                          description=f"retrieval on held-out questions (test part); best: {result.manifest['best']}")
    return result
