"""Prefect task around `qdup.stages.feedback.build_feedback_snapshot`: the store's feedback, snapshotted for this run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task

from qdup.config import RetrainConfig
from qdup.data.contracts import ContractViolation
from qdup.data.feedback import read_feedback
from qdup.errors import QdupError
from qdup.paths import cache_dir
from qdup.registry.feedback import FeedbackLog, parse_since
from qdup.registry.store import ArtifactStore
from qdup.stagecache import StageResult
from qdup.stages.feedback import build_feedback_snapshot, cached_snapshot
from tasks.common import TASK_OPTIONS, artifact, fail_with_report, run_log


def pinned_rows(store: ArtifactStore, sha256: str) -> pd.DataFrame:
    """The rows of snapshot `sha256` from the copy a version of the store holds (checked against its manifest on opening)."""
    for version in reversed(store.versions()):
        fb = store.manifest(version).get("feedback") or {}
        if fb.get("snapshot_sha256") == sha256:
            return read_feedback(store.open_version(version) / fb["file"])
    raise QdupError(f"feedback.snapshot {sha256}: not in this host's cache ({cache_dir() / 'feedback'}) and no version of "
                    f"{store.url} was trained with it")


@task(name="feedback", **TASK_OPTIONS)
def feedback_task(cfg: RetrainConfig, run_dir: Path) -> StageResult:
    """Read the store's feedback (since cfg.feedback.since), validate it and keep it as Parquet named by its sha256."""
    log = run_log()
    store = ArtifactStore(cfg.publish.store_url, registry_url=cfg.publish.registry_url)
    root = cache_dir() / "feedback"
    if cfg.feedback.snapshot:
        pinned = cfg.feedback.snapshot
        if (manifest := cached_snapshot(root, pinned)) is not None:
            return StageResult(stage="feedback", key=pinned, path=root / pinned, cached=True, manifest=manifest)
        frame = pinned_rows(store, pinned)
    else:
        since = parse_since(cfg.feedback.since) if cfg.feedback.since else None
        frame = FeedbackLog(store).frame(since=since)
    try:
        manifest, folder, reused = build_feedback_snapshot(frame, root, cfg.feedback.suite,
                                                           cfg.validate_.failed_rows_shown)
    except ContractViolation as error:
        fail_with_report(error, run_dir)
        raise
    if cfg.feedback.snapshot and manifest["sha256"] != cfg.feedback.snapshot:
        raise QdupError(f"feedback.snapshot {cfg.feedback.snapshot}: the copy found writes as {manifest['sha256']}; not used")
    log(f"[feedback] snapshot {manifest['sha256'][:16]}: {manifest['rows']:,} rows ({manifest['labels']['duplicate']:,} duplicate, "
        f"{manifest['labels']['not_duplicate']:,} not){' (reused)' if reused else ''}")
    if manifest["conflicting_pairs"]:
        log(f"[feedback] WARNING: {manifest['conflicting_pairs']:,} pairs have both labels; resolved: {manifest['resolution']}")
    artifact("qdup-feedback", f"# Feedback snapshot\n\n- sha256: `{manifest['sha256']}`\n- rows: {manifest['rows']:,}\n"
             f"- labels: {manifest['labels']}\n- conflicting pairs: {manifest['conflicting_pairs']:,} ({manifest['resolution']})\n",
             "feedback snapshot")
    return StageResult(stage="feedback", key=manifest["sha256"], path=folder, cached=reused, manifest=manifest)
