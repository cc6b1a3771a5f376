"""Tests for qdup.data.fetch against a local HTTP server and local files."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qdup.config import FetchConfig
from qdup.data.fetch import fetch_dataset
from qdup.data.fetch_cache import CachedDataset
from qdup.data.fetch_http import TransientFetchError
from qdup.errors import FetchError, QdupError
from qdup.fileio import read_json

HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"


def make_tsv(rows: int = 20, salt: str = "") -> bytes:
    lines = [HEADER]
    for i in range(rows):
        lines.append(f"{i}\t{2 * i + 1}\t{2 * i + 2}\tWhat is {salt}thing {i}?\tHow is {salt}thing {i}?\t{i % 2}\n")
    return "".join(lines).encode("utf-8")


TSV = make_tsv()
TSV_SHA256 = hashlib.sha256(TSV).hexdigest()
TSV_MD5 = hashlib.md5(TSV).hexdigest()
BIG = make_tsv(rows=200)
HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>\n"


@dataclass
class Server:
    base: str
    counts: Counter  # requests per path, shared with the handler threads
    state: _State

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def publish(self, path: str, body: bytes) -> None:
        """Change what a versioned path serves (a new ETag and a Last-Modified one minute later)."""
        with self.state.lock:
            self.state.bodies[path] = body
            self.state.mtimes[path] = self.state.mtimes.get(path, 1_700_000_000) + 60

    def conditional_headers(self, path: str) -> list[dict[str, str]]:
        """If-None-Match / If-Modified-Since of each request to `path`, in order."""
        return [dict(h) for p, h in self.state.requests if p == path]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean

    def _send(self, status: int, body: bytes, content_type: str = "text/tab-separated-values",
              length: int | None = None, send_length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if send_length:
            self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        """Promise the whole body, send half, then close (HTTP/1.0 closes after the handler returns)."""
        self._send(200, TSV[: len(TSV) // 2], length=len(TSV))

    def _versioned(self, etag: bool, last_modified: bool) -> None:
        """Serve the path's current body with the validators asked for, answering 304 when they match."""
        state = self.server.state
        with state.lock:
            body = state.bodies.get(self.path, TSV)
            mtime = state.mtimes.get(self.path, 1_700_000_000)
        tag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        stamp = formatdate(mtime, usegmt=True)
        if etag and self.headers.get("If-None-Match"):
            fresh = self.headers["If-None-Match"] == tag
        elif last_modified and self.headers.get("If-Modified-Since"):
            fresh = parsedate_to_datetime(self.headers["If-Modified-Since"]).timestamp() >= mtime
        else:
            fresh = False
        self.send_response(304 if fresh else 200)
        if etag:
            self.send_header("ETag", tag)
        if last_modified:
            self.send_header("Last-Modified", stamp)
        if fresh:
            self.end_headers()
            return
        self.send_header("Content-Type", "text/tab-separated-values")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.counts[self.path] += 1
            n = state.counts[self.path]
            wanted = ("If-None-Match", "If-Modified-Since")
            state.requests.append((self.path, [(k, self.headers[k]) for k in wanted if k in self.headers]))
        if self.path == "/etag.tsv":
            self._versioned(etag=True, last_modified=False)
        elif self.path == "/lastmod.tsv":
            self._versioned(etag=False, last_modified=True)
        elif self.path == "/plain.tsv":
            self._versioned(etag=False, last_modified=False)
        elif self.path == "/once.tsv":
            if n == 1:
                self._send(200, TSV)
            else:
                self._send(404, b"gone", content_type="text/plain")
        elif self.path == "/data.tsv":
            self._send(200, TSV)
        elif self.path == "/nolength.tsv":
            self._send(200, TSV, send_length=False)
        elif self.path == "/missing.tsv":
            self._send(404, b"not found", content_type="text/plain")
        elif self.path == "/page.html":
            self._send(200, HTML, content_type="text/html; charset=utf-8")
        elif self.path == "/page-as-tsv.tsv":
            self._send(200, b"  \n" + HTML.replace(b"<!DOCTYPE html>\n", b""), content_type="text/plain")
        elif self.path == "/drop.tsv":
            self._drop()
        elif self.path == "/flaky-503.tsv":
            if n == 1:
                self._send(503, b"busy", content_type="text/plain")
            else:
                self._send(200, TSV)
        elif self.path == "/flaky-drop.tsv":
            if n == 1:
                self._drop()
            else:
                self._send(200, TSV)
        elif self.path == "/slow-once.tsv":
            if n == 1:
                # Longer than the client's timeout; the client has hung up by the time we write.
                time.sleep(0.1)
                try:
                    self._send(200, TSV)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
            else:
                self._send(200, TSV)
        elif self.path == "/always-500.tsv":
            self._send(500, b"boom", content_type="text/plain")
        elif self.path == "/big.tsv":
            self._send(200, BIG)
        elif self.path == "/big-nolength.tsv":
            self._send(200, BIG, send_length=False)
        else:
            self._send(404, b"no such path", content_type="text/plain")


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.bodies: dict[str, bytes] = {}
        self.mtimes: dict[str, int] = {}
        self.requests: list[tuple[str, list[tuple[str, str]]]] = []


