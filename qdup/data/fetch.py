"""Fetch the raw Quora TSV (http(s), file:// or local path) into a verified, content-addressed cache."""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from qdup.config import FetchConfig
from qdup.data import fetch_cache as cache
from qdup.data.fetch_cache import CachedDataset, Expected
from qdup.data.fetch_http import fetch_http
from qdup.errors import FetchError
from qdup.fileio import clean_stale_temps, file_lock


def fetch_dataset(cfg: FetchConfig, cache_root: Path, log: Callable[[str], None] = print) -> CachedDataset:
    """Return the dataset named by `cfg.source` from `cache_root`, downloading or copying it if needed.

    An http(s) source with a pinned checksum (fetch.sha256, fetch.md5, or the canonical URL's md5) is
    served from the cache without network. Without one, every call revalidates it with the server
    (conditional GET; a server without ETag/Last-Modified is downloaded again and compared by hash),
    so a file that changes at the same URL gives a new cache entry. `cfg.refresh` skips the cache.
    A cached file is re-hashed before reuse; a damaged one is replaced with a warning naming it.
    """
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)

    def waiting(holder: str) -> None:
        log(f"fetch: waiting: {holder} is fetching into {cache_root}; its download will be reused")

    # Runs sharing a cache take turns: none removes another's download in progress.
    with file_lock(cache_root / ".fetch.lock", waiting):
        clean_stale_temps(cache_root)
        return _fetch_dataset(cfg, cache_root, log)


def _fetch_dataset(cfg: FetchConfig, cache_root: Path, log: Callable[[str], None]) -> CachedDataset:
    source = cfg.source
    expected = Expected(
        sha256=cfg.sha256.strip().lower() if cfg.sha256 else None,
        md5=cfg.expected_md5(),
    )
    kind, location = _classify_source(source)
    if kind == "http":
        return fetch_http(location, cfg, cache_root, expected, log)
    return _fetch_local(Path(location), cfg, cache_root, expected, log)


# -- sources -------------------------------------------------------------------------------------


def _classify_source(source: str) -> tuple[str, str]:
    """('http', url) or ('local', absolute path string); FetchError for anything else."""
    if not source or not source.strip():
        raise FetchError("fetch.source is empty: set it to an http(s):// URL, a file:// URL or a local path")
    parsed = urllib.parse.urlsplit(source)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if not parsed.netloc:
            raise FetchError(f"fetch.source {source!r} has no host: use a full URL such as https://host/file.tsv")
        return "http", source
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise FetchError(
                f"file:// URL {source!r} names host {parsed.netloc!r}; only local files are supported: "
                "use file:///absolute/path or a plain path"
            )
        return "local", str(Path(urllib.request.url2pathname(parsed.path)).expanduser().resolve())
    # Windows drive letters ('C:\\...') parse as a one-letter scheme; a path that exists is a path.
    is_drive = os.name == "nt" and len(scheme) == 1
    if scheme == "" or is_drive or Path(source).expanduser().exists():
        return "local", str(Path(source).expanduser().resolve())
    raise FetchError(
        f"unsupported scheme {parsed.scheme!r} in fetch.source {source!r}: "
        "use an http(s):// URL, a file:// URL or a local path (download it yourself first)"
    )


# -- local files ---------------------------------------------------------------------------------


def _fetch_local(
    path: Path, cfg: FetchConfig, cache_root: Path, expected: Expected, log: Callable[[str], None]
) -> CachedDataset:
    source = cfg.source
    if not path.exists():
        raise FetchError(f"local dataset {path} (fetch.source {source!r}) does not exist: check the path")
    if not path.is_file():
        raise FetchError(f"local dataset {path} (fetch.source {source!r}) is not a regular file")
    size = path.stat().st_size
    if size > cfg.max_bytes:
        raise cache.too_large(source, size, cfg.max_bytes)
    # Always hash: the content behind a path can change, so the path alone cannot key the cache.
    try:
        sha256, md5 = cache.file_digest(path, "sha256"), cache.file_digest(path, "md5")
    except OSError as e:
        raise FetchError(f"cannot read local dataset {path} (fetch.source {source!r}): {e}") from e
    cache.verify(source, expected, sha256, md5)
    entry = cache_root / sha256
    if entry.exists() and cache.verified_or_discarded(cache_root, sha256, log) is None:
        cache.write_source_index(cache_root, source, sha256)
        log(f"fetch: cache hit for {source} -> {entry / cache.DATA_NAME}")
        return cache.entry_dataset(cache_root, sha256, source, "hit")
    log(f"fetch: copying {path} into the cache ({size} bytes)")
    try:
        with open(path, "rb") as f:

            def read(n: int) -> bytes:
                try:
                    return f.read(n)
                except OSError as e:
                    raise FetchError(f"cannot read local dataset {path}: {e}") from e

            copied = cache.stream_to_temp(read, source, cache_root, cfg.max_bytes, size, False, log)
    except OSError as e:
        raise FetchError(f"cannot read local dataset {path}: {e}") from e
    try:
        return cache.store(copied, source, cache_root, expected, {}, cache.Validators(), log)
    finally:
        copied.tmp.unlink(missing_ok=True)
