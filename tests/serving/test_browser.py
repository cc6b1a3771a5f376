"""The web page in a real headless Chromium: two questions in, similarity, decision, threshold and version out."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qdup.serving.http import create_app
from qdup.serving.settings import ServeConfig
from tests.serving.conftest import free_port, live_server, make_store

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Root in a container, no network: no sandbox, no GPU, nothing that phones home.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1000,1150",
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver key of an element reference

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})",
)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("QDUP_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


class WebDriver:
    """The few W3C WebDriver commands the test needs, spoken over HTTP to chromedriver.

    Hand-written instead of Selenium: six commands do not justify Selenium's six extra packages.
    """

    def __init__(self, url: str, user_data_dir: Path):
        self.http = httpx.Client(base_url=url, timeout=60)
        options = {"binary": str(CHROMIUM), "args": [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        r = self.http.request(method, path, json=body)
        value = r.json().get("value")
        if r.status_code != 200:
            raise RuntimeError(f"WebDriver {method} {path}: HTTP {r.status_code}: {value}")
        return value

    def _s(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self._s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css: str, text: str) -> None:
        self._s("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._s("POST", f"/element/{self.find(css)}/click", {})

    def has(self, css: str, inner: str) -> bool:
        """Whether the first element matching `css` holds an element matching `inner`."""
        return bool(self._s("POST", f"/element/{self.find(css)}/elements", {"using": "css selector", "value": inner}))

    def text(self, css: str) -> str:
        return self._s("GET", f"/element/{self.find(css)}/text")

    def wait_text(self, css: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.text(css)
            if text.strip() and text.strip() != "\u2026":  # "…": the page's placeholder while it loads
                return text
            time.sleep(0.1)
        raise TimeoutError(f"{css} shows no text after {timeout_s} s")

    def wait_done(self, css: str, busy: str, timeout_s: float = 30.0) -> str:
        """The text of `css` once it shows something other than `busy` (a request in flight)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.wait_text(css, timeout_s)
            if text != busy:
                return text
            time.sleep(0.1)
        raise TimeoutError(f"{css} still shows {busy!r} after {timeout_s} s")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self._s("DELETE", "")
        self.http.close()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    port = free_port()
    profile = Path(tempfile.mkdtemp(prefix="qdup-chromium-"))
    log = artifacts_dir() / "chromedriver.log"
    proc = subprocess.Popen(
        [str(CHROMEDRIVER), f"--port={port}", "--allowed-ips=127.0.0.1", f"--log-path={log}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    driver = None
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()["value"]["ready"]:
                    break
            if time.monotonic() > deadline:
                pytest.fail("chromedriver did not start within 30 s")
            time.sleep(0.1)
        driver = WebDriver(f"http://127.0.0.1:{port}", profile)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def test_the_page_compares_two_questions_and_names_the_version(tmp_path, tiny_exports, browser):
    store, v1, _ = make_store(tmp_path / "store", tiny_exports)
    app = create_app(ServeConfig(store=store.url, poll_s=1.0))
    with live_server(app) as url:
        browser.get(url + "/")
        assert browser.wait_text("#model-version") == v1
        browser.type("#question1", "How do I learn Python?")
        browser.type("#question2", "What is the best way to learn Python?")
        browser.click("#compare")
        similarity = float(browser.wait_text("#similarity"))
        pair = {"question1": "How do I learn Python?", "question2": "What is the best way to learn Python?"}
        expected = httpx.post(f"{url}/v1/similarity", json=pair).json()
        assert similarity == pytest.approx(expected["similarity"], abs=1e-4)
        assert float(browser.text("#threshold")) == pytest.approx(0.3)
        assert browser.text("#version") == v1
        duplicate = expected["duplicate"]
        assert browser.text("#verdict") == ("Duplicate" if duplicate else "Not a duplicate")
        assert browser.text("#decision").startswith("duplicate" if duplicate else "not a duplicate")

        browser.type("#query", "How can I learn to code?")
        browser.click("#search")
        note = browser.wait_text("#search-note")
        assert note == f"no question index for version {v1}; build one with `qdup index build --model {v1}`"
        browser.screenshot(artifacts_dir() / "serve-page.png")
    assert (artifacts_dir() / "serve-page.png").stat().st_size > 10_000


def indexed_store(tmp_path: Path, tiny_exports: dict[str, Path], index_dir: Path | None = None):
    """The two-version store with a question index of TEXTS for its first version (in the store, or at `index_dir`)."""
    from qdup.cli.main import main as cli_main
    from tests.serving.conftest import TEXTS

    store, v1, _ = make_store(tmp_path / "store", tiny_exports)
    questions = tmp_path / "questions.tsv"
    questions.write_text("id\tquestion\n" + "".join(f"{100 + i}\t{t}\n" for i, t in enumerate(TEXTS)))
    where = ["--index", str(index_dir)] if index_dir is not None else []
    assert cli_main(["index", "build", "--model", v1, "--store", store.url, "--questions", str(questions), *where]) == 0
    return store, v1


def search_on_page(browser: WebDriver, url: str, version: str, query: str) -> str:
    """Open the page, wait for it to name `version`, search `query`; the note under the hits."""
    browser.get(url + "/")
    assert browser.wait_text("#model-version") == version
    browser.type("#query", query)
    browser.click("#search")
    return browser.wait_text("#search-note")


def test_the_page_lists_hits_by_the_score_that_ranked_them(tmp_path, tiny_exports, browser):
    """Each hit shows its ranking score (named by kind), its cosine apart, and a duplicate mark exactly where the API
    says duplicate; the page keeps the API's order, which descends in score."""
    from qdup.search.index import load_index
    from qdup.search.service import late_index_dir

    built = tmp_path / "built"
    store, v1 = indexed_store(tmp_path, tiny_exports, built)
    # Ranked as a version whose retrieval evaluation chose a weighted hybrid: the score shown is not the cosine.
    index = load_index(built, expected_model_version=v1)
    index.search_defaults = {"method": "hybrid", "hybrid": {"method": "weighted", "weight": 0.5}, "rrf_k": 60}
    index.save(late_index_dir(Path(store.root), v1))
    app = create_app(ServeConfig(store=store.url, poll_s=1.0))
    with live_server(app) as url:
        note = search_on_page(browser, url, v1, "how can i learn python")
        expected = httpx.post(f"{url}/v1/search", json={"question": "how can i learn python", "k": 10}).json()
        assert expected["method"] == "hybrid" and expected["score_kind"] == "weighted"
        assert note.startswith(f"answered by {v1}: hybrid search, ranked by weighted score")
        assert f"{expected['duplicate_threshold']:.4f}" in note
        shown = []
        for i, hit in enumerate(expected["results"], start=1):
            item = f"#hits li:nth-child({i})"
            assert browser.text(f"{item} .question") == hit["question"]
            score = browser.text(f"{item} .score").split()
            shown.append(float(score[1]))
            if hit["score_kind"] == "cosine":  # the score is the cosine: shown once
                assert not browser.has(item, ".cosine") and score[2] == "(cosine)"
            else:
                assert browser.text(f"{item} .cosine") == f"cosine {hit['similarity']:.3f}"
            assert browser.has(item, ".dupmark") is hit["duplicate"] is (hit["similarity"] >= expected["duplicate_threshold"])
        assert shown == sorted(shown, reverse=True) and shown == pytest.approx([h["score"] for h in expected["results"]], abs=1e-4)
        browser.screenshot(artifacts_dir() / "serve-search.png")


def test_a_person_rejects_one_hit_and_confirms_another_and_both_are_stored(tmp_path, tiny_exports, browser):
    """✗ on the first hit, ✓ on the second, ✓ on the pair answer: three rows in the store with source=page, the version
    that answered, the query and each hit's text; the page shows what was recorded."""
    from qdup.registry.feedback import FeedbackLog

    store, v1 = indexed_store(tmp_path, tiny_exports)
    app = create_app(ServeConfig(store=store.url, poll_s=1.0))
    with live_server(app) as url:
        search_on_page(browser, url, v1, "how can i learn python")
        first, second = browser.text("#hits li:nth-child(1) .question"), browser.text("#hits li:nth-child(2) .question")
        browser.click("#hits li:nth-child(1) .fb-no")
        assert browser.wait_done("#hits li:nth-child(1) .fb-status", "recording\u2026").startswith("recorded: not a duplicate (#")
        browser.click("#hits li:nth-child(2) .fb-yes")
        assert browser.wait_done("#hits li:nth-child(2) .fb-status", "recording\u2026").startswith("recorded: duplicate (#")
        browser.type("#question1", "How do I learn Python?")
        browser.type("#question2", "What is the best way to learn Python?")
        browser.click("#compare")
        browser.wait_text("#similarity")
        browser.click("#pair-feedback .fb-yes")
        assert browser.wait_done("#pair-feedback .fb-status", "recording\u2026") == f"recorded: duplicate (#3, {v1})"
        browser.screenshot(artifacts_dir() / "serve-feedback.png")
    rows = FeedbackLog(store).frame()
    got = rows[["question1", "question2", "label", "source", "version"]].values.tolist()
    assert got == [
        ["how can i learn python", first, "not_duplicate", "page", v1],
        ["how can i learn python", second, "duplicate", "page", v1],
        ["How do I learn Python?", "What is the best way to learn Python?", "duplicate", "page", v1],
    ]