class _Server(ThreadingHTTPServer):
    state: _State


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = _State()
    # A short poll interval keeps shutdown (and so each test) fast.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield Server(base=f"http://{host}:{port}", counts=httpd.state.counts, state=httpd.state)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def logs() -> list[str]:
    return []


def cfg(source: str, **kw: object) -> FetchConfig:
    kw.setdefault("retries", 2)
    kw.setdefault("backoff_s", 0.0)
    kw.setdefault("timeout_s", 5.0)
    return FetchConfig(source=source, **kw)


def assert_nothing_cached(cache_root: Path) -> None:
    """No data, no half-written temp files; only the (possibly empty) source index may exist."""
    assert not list(cache_root.rglob("data.tsv"))
    assert not list(cache_root.rglob("*.tmp"))
    assert {p.name for p in cache_root.iterdir()} <= {"sources", ".fetch.lock"}  # the lock file of runs sharing the cache


def source_index(cache_root: Path, source: str) -> Path:
    return cache_root / "sources" / f"{hashlib.sha256(source.encode()).hexdigest()}.json"


# -- http ----------------------------------------------------------------------------------------


def test_download_success_caches_file_record_and_index(server: Server, cache_root: Path, logs: list[str]) -> None:
    url = server.url("/data.tsv")
    got = fetch_dataset(cfg(url), cache_root, log=logs.append)

    assert isinstance(got, CachedDataset)
    assert got.from_cache is False
    assert got.path == cache_root / TSV_SHA256 / "data.tsv"
    assert got.path.read_bytes() == TSV
    assert (got.sha256, got.md5, got.size, got.source) == (TSV_SHA256, TSV_MD5, len(TSV), url)
    assert got.record_path == cache_root / TSV_SHA256 / "record.json"

    record = read_json(got.record_path)
    assert record["source"] == url
    assert record["size"] == len(TSV)
    assert record["sha256"] == TSV_SHA256
    assert record["md5"] == TSV_MD5
    assert record["content_type"] == "text/tab-separated-values"
    fetched_at = datetime.fromisoformat(record["fetched_at"])
    assert fetched_at.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - fetched_at).total_seconds()) < 60

    assert read_json(source_index(cache_root, url)) == {"source": url, "sha256": TSV_SHA256, "etag": None, "last_modified": None}
    assert not list(cache_root.rglob("*.tmp"))
    assert server.counts["/data.tsv"] == 1
    assert any(line.startswith("fetch: downloading") for line in logs)
    assert any("100%" in line for line in logs)
    assert any(line.startswith("fetch: done") and TSV_SHA256[:12] in line for line in logs)


