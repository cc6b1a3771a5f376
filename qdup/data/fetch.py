"""Fetch the raw Quora TSV (http(s), file:// or local path) into a verified, content-addressed cache."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from qdup.config import FetchConfig
from qdup.errors import FetchError
from qdup.fileio import (
    CHUNK,
    atomic_dir,
    atomic_write_json,
    clean_stale_temps,
    file_lock,
    read_json,
)

DATA_NAME = "data.tsv"
RECORD_NAME = "record.json"
SOURCES_DIR = "sources"
USER_AGENT = "qdup-fetch/0.1"
# Enough bytes to see past leading whitespace/BOM to the first tag of an HTML page.
_SNIFF_BYTES = 512
# Without Content-Length there is no percentage, so report progress every this many bytes.
_PROGRESS_UNKNOWN_STEP = 64 * CHUNK

_SHA256_RE = re.compile(r"[0-9a-f]{64}")

T = TypeVar("T")

# hit: a pinned or local entry reused without network; not-modified: the server answered 304;
# unchanged: fetched again, same bytes as the cached entry; stored: a new cache entry was written.
Outcome = Literal["hit", "not-modified", "unchanged", "stored"]


class TransientFetchError(FetchError):
    """A network failure (refused/reset connection, timeout, dropped body, HTTP 5xx) worth retrying."""


@dataclass(frozen=True)
class CachedDataset:
    path: Path  # the cached TSV file
    sha256: str
    md5: str
    size: int
    source: str
    record_path: Path  # cache/<sha256>/record.json
    from_cache: bool  # True when the content was already cached: no new entry was written
    outcome: Outcome = "stored"


@dataclass(frozen=True)
class _Expected:
    sha256: str | None
    md5: str | None

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.md5 is not None

    def matches(self, sha256: str, md5: str) -> bool:
        return (self.sha256 is None or self.sha256 == sha256) and (self.md5 is None or self.md5 == md5)


@dataclass(frozen=True)
class _Copied:
    sha256: str
    md5: str
    size: int
    tmp: Path


@dataclass(frozen=True)
class _Validators:
    """What the server said identifies the version it sent (RFC 9110 validators)."""

    etag: str | None = None
    last_modified: str | None = None

    def request_headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers

    def describe(self) -> str:
        if self.etag:
            return f"etag {self.etag}"
        if self.last_modified:
            return f"last-modified {self.last_modified}"
        return "no ETag or Last-Modified"


@dataclass(frozen=True)
class _Known:
    """The verified cache entry the URL index points at, with the validators it was served with."""

    dataset: CachedDataset
    validators: _Validators


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
    expected = _Expected(
        sha256=cfg.sha256.strip().lower() if cfg.sha256 else None,
        md5=cfg.expected_md5(),
    )
    kind, location = _classify_source(source)
    if kind == "http":
        return _fetch_http(location, cfg, cache_root, expected, log)
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


def _source_index_path(cache_root: Path, source: str) -> Path:
    return cache_root / SOURCES_DIR / f"{hashlib.sha256(source.encode('utf-8')).hexdigest()}.json"


def _write_source_index(cache_root: Path, source: str, sha256: str, validators: _Validators = _Validators()) -> None:
    atomic_write_json(
        _source_index_path(cache_root, source),
        {"source": source, "sha256": sha256, "etag": validators.etag, "last_modified": validators.last_modified},
    )


# -- verified cache entries ----------------------------------------------------------------------


def _file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _entry_dataset(cache_root: Path, sha256: str, source: str, outcome: Outcome) -> CachedDataset:
    """The entry `cache_root/<sha256>` as a CachedDataset, read from its record."""
    entry = cache_root / sha256
    record = read_json(entry / RECORD_NAME)
    return CachedDataset(
        path=entry / DATA_NAME,
        sha256=sha256,
        md5=record["md5"],
        size=int(record["size"]),
        source=source,
        record_path=entry / RECORD_NAME,
        from_cache=outcome != "stored",
        outcome=outcome,
    )


def _damage(cache_root: Path, sha256: str) -> str | None:
    """Why the data file of entry `cache_root/<sha256>` cannot be trusted, or None when it hashes to its name.

    Re-hashing costs a fraction of parsing the file, and is the only way to notice an edit on disk.
    """
    entry = cache_root / sha256
    data, record_path = entry / DATA_NAME, entry / RECORD_NAME
    try:
        record = read_json(record_path)
        if record.get("sha256") != sha256 or not isinstance(record.get("md5"), str):
            return f"its record {record_path} does not describe sha256 {sha256}"
        size = int(record["size"])
    except FileNotFoundError:
        return f"{record_path} is missing"
    except (ValueError, KeyError, TypeError) as e:
        return f"its record {record_path} is unreadable ({type(e).__name__}: {e})"
    try:
        actual_size = data.stat().st_size
        actual = _file_digest(data, "sha256") if actual_size == size else None
    except OSError as e:
        return f"it cannot be read ({type(e).__name__}: {e})"
    if actual_size != size:
        return f"it has {actual_size} bytes, its record says {size}: edited or truncated on disk"
    if actual != sha256:
        return f"it hashes to sha256 {actual}, not {sha256}: edited or corrupted on disk"
    return None


def _discard(entry: Path) -> None:
    """Move a damaged entry out of the way in one rename, then delete it.

    The content-addressed store keeps an existing entry rather than overwrite it (atomic_dir),
    so a damaged one must go before the good copy can take its place. The hidden `.tmp` name
    lets clean_stale_temps finish the job if this process dies during the delete.
    """
    if not entry.exists():
        return
    doomed = Path(tempfile.mkdtemp(prefix=f".{entry.name}.damaged-", suffix=".tmp", dir=entry.parent))
    os.replace(entry, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _verified_or_discarded(cache_root: Path, sha256: str, log: Callable[[str], None]) -> str | None:
    """None when the entry is intact; otherwise warn naming its file, remove it and say what was wrong."""
    problem = _damage(cache_root, sha256)
    if problem is None:
        return None
    damaged = f"cached dataset {cache_root / sha256 / DATA_NAME} is damaged ({problem})"
    log(f"WARNING: fetch: {damaged}; fetching it again")
    _discard(cache_root / sha256)
    return damaged


def _known_http_entry(
    cache_root: Path, source: str, expected: _Expected, log: Callable[[str], None]
) -> tuple[_Known | None, str | None]:
    """(the verified entry last fetched from `source`, None) or (None, why a damaged entry was discarded)."""
    index = _source_index_path(cache_root, source)
    if not index.is_file():
        return None, None
    try:
        meta = read_json(index)
        sha256 = meta["sha256"]
        if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        validators = _Validators(etag=meta.get("etag") or None, last_modified=meta.get("last_modified") or None)
    except FileNotFoundError:
        return None, None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        # A damaged index must not block fetching; the download rewrites it.
        log(f"WARNING: fetch: ignoring unreadable cache index {index} ({type(e).__name__}: {e}); downloading again")
        return None, None
    if not (cache_root / sha256).exists():
        # The entry was removed (e.g. the cache pruned by hand): fetch again.
        return None, None
    problem = _verified_or_discarded(cache_root, sha256, log)
    if problem is not None:
        return None, problem
    dataset = _entry_dataset(cache_root, sha256, source, "hit")
    if not expected.matches(dataset.sha256, dataset.md5):
        return None, None
    return _Known(dataset, validators), None


# -- http ----------------------------------------------------------------------------------------


def _fetch_http(
    url: str, cfg: FetchConfig, cache_root: Path, expected: _Expected, log: Callable[[str], None]
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
    expected: _Expected,
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
        validators = _Validators(
            etag=response.headers.get("ETag") or None, last_modified=response.headers.get("Last-Modified") or None
        )
        length = _content_length(response.headers.get("Content-Length"))
        if length is not None and length > cfg.max_bytes:
            raise _too_large(url, length, cfg.max_bytes)
        log(f"fetch: downloading {url} (timeout {cfg.timeout_s:g}s, cap {cfg.max_bytes} bytes)")

        def read(n: int) -> bytes:
            try:
                return response.read(n)
            except (OSError, http.client.HTTPException) as e:
                raise _network_error(url, e) from e

        copied = _stream_to_temp(
            read, url, cache_root, cfg.max_bytes, length, _is_html_type(content_type), log
        )
    try:
        if length is not None and copied.size < length:
            raise TransientFetchError(
                f"connection to {url} dropped after {copied.size} of {length} bytes"
            )
        if known is not None and copied.sha256 == known.dataset.sha256:
            _verify(url, expected, copied.sha256, copied.md5)
            _write_source_index(cache_root, url, copied.sha256, validators)
            log(
                f"fetch: not modified: {url} (downloaded again, {validators.describe()}; "
                f"same sha256 {copied.sha256[:12]}) -> {known.dataset.path}"
            )
            return replace(known.dataset, outcome="unchanged", from_cache=True)
        extra = {"content_type": content_type, "etag": validators.etag, "last_modified": validators.last_modified}
        return _store(copied, url, cache_root, expected, extra, validators, log)
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


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html"))


def _too_large(source: str, size: int, cap: int) -> FetchError:
    return FetchError(
        f"{source} is larger than the cap of {cap} bytes (got {size} bytes or more): "
        "check fetch.source, or set fetch.max_bytes higher if the file really is this big"
    )


# -- local files ---------------------------------------------------------------------------------


def _fetch_local(
    path: Path, cfg: FetchConfig, cache_root: Path, expected: _Expected, log: Callable[[str], None]
) -> CachedDataset:
    source = cfg.source
    if not path.exists():
        raise FetchError(f"local dataset {path} (fetch.source {source!r}) does not exist: check the path")
    if not path.is_file():
        raise FetchError(f"local dataset {path} (fetch.source {source!r}) is not a regular file")
    size = path.stat().st_size
    if size > cfg.max_bytes:
        raise _too_large(source, size, cfg.max_bytes)
    # Always hash: the content behind a path can change, so the path alone cannot key the cache.
    try:
        sha256, md5 = _file_digest(path, "sha256"), _file_digest(path, "md5")
    except OSError as e:
        raise FetchError(f"cannot read local dataset {path} (fetch.source {source!r}): {e}") from e
    _verify(source, expected, sha256, md5)
    entry = cache_root / sha256
    if entry.exists() and _verified_or_discarded(cache_root, sha256, log) is None:
        _write_source_index(cache_root, source, sha256)
        log(f"fetch: cache hit for {source} -> {entry / DATA_NAME}")
        return _entry_dataset(cache_root, sha256, source, "hit")
    log(f"fetch: copying {path} into the cache ({size} bytes)")
    try:
        with open(path, "rb") as f:

            def read(n: int) -> bytes:
                try:
                    return f.read(n)
                except OSError as e:
                    raise FetchError(f"cannot read local dataset {path}: {e}") from e

            copied = _stream_to_temp(read, source, cache_root, cfg.max_bytes, size, False, log)
    except OSError as e:
        raise FetchError(f"cannot read local dataset {path}: {e}") from e
    try:
        return _store(copied, source, cache_root, expected, {}, _Validators(), log)
    finally:
        copied.tmp.unlink(missing_ok=True)


# -- shared: stream, verify, store ---------------------------------------------------------------


def _stream_to_temp(
    read: Callable[[int], bytes],
    source: str,
    cache_root: Path,
    max_bytes: int,
    expected_length: int | None,
    html_content_type: bool,
    log: Callable[[str], None],
) -> _Copied:
    """Copy `read` into a hidden temp file in `cache_root`, hashing and checking as the bytes arrive.

    The temp file lives beside its final place so the move into the cache is a rename, and its
    `.*.tmp` name lets `clean_stale_temps` remove it if this process dies midway.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".tmp", dir=cache_root)
    tmp = Path(tmp_name)
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    total = 0
    head = b""
    sniffed = False
    next_pct = 10
    next_mark = _PROGRESS_UNKNOWN_STEP
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = read(CHUNK)
                if not sniffed:
                    head += chunk[: max(0, _SNIFF_BYTES - len(head))]
                    if len(head) >= _SNIFF_BYTES or not chunk:
                        sniffed = True
                        if html_content_type or _looks_like_html(head):
                            raise FetchError(
                                f"{source} returned an HTML page, not the TSV (first bytes: {head[:80]!r}): "
                                "the link probably leads to a web page (login, error or landing page); "
                                "set fetch.source to the direct link of the .tsv file"
                            )
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise _too_large(source, total, max_bytes)
                sha.update(chunk)
                md5.update(chunk)
                try:
                    out.write(chunk)
                except OSError as e:
                    raise FetchError(
                        f"cannot write the download of {source} to {tmp}: {e}; free disk space "
                        "or point QDUP_HOME at a larger disk"
                    ) from e
                if expected_length:
                    pct = total * 100 // expected_length
                    if pct >= next_pct:
                        log(f"fetch: {pct}% ({total}/{expected_length} bytes)")
                        next_pct = (pct // 10 + 1) * 10
                elif total >= next_mark:
                    log(f"fetch: {total} bytes so far")
                    next_mark += _PROGRESS_UNKNOWN_STEP
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _Copied(sha256=sha.hexdigest(), md5=md5.hexdigest(), size=total, tmp=tmp)


def _verify(source: str, expected: _Expected, sha256: str, md5: str) -> None:
    problems = []
    if expected.sha256 is not None and expected.sha256 != sha256:
        problems.append(f"expected sha256 {expected.sha256}, got {sha256}")
    if expected.md5 is not None and expected.md5 != md5:
        problems.append(f"expected md5 {expected.md5}, got {md5}")
    if problems:
        raise FetchError(
            f"checksum mismatch for {source}: {'; '.join(problems)}. The file changed at the source or "
            "was corrupted in transit; nothing was cached. Check fetch.source, or update fetch.sha256 / "
            "fetch.md5 if the new file is intended"
        )


def _store(
    copied: _Copied,
    source: str,
    cache_root: Path,
    expected: _Expected,
    extra: dict[str, str | None],
    validators: _Validators,
    log: Callable[[str], None],
) -> CachedDataset:
    """Verify a finished temp copy and move it into `cache_root/<sha256>/` in one rename.

    An intact entry with the same content is reused (the temp copy is dropped); a damaged one is replaced.
    """
    _verify(source, expected, copied.sha256, copied.md5)
    entry = cache_root / copied.sha256
    if entry.exists() and _verified_or_discarded(cache_root, copied.sha256, log) is None:
        _write_source_index(cache_root, source, copied.sha256, validators)
        log(f"fetch: {source} has content already cached -> {entry / DATA_NAME} (sha256 {copied.sha256[:12]})")
        return _entry_dataset(cache_root, copied.sha256, source, "unchanged")
    record = {
        "source": source,
        "size": copied.size,
        "sha256": copied.sha256,
        "md5": copied.md5,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **{k: v for k, v in extra.items() if v is not None},
    }
    with atomic_dir(entry) as staging:
        os.replace(copied.tmp, staging / DATA_NAME)
        atomic_write_json(staging / RECORD_NAME, record)
    problem = _damage(cache_root, copied.sha256)
    if problem is not None:
        # Another process stored the same content at the same moment, and that entry is not intact.
        raise FetchError(f"cache entry {entry} is damaged ({problem}): delete it and re-run")
    _write_source_index(cache_root, source, copied.sha256, validators)
    data = entry / DATA_NAME
    log(f"fetch: done {source} -> {data} ({copied.size} bytes, sha256 {copied.sha256[:12]})")
    return _entry_dataset(cache_root, copied.sha256, source, "stored")
