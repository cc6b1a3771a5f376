"""Prefect task around `qdup.stages.fetch.build_fetch`."""

from __future__ import annotations

from prefect import task

from qdup.config import RetrainConfig
from qdup.paths import cache_dir
from qdup.stagecache import StageResult
from qdup.stages.fetch import build_fetch
from tasks.common import TASK_OPTIONS, artifact, run_log


@task(name="fetch", **TASK_OPTIONS)
def fetch_task(cfg: RetrainConfig) -> StageResult:
    """Download (or copy) the TSV into the content-addressed cache; network errors are retried inside."""
    manifest, from_cache = build_fetch(cfg.fetch, cache_dir(), log=run_log())
    artifact(
        "qdup-fetch",
        f"# Fetch\n\n| | |\n|---|---|\n| source | `{manifest['source']}` |\n| sha256 | `{manifest['sha256']}` |\n"
        f"| md5 | `{manifest['md5']}` |\n| bytes | {manifest['size']:,} |\n| from cache | {from_cache} |\n",
        "dataset fetched",
    )
    path = cache_dir() / manifest["sha256"]
    return StageResult(stage="fetch", key=manifest["sha256"], path=path, cached=from_cache, manifest=manifest)
