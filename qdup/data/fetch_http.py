"""Download an http(s) dataset into the cache: conditional GET against the cached entry, retries on network failures."""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from qdup.config import FetchConfig
from qdup.data.fetch_cache import (
    SHA256_RE,
    CachedDataset,
    Expected,
    Validators,
    entry_dataset,
    source_index_path,
    store,
    stream_to_temp,
    too_large,
    verified_or_discarded,
    verify,
    write_source_index,
)
from qdup.errors import FetchError
from qdup.fileio import read_json

USER_AGENT = "qdup-fetch/0.1"

T = TypeVar("T")


class TransientFetchError(FetchError):
    """A network failure (refused/reset connection, timeout, dropped body, HTTP 5xx) worth retrying."""


@dataclass(frozen=True)
class _Known:
    """The verified cache entry the URL index points at, with the validators it was served with."""

    dataset: CachedDataset
    validators: Validators


def _known_http_entry(
    cache_root: Path, source: str, expected: Expected, log: Callable[[str], None]
) -> tuple[_Known | None, str | None]:
    """(the verified entry last fetched from `source`, None) or (None, why a damaged entry was discarded)."""
    index = source_index_path(cache_root, source)
    if not index.is_file():
        return None, None
    try:
        meta = read_json(index)
        sha256 = meta["sha256"]
        if not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        validators = Validators(etag=meta.get("etag") or None, last_modified=meta.get("last_modified") or None)
    except FileNotFoundError:
        return None, None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        # A damaged index must not block fetching; the download rewrites it.
        log(f"WARNING: fetch: ignoring unreadable cache index {index} ({type(e).__name__}: {e}); downloading again")
        return None, None
    if not (cache_root / sha256).exists():
        # The entry was removed (e.g. the cache pruned by hand): fetch again.
        return None, None
    problem = verified_or_discarded(cache_root, sha256, log)
    if problem is not None:
        return None, problem
    dataset = entry_dataset(cache_root, sha256, source, "hit")
    if not expected.matches(dataset.sha256, dataset.md5):
        return None, None
    return _Known(dataset, validators), None


def fetch_http(
    url: str, cfg: FetchConfig, cache_root: Path, expected: Expected, log: Callable[[str], None]
) -> CachedDataset:
    known, damaged = (None, None) if cfg.refresh else _known_http_entry(cache_root, url, expected, log)
    if known is not None and expected.pinned:
        log(f"fetch: cache hit for {url} -> {known.dataset.path}")
        return known.dataset
    try:
        return _retrying(lambda: _download_once(url, cfg, cache_root, expected, known, log), cfg, url, log)
    except FetchError as e:
        if damaged is None:
            raise
        raise type(e)(f"{damaged}, and fetching it again failed: {e}") from e


# Retries live here, around one HTTP attempt, rather than in the Prefect task: only network
# failures (TransientFetchError) are retried, without re-hashing the cache or re-running the
# stage, and callers without Prefect (the bench, the tests, library use) get the same behaviour.
def _retrying(attempt: Callable[[], T], cfg: FetchConfig, source: str, log: Callable[[str], None]) -> T:
    """Run `attempt`, retrying only TransientFetchError with exponential backoff."""
    attempts = cfg.retries + 1
    for i in range(attempts):
        try:
            return attempt()
        except TransientFetchError as e:
            if i + 1 >= attempts:
                raise TransientFetchError(
                    f"{e} (gave up after {attempts} attempt(s); check the network or try again later, "
                    "or raise fetch.retries / fetch.timeout_s)"
                ) from e
            delay = cfg.backoff_s * (2**i)
            log(f"WARNING: fetch: attempt {i + 1}/{attempts} for {source} failed: {e}; retrying in {delay:.2f}s")
            time.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def _network_error(url: str, e: BaseException) -> TransientFetchError:
    return TransientFetchError(f"network error fetching {url}: {type(e).__name__}: {e}")


def _download_once(
    url: str,
    cfg: FetchConfig,
    cache_root: Path,
    expected: Expected,
    known: _Known | None,
    log: Callable[[str], None],
) -> CachedDataset:
    conditional = known.validators.request_headers() if known is not None else {}
    request = urllib.request.Request(
        url,
        # identity: the checksums are of the file itself, not of a compressed transfer.
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **conditional},
    )
    try:
        response = urllib.request.urlopen(request, timeout=cfg.timeout_s)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 304 and known is not None and conditional:
            log(f"fetch: not modified: {url} ({known.validators.describe()}) -> {known.dataset.path}")
            return replace(known.dataset, outcome="not-modified", from_cache=True)
        if 500 <= e.code < 600:
            raise TransientFetchError(f"{url} answered HTTP {e.code} {e.reason} (a server-side error)") from e
        raise FetchError(
            f"{url} answered HTTP {e.code} {e.reason}: check fetch.source "
            "(the file may have moved, or need a direct download link)"
        ) from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLCertVerificationError):
            raise FetchError(
                f"TLS certificate of {url} could not be verified ({e.reason}): "
                "fix the system CA certificates or use a trusted source"
            ) from e
        raise _network_error(url, e.reason if isinstance(e.reason, BaseException) else e) from e
    except (OSError, http.client.HTTPException) as e:
        raise _network_error(url, e) from e

    with response:
        content_type = response.headers.get("Content-Type", "") or ""
        validators = Validators(
            etag=response.headers.get("ETag") or None, last_modified=response.headers.get("Last-Modified") or None
        )
        length = _content_length(response.headers.get("Content-Length"))
        if length is not None and length > cfg.max_bytes:
            raise too_large(url, length, cfg.max_bytes)
        log(f"fetch: downloading {url} (timeout {cfg.timeout_s:g}s, cap {cfg.max_bytes} bytes)")

        def read(n: int) -> bytes:
            try:
                return response.read(n)
            except (OSError, http.client.HTTPException) as e:
                raise _network_error(url, e) from e

        copied = stream_to_temp(
            read, url, cache_root, cfg.max_bytes, length, _is_html_type(content_type), log
        )
    try:
        if length is not None and copied.size < length:
            raise TransientFetchError(
                f"connection to {url} dropped after {copied.size} of {length} bytes"
            )
        if known is not None and copied.sha256 == known.dataset.sha256:
            verify(url, expected, copied.sha256, copied.md5)
            write_source_index(cache_root, url, copied.sha256, validators)
            log(
                f"fetch: not modified: {url} (downloaded again, {validators.describe()}; "
                f"same sha256 {copied.sha256[:12]}) -> {known.dataset.path}"
            )
            return replace(known.dataset, outcome="unchanged", from_cache=True)
        extra = {"content_type": content_type, "etag": validators.etag, "last_modified": validators.last_modified}
        return store(copied, url, cache_root, expected, extra, validators, log)
    finally:
        copied.tmp.unlink(missing_ok=True)


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        # A malformed header carries no information; the streaming checks still apply.
        return None
    return n if n >= 0 else None


def _is_html_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("text/html", "application/xhtml+xml")
