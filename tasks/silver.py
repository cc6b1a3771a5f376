"""Prefect task around `qdup.stages.silver.build_silver`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from qdup.config import RetrainConfig
from qdup.data.contracts import ContractViolation, suite_path
from qdup.fileio import sha256_file
from qdup.stagecache import StageResult, code_fingerprint, run_stage
from tasks.common import TASK_OPTIONS, fail_with_report, run_log


def silver_inputs(splits_key: str, cfg: RetrainConfig) -> dict[str, Any]:
    """What the silver stage's key hashes: the splits, the neighbour depth, its contract and the code."""
    suite = cfg.validate_.silver_suite
    return {
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
            return build_silver(splits.path, cfg.train, cfg.validate_, out)
        except ContractViolation as error:
            fail_with_report(error, run_dir)
            raise

    result = run_stage("silver", silver_inputs(splits.key, cfg), build, log)
    s = result.manifest["silver"]
    log(f"[silver] {s['rows']:,} BM25 neighbours outside the duplicate cluster of {s['queries']:,} training questions "
        f"(depth {result.manifest['depth']})")
    return result