@pytest.mark.parametrize(
    "checksums",
    [{"sha256": TSV_SHA256}, {"md5": TSV_MD5}, {"sha256": TSV_SHA256.upper(), "md5": TSV_MD5}],
    ids=["sha256", "md5", "both"],
)
def test_pinned_second_fetch_is_cache_hit_without_requests(
    server: Server, cache_root: Path, logs: list[str], checksums: dict[str, str]
) -> None:
    url = server.url("/data.tsv")
    first = fetch_dataset(cfg(url, **checksums), cache_root, log=logs.append)
    second = fetch_dataset(cfg(url, **checksums), cache_root, log=logs.append)

    assert server.counts["/data.tsv"] == 1
    assert second.from_cache is True and second.outcome == "hit"
    assert (second.path, second.sha256, second.md5, second.size) == (first.path, first.sha256, first.md5, first.size)
    assert f"fetch: cache hit for {url} -> {first.path}" in logs


def test_cache_entry_not_matching_new_expected_checksum_is_refetched(server: Server, cache_root: Path) -> None:
    url = server.url("/data.tsv")
    fetch_dataset(cfg(url), cache_root, log=lambda _: None)
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_dataset(cfg(url, md5="f" * 32), cache_root, log=lambda _: None)
    assert server.counts["/data.tsv"] == 2


def test_removed_cache_entry_is_refetched(server: Server, cache_root: Path) -> None:
    url = server.url("/data.tsv")
    first = fetch_dataset(cfg(url), cache_root, log=lambda _: None)
    first.path.unlink()
    first.record_path.unlink()
    first.path.parent.rmdir()
    again = fetch_dataset(cfg(url), cache_root, log=lambda _: None)
    assert again.from_cache is False
    assert again.path.read_bytes() == TSV
    assert server.counts["/data.tsv"] == 2


@pytest.mark.parametrize("algo", ["sha256", "md5"])
def test_checksum_mismatch_caches_nothing(server: Server, cache_root: Path, algo: str) -> None:
    wrong = "0" * (64 if algo == "sha256" else 32)
    actual = TSV_SHA256 if algo == "sha256" else TSV_MD5
    url = server.url("/data.tsv")
    with pytest.raises(FetchError) as info:
        fetch_dataset(cfg(url, **{algo: wrong}), cache_root, log=lambda _: None)

    msg = str(info.value)
    assert not isinstance(info.value, TransientFetchError)
    assert wrong in msg and actual in msg and url in msg
    assert not (cache_root / TSV_SHA256).exists()
    assert_nothing_cached(cache_root)
    assert server.counts["/data.tsv"] == 1


def test_connection_dropped_mid_body_is_retried_then_fails_clean(
    server: Server, cache_root: Path, logs: list[str]
) -> None:
    url = server.url("/drop.tsv")
    with pytest.raises(TransientFetchError, match="dropped") as info:
        fetch_dataset(cfg(url, retries=2), cache_root, log=logs.append)

    assert "3 attempt" in str(info.value)
    assert server.counts["/drop.tsv"] == 3
    assert_nothing_cached(cache_root)
    assert sum("retrying" in line for line in logs) == 2


@pytest.mark.parametrize("path", ["/flaky-503.tsv", "/flaky-drop.tsv"])
def test_transient_failure_is_retried_and_succeeds(
    server: Server, cache_root: Path, logs: list[str], path: str
) -> None:
    got = fetch_dataset(cfg(server.url(path), retries=3, backoff_s=0.01), cache_root, log=logs.append)

    assert server.counts[path] == 2
    assert got.from_cache is False
    assert got.path.read_bytes() == TSV
    assert sum("retrying" in line for line in logs) == 1
    assert not list(cache_root.rglob("*.tmp"))


def test_timeout_is_retried(server: Server, cache_root: Path, logs: list[str]) -> None:
    got = fetch_dataset(cfg(server.url("/slow-once.tsv"), retries=3, timeout_s=0.05), cache_root, log=logs.append)
    assert got.path.read_bytes() == TSV
    assert server.counts["/slow-once.tsv"] >= 2
    assert any("timed out" in line.lower() and "retrying" in line for line in logs)


