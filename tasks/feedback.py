"""Prefect task around `qdup.stages.feedback.build_feedback_snapshot`: the store's feedback, snapshotted for this run."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from qdup.config import RetrainConfig
from qdup.data.contracts import ContractViolation
from qdup.paths import cache_dir
from qdup.registry.feedback import FeedbackLog, parse_since
from qdup.registry.store import ArtifactStore
from qdup.stagecache import StageResult
from qdup.stages.feedback import build_feedback_snapshot
from tasks.common import TASK_OPTIONS, artifact, fail_with_report, run_log


@task(name="feedback", **TASK_OPTIONS)
def feedback_task(cfg: RetrainConfig, run_dir: Path) -> StageResult:
    """Read the store's feedback (since cfg.feedback.since), validate it and keep it as Parquet named by its sha256."""
    log = run_log()
    store = ArtifactStore(cfg.publish.store_url, registry_url=cfg.publish.registry_url)
    since = parse_since(cfg.feedback.since) if cfg.feedback.since else None
    frame = FeedbackLog(store).frame(since=since)
    try:
        manifest, folder, reused = build_feedback_snapshot(frame, cache_dir() / "feedback", cfg.feedback.suite,
                                                           cfg.validate_.failed_rows_shown)
    except ContractViolation as error:
        fail_with_report(error, run_dir)
        raise
    log(f"[feedback] snapshot {manifest['sha256'][:16]}: {manifest['rows']:,} rows ({manifest['labels']['duplicate']:,} duplicate, "
        f"{manifest['labels']['not_duplicate']:,} not){' (reused)' if reused else ''}")
    if manifest["conflicting_pairs"]:
        log(f"[feedback] WARNING: {manifest['conflicting_pairs']:,} pairs have both labels; resolved: {manifest['resolution']}")
    artifact("qdup-feedback", f"# Feedback snapshot\n\n- sha256: `{manifest['sha256']}`\n- rows: {manifest['rows']:,}\n"
             f"- labels: {manifest['labels']}\n- conflicting pairs: {manifest['conflicting_pairs']:,} ({manifest['resolution']})\n",
             "feedback snapshot")
    return StageResult(stage="feedback", key=manifest["sha256"], path=folder, cached=reused, manifest=manifest)
