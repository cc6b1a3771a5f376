"""The content-addressed cache of fetched datasets: one verified entry per sha256, and the index of each source.

An entry is `cache_root/<sha256>/` holding the data file and a record of where it came from; it is re-hashed
before every reuse. `cache_root/sources/` maps each source (URL or path) to the entry last fetched from it, with
the HTTP validators it was served with. Bytes reach an entry only through `stream_to_temp` and `store`: hashed and
checked as they arrive, then moved in with one rename.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from qdup.errors import FetchError
from qdup.fileio import CHUNK, atomic_dir, atomic_write_json, read_json

DATA_NAME = "data.tsv"
RECORD_NAME = "record.json"
SOURCES_DIR = "sources"
# Enough bytes to see past leading whitespace/BOM to the first tag of an HTML page.
_SNIFF_BYTES = 512
# Without Content-Length there is no percentage, so report progress every this many bytes.
_PROGRESS_UNKNOWN_STEP = 64 * CHUNK

SHA256_RE = re.compile(r"[0-9a-f]{64}")

# hit: a pinned or local entry reused without network; not-modified: the server answered 304;
# unchanged: fetched again, same bytes as the cached entry; stored: a new cache entry was written.
Outcome = Literal["hit", "not-modified", "unchanged", "stored"]


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
class Expected:
    sha256: str | None
    md5: str | None

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.md5 is not None

    def matches(self, sha256: str, md5: str) -> bool:
        return (self.sha256 is None or self.sha256 == sha256) and (self.md5 is None or self.md5 == md5)


@dataclass(frozen=True)
class Copied:
    sha256: str
    md5: str
    size: int
    tmp: Path


@dataclass(frozen=True)
class Validators:
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


# -- the index of sources -------------------------------------------------------------------------


def source_index_path(cache_root: Path, source: str) -> Path:
    return cache_root / SOURCES_DIR / f"{hashlib.sha256(source.encode('utf-8')).hexdigest()}.json"


def write_source_index(cache_root: Path, source: str, sha256: str, validators: Validators = Validators()) -> None:
    atomic_write_json(
        source_index_path(cache_root, source),
        {"source": source, "sha256": sha256, "etag": validators.etag, "last_modified": validators.last_modified},
    )


# -- verified cache entries ----------------------------------------------------------------------


def file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def entry_dataset(cache_root: Path, sha256: str, source: str, outcome: Outcome) -> CachedDataset:
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
        actual = file_digest(data, "sha256") if actual_size == size else None
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


def verified_or_discarded(cache_root: Path, sha256: str, log: Callable[[str], None]) -> str | None:
    """None when the entry is intact; otherwise warn naming its file, remove it and say what was wrong."""
    problem = _damage(cache_root, sha256)
    if problem is None:
        return None
    damaged = f"cached dataset {cache_root / sha256 / DATA_NAME} is damaged ({problem})"
    log(f"WARNING: fetch: {damaged}; fetching it again")
    _discard(cache_root / sha256)
    return damaged



def looks_like_html(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html"))


def too_large(source: str, size: int, cap: int) -> FetchError:
    return FetchError(
        f"{source} is larger than the cap of {cap} bytes (got {size} bytes or more): "
        "check fetch.source, or set fetch.max_bytes higher if the file really is this big"
    )


# -- shared: stream, verify, store ---------------------------------------------------------------


def stream_to_temp(
    read: Callable[[int], bytes],
    source: str,
    cache_root: Path,
    max_bytes: int,
    expected_length: int | None,
    html_content_type: bool,
    log: Callable[[str], None],
) -> Copied:
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
                        if html_content_type or looks_like_html(head):
                            raise FetchError(
                                f"{source} returned an HTML page, not the TSV (first bytes: {head[:80]!r}): "
                                "the link probably leads to a web page (login, error or landing page); "
                                "set fetch.source to the direct link of the .tsv file"
                            )
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise too_large(source, total, max_bytes)
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
    return Copied(sha256=sha.hexdigest(), md5=md5.hexdigest(), size=total, tmp=tmp)


def verify(source: str, expected: Expected, sha256: str, md5: str) -> None:
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


def store(
    copied: Copied,
    source: str,
    cache_root: Path,
    expected: Expected,
    extra: dict[str, str | None],
    validators: Validators,
    log: Callable[[str], None],
) -> CachedDataset:
    """Verify a finished temp copy and move it into `cache_root/<sha256>/` in one rename.

    An intact entry with the same content is reused (the temp copy is dropped); a damaged one is replaced.
    """
    verify(source, expected, copied.sha256, copied.md5)
    entry = cache_root / copied.sha256
    if entry.exists() and verified_or_discarded(cache_root, copied.sha256, log) is None:
        write_source_index(cache_root, source, copied.sha256, validators)
        log(f"fetch: {source} has content already cached -> {entry / DATA_NAME} (sha256 {copied.sha256[:12]})")
        return entry_dataset(cache_root, copied.sha256, source, "unchanged")
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
    write_source_index(cache_root, source, copied.sha256, validators)
    data = entry / DATA_NAME
    log(f"fetch: done {source} -> {data} ({copied.size} bytes, sha256 {copied.sha256[:12]})")
    return entry_dataset(cache_root, copied.sha256, source, "stored")
