"""Prefect task around `qdup.stages.validate.build_validate` (stage cache, failure report, artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from qdup.config import RetrainConfig
from qdup.data.contracts import ContractViolation, suite_path
from qdup.fileio import sha256_file
from qdup.stagecache import StageResult, code_fingerprint, run_stage
from tasks.common import TASK_OPTIONS, artifact, fail_with_report, run_log


def validate_inputs(dataset_sha256: str, cfg: RetrainConfig) -> dict[str, Any]:
    """What the validate stage's key hashes: the dataset, the suite, the code, the report size."""
    suite = cfg.validate_.raw_suite
    return {
        "dataset_sha256": dataset_sha256,
        "suite": suite,
        "suite_sha256": sha256_file(suite_path(suite)),
        "code": code_fingerprint("qdup.stages.validate", "tasks.validate"),
        "shown": cfg.validate_.failed_rows_shown,
    }


@task(name="validate", **TASK_OPTIONS)
def validate_task(fetched: StageResult, cfg: RetrainConfig, run_dir: Path) -> StageResult:
    """Blocking raw data contract; on success the typed data set is kept as Parquet."""
    from qdup.stages.validate import build_validate

    log = run_log()
    suite = cfg.validate_.raw_suite
    inputs = validate_inputs(fetched.manifest["sha256"], cfg)

    def build(out: Path) -> dict:
        try:
            return build_validate(Path(fetched.manifest["path"]), cfg.validate_, out)
        except ContractViolation as error:
            fail_with_report(error, run_dir)
            raise

    result = run_stage("validate", inputs, build, log)
    m = result.manifest
    artifact("qdup-validation", result.file("validation.md").read_text(), f"passed: {suite}")
    log(f"[validate] {m['rows']:,} rows pass {suite}; {sum(m['missing_questions'].values())} missing questions will be dropped")
    return result
