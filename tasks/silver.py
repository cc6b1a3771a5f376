"""Prefect task around `qdup.stages.silver.build_silver`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from qdup.config import RetrainConfig
from qdup.data.contracts import ContractViolation, suite_path
from qdup.fileio import sha256_file
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks.common import TASK_OPTIONS, fail_with_report, run_log


def silver_inputs(splits_key: str, cfg: RetrainConfig) -> dict[str, Any]:
    """What the silver stage's key hashes: the splits, the neighbour depth, its contract and the code (and, when the
    teacher labels the pairs, its thresholds, the reranker's tree settings, the lexical features' and the seed)."""
    suite = cfg.validate_.silver_suite
    teacher = {"teacher": {"positive": cfg.train.silver_positive_score, "negative": cfg.train.silver_negative_score,
                           "rerank": params(cfg.rerank), "ngram_range": list(cfg.evaluate.baseline_ngram_range),
                           "min_df": cfg.evaluate.baseline_min_df, "seed": cfg.seed}} if cfg.train.uses_teacher else {}
    return teacher | {
        "splits": splits_key,
        "depth": cfg.train.search_negatives_depth,
        "suite": suite,
        "suite_sha256": sha256_file(suite_path(suite)),
        "shown": cfg.validate_.failed_rows_shown,
        "code": code_fingerprint("qdup.stages.silver", "tasks.silver"),
    }


@task(name="silver", **TASK_OPTIONS)
def silver_task(splits: StageResult, cfg: RetrainConfig, run_dir: Path) -> StageResult:
    """Search-shaped hard negatives of the training questions, as the silver split, gated by its contract."""
    from qdup.stages.silver import build_silver

    log = run_log()

    def build(out: Path) -> dict:
        try:
            return build_silver(splits.path, cfg.train, cfg.validate_, out, rerank_cfg=cfg.rerank, eval_cfg=cfg.evaluate,
                                seed=cfg.seed)
        except ContractViolation as error:
            fail_with_report(error, run_dir)
            raise

    result = run_stage("silver", silver_inputs(splits.key, cfg), build, log)
    s = result.manifest["silver"]
    log(f"[silver] {s['kinds']['bm25_negative']:,} search negatives and {s['kinds']['silver_positive']:,} silver duplicates "
        f"from the BM25 neighbours of {s['queries']:,} training questions (depth {result.manifest['depth']})")
    return result