def test_server_errors_exhaust_retries_with_transient_error(server: Server, cache_root: Path) -> None:
    with pytest.raises(TransientFetchError, match="HTTP 500"):
        fetch_dataset(cfg(server.url("/always-500.tsv"), retries=1), cache_root, log=lambda _: None)
    assert server.counts["/always-500.tsv"] == 2
    assert_nothing_cached(cache_root)


def test_backoff_grows_exponentially(server: Server, cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("qdup.data.fetch_http.time.sleep", sleeps.append)
    with pytest.raises(TransientFetchError):
        fetch_dataset(cfg(server.url("/always-500.tsv"), retries=3, backoff_s=0.5), cache_root, log=lambda _: None)
    assert sleeps == [0.5, 1.0, 2.0]


def test_404_is_not_retried(server: Server, cache_root: Path) -> None:
    with pytest.raises(FetchError, match="404") as info:
        fetch_dataset(cfg(server.url("/missing.tsv"), retries=3), cache_root, log=lambda _: None)
    assert not isinstance(info.value, TransientFetchError)
    assert server.counts["/missing.tsv"] == 1
    assert_nothing_cached(cache_root)


@pytest.mark.parametrize("path", ["/page.html", "/page-as-tsv.tsv"], ids=["content-type", "sniffed"])
def test_html_page_is_refused(server: Server, cache_root: Path, path: str) -> None:
    with pytest.raises(FetchError, match="HTML page, not the TSV") as info:
        fetch_dataset(cfg(server.url(path), retries=3), cache_root, log=lambda _: None)
    assert not isinstance(info.value, TransientFetchError)
    assert "<html>" in str(info.value).lower()
    assert server.counts[path] == 1
    assert_nothing_cached(cache_root)


@pytest.mark.parametrize("path", ["/big.tsv", "/big-nolength.tsv"], ids=["content-length", "streaming"])
def test_size_cap(server: Server, cache_root: Path, path: str) -> None:
    cap = len(BIG) // 2
    with pytest.raises(FetchError, match=f"larger than the cap of {cap} bytes") as info:
        fetch_dataset(cfg(server.url(path), max_bytes=cap, retries=3), cache_root, log=lambda _: None)
    assert "fetch.max_bytes" in str(info.value)
    assert not isinstance(info.value, TransientFetchError)
    assert server.counts[path] == 1
    assert_nothing_cached(cache_root)


def test_download_without_content_length(server: Server, cache_root: Path) -> None:
    got = fetch_dataset(cfg(server.url("/nolength.tsv")), cache_root, log=lambda _: None)
    assert got.path.read_bytes() == TSV
    assert got.sha256 == TSV_SHA256


def test_connection_refused_is_transient(cache_root: Path) -> None:
    # Bind then close a socket so the port is (almost certainly) free and nothing listens there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientFetchError, match="gave up after 2 attempt"):
        fetch_dataset(cfg(f"http://127.0.0.1:{port}/data.tsv", retries=1), cache_root, log=lambda _: None)
    assert_nothing_cached(cache_root)


def test_a_fetch_waits_for_a_running_one_then_clears_what_it_left(server: Server, cache_root: Path) -> None:
    import threading

    from qdup.fileio import file_lock

    cache_root.mkdir(parents=True)
    in_progress = cache_root / ".download-in-progress.tmp"
    in_progress.write_bytes(b"another run is still writing this")
    holding, release = threading.Event(), threading.Event()

    def other_run() -> None:  # holds the cache's lock as a fetch does while it downloads
        with file_lock(cache_root / ".fetch.lock", lambda _: None):
            holding.set()
            release.wait(120)

    other = threading.Thread(target=other_run)
    other.start()
    assert holding.wait(60)
    logs: list[str] = []
    fetcher = threading.Thread(target=fetch_dataset, args=(cfg(server.url("/data.tsv")), cache_root), kwargs={"log": logs.append})
    fetcher.start()
    deadline = time.monotonic() + 60
    while not any("waiting" in line for line in logs):
        assert time.monotonic() < deadline, logs
        time.sleep(0.02)
    assert in_progress.exists()  # never removed while its writer runs, however old
    release.set()
    other.join(60)
    fetcher.join(60)
    assert not in_progress.exists()  # its writer is gone: a leftover
    assert len(entries(cache_root)) == 1


def test_corrupt_source_index_is_ignored_and_rewritten(server: Server, cache_root: Path, logs: list[str]) -> None:
    url = server.url("/data.tsv")
    index = source_index(cache_root, url)
    index.parent.mkdir(parents=True)
    index.write_text("{not json")
    got = fetch_dataset(cfg(url), cache_root, log=logs.append)
    assert got.from_cache is False
    assert read_json(index) == {"source": url, "sha256": TSV_SHA256, "etag": None, "last_modified": None}
    assert any("unreadable cache index" in line for line in logs)


# -- local files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["absolute", "relative", "tilde", "file-url"])
def test_local_source_success_then_cache_hit(
    tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    data_dir = tmp_path / "home" / "data"
    data_dir.mkdir(parents=True)
    local = data_dir / "quora.tsv"
    local.write_bytes(TSV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(data_dir)
    source = {
        "absolute": str(local),
        "relative": "quora.tsv",
        "tilde": "~/data/quora.tsv",
        "file-url": local.as_uri(),
    }[form]

    first = fetch_dataset(cfg(source, sha256=TSV_SHA256, md5=TSV_MD5), cache_root, log=lambda _: None)
    assert first.from_cache is False
    assert first.path == cache_root / TSV_SHA256 / "data.tsv"
    assert first.path.read_bytes() == TSV
    assert (first.sha256, first.md5, first.size, first.source) == (TSV_SHA256, TSV_MD5, len(TSV), source)
    record = read_json(first.record_path)
    assert (record["source"], record["size"], record["sha256"], record["md5"]) == (source, len(TSV), TSV_SHA256, TSV_MD5)
    assert "content_type" not in record

    second = fetch_dataset(cfg(source), cache_root, log=lambda _: None)
    assert second.from_cache is True
    assert second.path == first.path
    assert not list(cache_root.rglob("*.tmp"))


def test_local_file_changed_content_is_not_replayed(tmp_path: Path, cache_root: Path) -> None:
    local = tmp_path / "quora.tsv"
    local.write_bytes(TSV)
    old = fetch_dataset(cfg(str(local)), cache_root, log=lambda _: None)

    changed = make_tsv(salt="new ")
    local.write_bytes(changed)
    new = fetch_dataset(cfg(str(local)), cache_root, log=lambda _: None)

    assert new.sha256 == hashlib.sha256(changed).hexdigest() != old.sha256
    assert new.from_cache is False
    assert new.path.read_bytes() == changed
    assert old.path.read_bytes() == TSV  # the old content-addressed entry is still intact


def test_local_checksum_mismatch_caches_nothing(tmp_path: Path, cache_root: Path) -> None:
    local = tmp_path / "quora.tsv"
    local.write_bytes(TSV)
    with pytest.raises(FetchError, match="checksum mismatch") as info:
        fetch_dataset(cfg(str(local), sha256="a" * 64), cache_root, log=lambda _: None)
    assert TSV_SHA256 in str(info.value)
    assert_nothing_cached(cache_root)


def test_local_html_file_is_refused(tmp_path: Path, cache_root: Path) -> None:
    local = tmp_path / "quora.tsv"
    local.write_bytes(HTML)
    with pytest.raises(FetchError, match="HTML"):
        fetch_dataset(cfg(str(local)), cache_root, log=lambda _: None)
    assert_nothing_cached(cache_root)


def test_local_file_over_cap_is_refused(tmp_path: Path, cache_root: Path) -> None:
    local = tmp_path / "quora.tsv"
    local.write_bytes(BIG)
    with pytest.raises(FetchError, match="larger than the cap"):
        fetch_dataset(cfg(str(local), max_bytes=100), cache_root, log=lambda _: None)
    assert_nothing_cached(cache_root)


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_missing_local_source(tmp_path: Path, cache_root: Path, as_url: bool) -> None:
    missing = tmp_path / "nowhere" / "quora.tsv"
    source = missing.as_uri() if as_url else str(missing)
    with pytest.raises(FetchError, match="does not exist") as info:
        fetch_dataset(cfg(source), cache_root, log=lambda _: None)
    assert str(missing) in str(info.value)


def test_local_directory_is_refused(tmp_path: Path, cache_root: Path) -> None:
    with pytest.raises(FetchError, match="not a regular file"):
        fetch_dataset(cfg(str(tmp_path)), cache_root, log=lambda _: None)


@pytest.mark.parametrize("source", ["ftp://example.com/quora.tsv", "s3://bucket/quora.tsv"])
def test_unsupported_scheme(cache_root: Path, source: str) -> None:
    scheme = source.split(":", 1)[0]
    with pytest.raises(FetchError, match=f"unsupported scheme '{scheme}'"):
        fetch_dataset(cfg(source), cache_root, log=lambda _: None)



# -- revalidation of unpinned http(s) sources ----------------------------------------------------

NEW_TSV = make_tsv(salt="new ")
NEW_SHA256 = hashlib.sha256(NEW_TSV).hexdigest()


def entries(cache_root: Path) -> set[str]:
    """The content-addressed entries (sha256 folder names) in the cache."""
    return {p.name for p in cache_root.iterdir() if len(p.name) == 64}


def test_etag_server_unchanged_answers_304_and_reuses_the_entry(server: Server, cache_root: Path, logs: list[str]) -> None:
    url = server.url("/etag.tsv")
    first = fetch_dataset(cfg(url), cache_root, log=logs.append)
    etag = read_json(source_index(cache_root, url))["etag"]
    assert etag == f'"{TSV_SHA256[:16]}"' and read_json(first.record_path)["etag"] == etag
    logs.clear()

    second = fetch_dataset(cfg(url), cache_root, log=logs.append)

    assert server.counts["/etag.tsv"] == 2
    assert server.conditional_headers("/etag.tsv") == [{}, {"If-None-Match": etag}]
    assert (second.path, second.sha256, second.from_cache, second.outcome) == (first.path, TSV_SHA256, True, "not-modified")
    assert logs == [f"fetch: not modified: {url} (etag {etag}) -> {first.path}"]
    assert entries(cache_root) == {TSV_SHA256}


def test_etag_server_changed_content_gives_a_new_entry(server: Server, cache_root: Path, logs: list[str]) -> None:
    url = server.url("/etag.tsv")
    first = fetch_dataset(cfg(url), cache_root, log=logs.append)
    server.publish("/etag.tsv", NEW_TSV)
    logs.clear()

    second = fetch_dataset(cfg(url), cache_root, log=logs.append)

    assert (second.sha256, second.from_cache, second.outcome) == (NEW_SHA256, False, "stored")
    assert second.path.read_bytes() == NEW_TSV and first.path.read_bytes() == TSV
    assert entries(cache_root) == {TSV_SHA256, NEW_SHA256}
    assert read_json(source_index(cache_root, url))["etag"] == f'"{NEW_SHA256[:16]}"'
    assert not any("not modified" in line for line in logs)
    # The third run revalidates against the new ETag.
    third = fetch_dataset(cfg(url), cache_root, log=logs.append)
    assert (third.sha256, third.outcome) == (NEW_SHA256, "not-modified")
    assert server.conditional_headers("/etag.tsv")[-1] == {"If-None-Match": f'"{NEW_SHA256[:16]}"'}


def test_last_modified_only_server_is_revalidated(server: Server, cache_root: Path, logs: list[str]) -> None:
    url = server.url("/lastmod.tsv")
    fetch_dataset(cfg(url), cache_root, log=logs.append)
    stamp = read_json(source_index(cache_root, url))["last_modified"]
    assert stamp == formatdate(1_700_000_000, usegmt=True)
    logs.clear()

    same = fetch_dataset(cfg(url), cache_root, log=logs.append)
    assert same.outcome == "not-modified" and same.sha256 == TSV_SHA256
    assert logs == [f"fetch: not modified: {url} (last-modified {stamp}) -> {same.path}"]
    assert server.conditional_headers("/lastmod.tsv")[1] == {"If-Modified-Since": stamp}

    server.publish("/lastmod.tsv", NEW_TSV)
    changed = fetch_dataset(cfg(url), cache_root, log=logs.append)
    assert (changed.sha256, changed.outcome) == (NEW_SHA256, "stored")
    assert read_json(source_index(cache_root, url))["last_modified"] == formatdate(1_700_000_060, usegmt=True)
    assert server.counts["/lastmod.tsv"] == 3


def test_server_without_validators_is_downloaded_again_and_compared(
    server: Server, cache_root: Path, logs: list[str]
) -> None:
    url = server.url("/plain.tsv")
    first = fetch_dataset(cfg(url), cache_root, log=logs.append)
    logs.clear()

    same = fetch_dataset(cfg(url), cache_root, log=logs.append)
    assert server.counts["/plain.tsv"] == 2
    assert server.conditional_headers("/plain.tsv") == [{}, {}]
    assert (same.path, same.from_cache, same.outcome) == (first.path, True, "unchanged")
    assert [line for line in logs if "not modified" in line] == [
        f"fetch: not modified: {url} (downloaded again, no ETag or Last-Modified; same sha256 {TSV_SHA256[:12]}) -> {first.path}"
    ]
    assert entries(cache_root) == {TSV_SHA256}

    server.publish("/plain.tsv", NEW_TSV)
    changed = fetch_dataset(cfg(url), cache_root, log=logs.append)
    assert (changed.sha256, changed.from_cache, changed.outcome) == (NEW_SHA256, False, "stored")
    assert entries(cache_root) == {TSV_SHA256, NEW_SHA256}


def test_content_flipping_back_reuses_the_older_entry(server: Server, cache_root: Path) -> None:
    url = server.url("/etag.tsv")
    fetch_dataset(cfg(url), cache_root, log=lambda _: None)
    server.publish("/etag.tsv", NEW_TSV)
    fetch_dataset(cfg(url), cache_root, log=lambda _: None)
    server.publish("/etag.tsv", TSV)
    back = fetch_dataset(cfg(url), cache_root, log=lambda _: None)
    assert (back.sha256, back.from_cache, back.outcome) == (TSV_SHA256, True, "unchanged")
    assert read_json(source_index(cache_root, url))["sha256"] == TSV_SHA256


def test_refresh_downloads_a_pinned_source(server: Server, cache_root: Path, logs: list[str]) -> None:
    url = server.url("/etag.tsv")
    fetch_dataset(cfg(url, sha256=TSV_SHA256), cache_root, log=logs.append)
    again = fetch_dataset(cfg(url, sha256=TSV_SHA256, refresh=True), cache_root, log=logs.append)
    assert server.counts["/etag.tsv"] == 2
    assert server.conditional_headers("/etag.tsv") == [{}, {}]  # refresh sends no validators: a full download
    assert again.sha256 == TSV_SHA256 and again.outcome == "unchanged"


def test_refresh_skips_revalidation_of_an_unpinned_source(server: Server, cache_root: Path) -> None:
    url = server.url("/etag.tsv")
    fetch_dataset(cfg(url), cache_root, log=lambda _: None)
    again = fetch_dataset(cfg(url, refresh=True), cache_root, log=lambda _: None)
    assert server.conditional_headers("/etag.tsv") == [{}, {}]
    assert again.outcome == "unchanged" and again.path.read_bytes() == TSV


def test_run_refresh_flag_reaches_the_fetch_config() -> None:
    from qdup.cli.main import build_config, make_parser

    assert build_config(make_parser().parse_args(["run", "--refresh"])).fetch.refresh is True
    assert build_config(make_parser().parse_args(["run"])).fetch.refresh is False


# -- verified reuse: a cache entry edited on disk ------------------------------------------------


def _edit(data: Path, how: str) -> None:
    if how == "appended":
        with open(data, "ab") as f:
            f.write(b"999\t1\t2\tinjected?\trow?\t1\n")
    else:  # same size, one byte changed: only a hash can tell
        blob = bytearray(data.read_bytes())
        blob[-3] = ord("X")
        data.write_bytes(bytes(blob))


@pytest.mark.parametrize("how", ["appended", "same-size"])
@pytest.mark.parametrize(
    "path, pin",
    [("/data.tsv", {"sha256": TSV_SHA256}), ("/etag.tsv", {}), ("/plain.tsv", {})],
    ids=["pinned", "etag", "no-validators"],
)
def test_edited_cache_entry_is_fetched_again_with_a_warning(
    server: Server, cache_root: Path, logs: list[str], how: str, path: str, pin: dict[str, str]
) -> None:
    url = server.url(path)
    first = fetch_dataset(cfg(url, **pin), cache_root, log=logs.append)
    _edit(first.path, how)
    logs.clear()

    again = fetch_dataset(cfg(url, **pin), cache_root, log=logs.append)

    assert again.path == first.path and again.path.read_bytes() == TSV
    assert (again.from_cache, again.outcome) == (False, "stored")
    warnings = [line for line in logs if "WARNING" in line]
    assert len(warnings) == 1 and str(first.path) in warnings[0] and "damaged" in warnings[0]
    # A damaged copy must not be revalidated: a 304 would bless the edited file.
    assert server.conditional_headers(path)[-1] == {}
    assert server.counts[path] == 2
    assert not list(cache_root.rglob("*.tmp"))


def test_edited_cache_entry_that_cannot_be_fetched_again_is_a_one_line_error(
    server: Server, cache_root: Path, logs: list[str]
) -> None:
    url = server.url("/once.tsv")
    first = fetch_dataset(cfg(url), cache_root, log=logs.append)
    _edit(first.path, "same-size")
    with pytest.raises(QdupError) as info:
        fetch_dataset(cfg(url), cache_root, log=logs.append)
    msg = str(info.value)
    assert str(first.path) in msg and "damaged" in msg and "404" in msg and "\n" not in msg
    assert not first.path.exists()  # the damaged copy is never served again


@pytest.mark.parametrize("how", ["appended", "same-size"])
def test_edited_cache_entry_of_a_local_source_is_copied_again(
    tmp_path: Path, cache_root: Path, logs: list[str], how: str
) -> None:
    local = tmp_path / "quora.tsv"
    local.write_bytes(TSV)
    first = fetch_dataset(cfg(str(local)), cache_root, log=logs.append)
    _edit(first.path, how)
    logs.clear()

    again = fetch_dataset(cfg(str(local)), cache_root, log=logs.append)

    assert again.path == first.path and again.path.read_bytes() == TSV and again.outcome == "stored"
    warnings = [line for line in logs if "WARNING" in line]
    assert len(warnings) == 1 and str(first.path) in warnings[0]


def test_edited_cache_entry_of_a_vanished_local_source_is_a_one_line_error(tmp_path: Path, cache_root: Path) -> None:
    local = tmp_path / "quora.tsv"
    local.write_bytes(TSV)
    first = fetch_dataset(cfg(str(local)), cache_root, log=lambda _: None)
    _edit(first.path, "same-size")
    local.unlink()
    with pytest.raises(QdupError) as info:
        fetch_dataset(cfg(str(local)), cache_root, log=lambda _: None)
    assert str(local) in str(info.value) and "does not exist" in str(info.value) and "\n" not in str(info.value)
