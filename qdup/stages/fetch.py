"""Stage `fetch`: the raw TSV into the content-addressed dataset cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdup.config import FetchConfig
from qdup.data.fetch import fetch_dataset
from qdup.log import LogFn, stderr_log


def build_fetch(cfg: FetchConfig, cache_root: Path, log: LogFn = stderr_log) -> tuple[dict[str, Any], bool]:
    """Fetch `cfg.source` into `cache_root`; returns (manifest, served from cache)."""
    got = fetch_dataset(cfg, cache_root, log=log)
    manifest = {
        "source": got.source,
        "path": str(got.path),
        "sha256": got.sha256,
        "md5": got.md5,
        "size": got.size,
        "record": str(got.record_path),
    }
    return manifest, got.from_cache
