"""Prefect task around `qdup.stages.splits.build_splits`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from qdup.config import RetrainConfig
from qdup.data.contracts import ContractViolation, suite_path
from qdup.fileio import sha256_file
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks.common import TASK_OPTIONS, fail_with_report, run_log


def splits_inputs(validate_key: str, cfg: RetrainConfig, feedback_key: str | None = None) -> dict[str, Any]:
    """What the splits stage's key hashes: the validated data, the split plan, the suites, the code, and the feedback
    snapshot's sha256 when the run trains with feedback."""
    return ({"feedback": feedback_key} if feedback_key is not None else {}) | {
        "validated": validate_key,
        "split": params(cfg.split),
        # Only the question-disjoint mode draws anything at random.
        "seed": cfg.seed if cfg.split.mode == "question_disjoint" else None,
        "suites": {name: sha256_file(suite_path(s)) for name, s in cfg.validate_.split_suites.items()},
        "code": code_fingerprint("qdup.stages.splits", "tasks.splits"),
    }


@task(name="splits", **TASK_OPTIONS)
def splits_task(validated: StageResult, cfg: RetrainConfig, run_dir: Path, feedback: StageResult | None = None) -> StageResult:
    """The splits as Parquet, each gated by its data contract; with a feedback snapshot, its pairs in train and negatives."""
    from qdup.stages.splits import build_splits

    log = run_log()
    inputs = splits_inputs(validated.key, cfg, feedback.key if feedback is not None else None)
    snapshot = feedback.file(feedback.manifest["file"]) if feedback is not None else None

    def build(out: Path) -> dict:
        try:
            return build_splits(validated.file("validated.parquet"), cfg.split, cfg.validate_, out, seed=cfg.seed,
                                feedback_parquet=snapshot)
        except ContractViolation as error:
            fail_with_report(error, run_dir)
            raise

    result = run_stage("splits", inputs, build, log)
    rows = [{"split": n, **{k: e[k] for k in ("rows", "duplicates", "content_sha256")}} for n, e in result.manifest["splits"].items()]
    for r in rows:
        r["content_sha256"] = r["content_sha256"][:16]
        log(f"[splits] {r['split']}: {r['rows']:,} rows, {r['duplicates']:,} duplicates")
    log(f"[splits] mode {result.manifest['mode']}: {result.manifest['test_questions_seen']:,} test questions "
        f"appear in another split")
    if "feedback" in result.manifest:
        fb = result.manifest["feedback"]
        log(f"[splits] feedback: {fb['pairs']:,} pairs of {fb['rows']:,} rows; added {fb['added']['train']:,} to train, "
            f"{fb['added']['negatives']:,} to negatives; {fb['held_out_test_question']:,} held out (a question test holds)")
    create_table_artifact(key="qdup-splits", table=rows, description="split sizes and content hashes")
    return result
