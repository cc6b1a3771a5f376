"""The HTTP server: every endpoint, every refused input by field, micro-batching, following promotions."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from qdup.cli.main import main as cli_main
from qdup.registry.store import ArtifactStore
from qdup.serving.follower import ModelFollower, ServedModel, load_served
from qdup.serving.http import create_app
from qdup.serving.predictor import load_inference
from qdup.serving.settings import ServeConfig
from tests.serving.conftest import TEXTS, THRESHOLDS, free_port, live_server, make_store, publish_export, wait_for

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"max_batch_pairs": 5, "max_question_chars": 200, "max_body_bytes": 4096, "max_search_queries": 3, "max_k": 20}
PAIRS = [
    ("How do I learn Python?", "What is the best way to learn Python?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("why is the sky blue", "How do I learn Python?"),
    ("zzz unknown words", "???"),
]


def _cfg(store: ArtifactStore, **kw) -> ServeConfig:
    return ServeConfig(store=store.url, poll_s=0.1, **(LIMITS | kw))


def _serve(store: ArtifactStore, v1: str, v2: str):
    app = create_app(_cfg(store))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, app, store, v1, v2


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_exports):
    """One server for the tests that do not move aliases (v1 = threshold 0.3, v2 = 0.8)."""
    yield from _serve(*make_store(tmp_path_factory.mktemp("shared") / "store", tiny_exports))


@pytest.fixture
def served(store_v1_v2):
    """A server of its own, following production in a fresh store."""
    yield from _serve(*store_v1_v2)


def test_one_pair_and_a_batch_are_scored_by_the_served_version(shared, tiny_exports):
    client, _, _, v1, _ = shared
    expected = load_inference(tiny_exports["v1"]).similarity([a for a, _ in PAIRS], [b for _, b in PAIRS])
    one = client.post("/v1/similarity", json={"question1": PAIRS[0][0], "question2": PAIRS[0][1]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["version"] == v1 and body["threshold"] == THRESHOLDS["v1"]
    assert body["similarity"] == pytest.approx(float(expected[0]), abs=1e-5)
    assert body["duplicate"] is (body["similarity"] >= 0.3)

    batch = client.post("/v1/similarity", json={"pairs": [{"question1": a, "question2": b} for a, b in PAIRS]})
    assert batch.status_code == 200, batch.text
    got = batch.json()
    assert got["version"] == v1 and got["threshold"] == 0.3 and len(got["results"]) == len(PAIRS)
    np.testing.assert_allclose([r["similarity"] for r in got["results"]], expected, atol=1e-5)
    assert [r["duplicate"] for r in got["results"]] == [bool(s >= 0.3) for s in expected]


def test_model_health_readiness_docs_and_page(shared):
    client, _, _, v1, _ = shared
    facts = client.get("/v1/model").json()
    assert facts["version"] == v1 and facts["ref"] == "production" and facts["aliases"] == ["production"]
    assert facts["threshold"] == 0.3 and facts["metrics"]["test"]["roc_auc"] == 0.7
    assert facts["dataset_sha256"] == "ab" * 32 and facts["created"].startswith("20")
    assert facts["last_error"] is None and facts["search_index"] is False
    assert client.get("/healthz").json() == {"status": "ok", "version": v1}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["version"] == v1 and -1 <= ready.json()["probe_similarity"] <= 1
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/similarity", "/v1/search", "/v1/model", "/healthz", "/readyz"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="question1"' in page.text and "/static/app.js" in page.text
    assert "://" not in page.text  # nothing from the internet
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200


def test_search_without_an_index_is_501_naming_the_version_and_the_fix(shared):
    client, _, _, v1, _ = shared
    for body in ({"question": "How do I learn Python?"}, {"questions": ["a", "b"], "k": 3}):
        r = client.post("/v1/search", json=body)
        assert r.status_code == 501
        assert r.json() == {
            "error": f"no question index for version {v1}; build one with `qdup index build --model {v1}`",
            "version": v1,
        }


class BruteForceSearcher:
    """A real (small) Searcher: every indexed question compared with each query by the served model."""

    def __init__(self, predictor, questions: list[str]):
        self.predictor, self.questions = predictor, questions

    def search(self, queries: list[str], k: int) -> list[list[dict]]:
        out = []
        for q in queries:
            sims = self.predictor.similarity([q] * len(self.questions), self.questions)
            order = np.argsort(-sims, kind="stable")[:k]
            out.append([{"id": f"q{i}", "question": self.questions[i], "score": float(sims[i]), "score_kind": "cosine",
                         "similarity": float(sims[i]), "duplicate": bool(sims[i] >= self.predictor.threshold)} for i in order])
        return out

    def describe(self) -> dict:
        return {"method": "dense", "score_kind": "cosine", "duplicate_by": "similarity",
                "duplicate_threshold": float(self.predictor.threshold)}


def test_search_answers_from_the_versions_index(store_v1_v2):
    store, v1, _ = store_v1_v2

    def with_index(store: ArtifactStore, version: str) -> ServedModel:
        served = load_served(store, version)
        return dataclasses.replace(served, searcher=BruteForceSearcher(served.predictor, TEXTS))

    follower = ModelFollower(store, "production", poll_s=0.1, loader=with_index)
    app = create_app(_cfg(store), follower)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/v1/search", json={"question": TEXTS[2], "k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == v1 and len(body["results"]) == 3
        top = body["results"][0]
        assert top["id"] == "q2" and top["question"] == TEXTS[2] and top["similarity"] == pytest.approx(1.0, abs=1e-5)
        sims = [h["similarity"] for h in body["results"]]
        assert sims == sorted(sims, reverse=True)
        many = client.post("/v1/search", json={"questions": [TEXTS[0], TEXTS[4]], "k": 20}).json()
        assert many["version"] == v1 and [len(hits) for hits in many["results"]] == [len(TEXTS), len(TEXTS)]
        assert [hits[0]["id"] for hits in many["results"]] == ["q0", "q4"]
        assert client.get("/v1/model").json()["search_index"] is True


BAD_SIMILARITY = [
    ({}, "question1", "missing"),
    ({"question1": "a"}, "question2", "missing"),
    ({"question1": "", "question2": "b"}, "question1", "string_too_short"),
    ({"question1": " \t\n", "question2": "b"}, "question1", "value_error"),
    ({"question1": 42, "question2": "b"}, "question1", "string_type"),
    ({"question1": None, "question2": "b"}, "question1", "string_type"),
    ({"question1": ["a"], "question2": "b"}, "question1", "string_type"),
    ({"question1": "a", "question2": "x" * 201}, "question2", "string_too_long"),
    ({"pairs": []}, "pairs", "too_short"),
    ({"pairs": [{"question1": "a", "question2": "b"}] * 6}, "pairs", "too_long"),
    ({"pairs": [{"question1": "a"}]}, "pairs.0.question2", "missing"),
    ({"pairs": [{"question1": "a", "question2": "b"}, {"question1": "a", "question2": 3}]}, "pairs.1.question2", "string_type"),
    ({"pairs": "a"}, "pairs", "list_type"),
    ({"question1": "a", "question2": "b", "model": "/etc/passwd"}, "model", "extra_forbidden"),
    ({"pairs": [{"question1": "a", "question2": "b", "path": "../../x"}]}, "pairs.0.path", "extra_forbidden"),
    (["a", "b"], "body", "union_tag_not_found"),
]


@pytest.mark.parametrize("body, field, kind", BAD_SIMILARITY)
def test_bad_similarity_requests_are_422_naming_the_field(shared, body, field, kind):
    client = shared[0]
    r = client.post("/v1/similarity", json=body)
    assert r.status_code == 422, r.text
    got = r.json()
    assert got["detail"][0]["field"] == field and got["detail"][0]["type"] == kind
    assert got["error"].startswith(f"{field}: ")


BAD_SEARCH = [
    ({"question": ""}, "question", "string_too_short"),
    ({"questions": []}, "questions", "too_short"),
    ({"questions": ["a"] * 4}, "questions", "too_long"),
    ({"questions": ["a", 7]}, "questions.1", "string_type"),
    ({"question": "a", "k": 0}, "k", "greater_than_equal"),
    ({"question": "a", "k": 21}, "k", "less_than_equal"),
    ({"question": "a", "k": "3"}, "k", "int_type"),
    ({"question": "a", "index": "/tmp/other"}, "index", "extra_forbidden"),
]


@pytest.mark.parametrize("body, field, kind", BAD_SEARCH)
def test_bad_search_requests_are_422_naming_the_field(shared, body, field, kind):
    r = shared[0].post("/v1/search", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field and r.json()["detail"][0]["type"] == kind


def test_not_json_and_oversized_bodies_are_refused_before_parsing(shared):
    client = shared[0]
    r = client.post("/v1/similarity", content=b'{"question1": "a",', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid" and r.json()["detail"][0]["field"] == "body"
    # Each question is within its limit; the body (about 5 kB) is over max_body_bytes = 4096.
    big = {"pairs": [{"question1": "q" * 190, "question2": "r" * 190}] * 13}
    r = client.post("/v1/similarity", json=big)
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "body" and "4,096 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced on the stream
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/v1/similarity", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"].startswith("body: ")
    assert client.get("/readyz").status_code == 200  # and the server carries on


def test_nothing_a_client_sends_opens_another_file(shared):
    client, _, _, v1, _ = shared
    for path in (
        "/static/../pyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static//etc/passwd",
    ):
        assert client.get(path).status_code == 404, path
    assert client.get("/v1/model", params={"model": "/etc/passwd", "version": "x"}).json()["version"] == v1
    r = client.post("/v1/similarity", params={"model": "../x"}, json={"question1": "a", "question2": "b"})
    assert r.status_code == 200 and r.json()["version"] == v1


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(store_v1_v2, tiny_exports):
    store, v1, _ = store_v1_v2
    app = create_app(_cfg(store, batch_wait_ms=100.0))
    pairs = [(f"how do i learn python {i}", f"what is the capital of france {i % 3}") for i in range(24)]
    expected = load_inference(tiny_exports["v1"]).similarity([a for a, _ in pairs], [b for _, b in pairs])

    async def fire(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/similarity", json={"question1": a, "question2": b}) for a, b in pairs))

    with live_server(app) as url:
        before = app.state.batcher.stats.calls
        answers = asyncio.run(fire(url))
    stats = app.state.batcher.stats
    assert all(r.status_code == 200 and r.json()["version"] == v1 for r in answers)
    np.testing.assert_allclose([r.json()["similarity"] for r in answers], expected, atol=1e-5)
    assert stats.max_requests_per_call > 1
    assert stats.calls - before < len(pairs)  # fewer model calls than requests


def _version_of(client: httpx.Client) -> str:
    return client.post("/v1/similarity", json={"question1": "a b", "question2": "c d"}).json()["version"]


def test_promotion_and_rollback_are_followed_without_failed_requests(served):
    client, _, store, v1, v2 = served
    seen: list[tuple[int, str | None, float | None]] = []
    stop = threading.Event()

    def hammer():  # requests keep coming while the alias moves
        with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/similarity", json={"question1": "how do i learn python", "question2": "why is the sky blue"})
                body = r.json() if r.status_code == 200 else {}
                seen.append((r.status_code, body.get("version"), body.get("threshold")))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(seen) > 5)
        store.promote(v2, "test", why="better")
        wait_for(lambda: _version_of(client) == v2)
        facts = client.get("/v1/model").json()
        assert facts["version"] == v2 and facts["threshold"] == 0.8 and facts["aliases"] == ["production"]
        assert facts["switches"][-1]["from"] == v1 and facts["switches"][-1]["to"] == v2
        wait_for(lambda: sum(1 for s in seen if s[1] == v2) > 5)
        store.rollback("test")
        wait_for(lambda: _version_of(client) == v1)
        assert client.get("/v1/model").json()["threshold"] == 0.3
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(code == 200 for code, _, _ in seen)
    # Every answer names the version that produced it: its threshold is that version's.
    assert all(thr == THRESHOLDS["v1" if v == v1 else "v2"] for _, v, thr in seen)
    versions = [v for _, v, _ in seen]
    changes = [b for a, b in zip(versions, versions[1:]) if a != b]
    assert v2 in changes and changes[-1] == v1


@pytest.mark.parametrize("damage", ["garbage model", "missing file", "altered vocabulary"])
def test_a_broken_version_is_not_switched_to_and_model_says_so(served, tiny_exports, damage):
    client, app, store, v1, v2 = served
    broken = publish_export(store, tiny_exports["v2"], THRESHOLDS["v2"])
    model_dir = store.local_path(broken) / "model"
    if damage == "garbage model":
        (model_dir / "inference.keras").write_bytes(b"not a keras file")
    elif damage == "missing file":
        (model_dir / "threshold.json").unlink()
    else:  # the model would load and answer: only the manifest's hashes tell
        with (model_dir / "vocabulary.txt").open("a") as handle:
            handle.write("extra\n")
    # `promote` refuses a damaged version; the alias is moved as a damaged store or a careless hand would.
    with store.lock():
        store.move_alias("production", broken, "damaged", "test", "promote")
    facts = wait_for(lambda: (f := client.get("/v1/model").json())["last_error"] and f)
    assert facts["version"] == v1 and facts["last_error"]["version"] == broken
    assert facts["last_error"]["still_serving"] == v1 and facts["last_error"]["error"]
    # Damaged bytes: refused for good (never retried), and /v1/model says why.
    assert facts["last_error"]["kind"] == "hash" and facts["refused"][broken]["kind"] == "hash"
    if damage == "altered vocabulary":
        assert "model/vocabulary.txt" in facts["last_error"]["error"]
    assert _version_of(client) == v1 and client.get("/readyz").json()["version"] == v1
    # A good version afterwards is switched to, and the error is cleared.
    store.promote(v2, "test", why="fixed")
    wait_for(lambda: _version_of(client) == v2)
    assert client.get("/v1/model").json()["last_error"] is None


def test_a_pinned_version_is_served_whatever_production_says(store_v1_v2):
    store, v1, v2 = store_v1_v2
    app = create_app(_cfg(store, model=v2))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert _version_of(client) == v2
        facts = client.get("/v1/model").json()
        assert facts["ref"] == v2 and facts["aliases"] == [] and facts["threshold"] == 0.8


def test_an_unservable_reference_keeps_the_server_unready(tmp_path):
    store = ArtifactStore(str(tmp_path / "empty-store"))
    app = create_app(ServeConfig(store=store.url, poll_s=0.1))
    with pytest.raises(TimeoutError), live_server(app, timeout_s=2):
        pass
    follower = ModelFollower(store, "production")
    assert not follower.check() and "production" in follower.last_error["error"]


def test_cli_refuses_an_unknown_alias_in_one_line(tmp_path, capsys):
    assert cli_main(["serve-model", "--store", str(tmp_path / "store"), "--model", "staging"]) == 2
    err = capsys.readouterr().err
    # The store is empty: the line says how to make its first version.
    assert err.startswith("qdup: error: no version in the store ") and "qdup run --source" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_serve_model_starts_and_answers(store_v1_v2):
    store, v1, _ = store_v1_v2
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "qdup.cli", "serve-model", "--store", store.url, "--port", str(port), "--poll-s", "1",
           "--inference-threads", "2", "--tf-intra-op-threads", "1", "--tf-inter-op-threads", "2", "--faiss-threads", "3", "--encoding-cache-mb", "0.5"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready():
            if proc.poll() is not None:
                pytest.fail(f"serve-model exited {proc.returncode}: {proc.stdout.read()[-3000:]}")
            try:
                return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout_s=240, every_s=0.2)
        r = httpx.post(f"{url}/v1/similarity", json={"question1": "a", "question2": "b"}, timeout=30)
        assert r.status_code == 200 and r.json()["version"] == v1 and r.json()["threshold"] == 0.3
        # The serving pools the flags name are the ones in effect (set before the model first ran).
        facts = httpx.get(f"{url}/v1/model", timeout=30).json()
        # faiss's (3: no machine's default here) as the search thread sees it.
        assert facts["threads"] == {"inference": 2, "tf_intra_op": 1, "tf_inter_op": 2, "faiss_omp": 3, "blas": [1]}
        assert facts["encoding_cache"]["max_bytes"] == 2**19
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_search_with_a_built_index_answers_200_from_it(store_v1_v2, tmp_path):
    """`qdup index build` for a version published without an index; the default loader serves it."""
    store, v1, _ = store_v1_v2
    questions = tmp_path / "questions.tsv"
    questions.write_text("id\tquestion\n" + "".join(f"{100 + i}\t{t}\n" for i, t in enumerate(TEXTS)))
    assert cli_main(["index", "build", "--model", v1, "--store", store.url, "--questions", str(questions)]) == 0
    app = create_app(_cfg(store))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/v1/model").json()["search_index"] is True
        r = client.post("/v1/search", json={"question": TEXTS[3], "k": 2})
        assert r.status_code == 200, r.text
        hits = r.json()["results"]
        assert [h["id"] for h in hits][0] == 103 and hits[0]["question"] == TEXTS[3]
        assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-5) and len(hits) == 2


# Raw bodies (bytes, content type) that both routes must answer alike: valid ones of every form and awkward JSON,
# invalid ones that pydantic's JSON parser and Python's json module read differently.
RAW_BODIES = [
    (b'{"question1": "How do I learn Python?", "question2": "What is the best way to learn Python?"}', "application/json"),
    (b'{"pairs": [{"question1": "a b", "question2": "b a"}, {"question1": "why is the sky blue", "question2": "???"}]}',
     "application/json; charset=utf-8"),
    ('{"question1": "\u00e9cole na\u00efve \U0001f600", "question2": "\\u00e9cole \\ud83d\\ude00"}'.encode(), "Application/JSON"),
    (b'{"question1": "x", "question1": "dup key: last wins", "question2": "y"}', "application/json"),
    (b'  {"question2": "order", "question1": "any"}\n', "application/json"),
    (b'{"question1": "lone \\ud800 surrogate", "question2": "b"}', "application/json"),
    (b'\xef\xbb\xbf{"question1": "a", "question2": "b"}', "application/json"),
    (b'{"question1": "\xff", "question2": "b"}', "application/json"),
    (b'{"question1": "a", "question2": "b"}', "text/plain"),
    (b'{"question1": "a", "question2": "b"}', None),
    (b'{"question1": "a", "question2": NaN}', "application/json"),
    (b'{"question1": " ", "question2": "b"}', "application/json"),
    (b'{"pairs": [{"question1": "a", "question2": "b"}], "k": 5.0}', "application/json"),
    (b'[1, 2]', "application/json"),
    (b'', "application/json"),
]


def test_direct_route_answers_what_fastapi_answers(store_v1_v2):
    store = store_v1_v2[0]
    with (live_server(create_app(_cfg(store))) as direct_url, live_server(create_app(_cfg(store), direct_routes=False)) as plain_url,
          httpx.Client(timeout=30) as client):
        for content, media_type in RAW_BODIES:
            headers = {} if media_type is None else {"content-type": media_type}
            a = client.post(f"{direct_url}/v1/similarity", content=content, headers=headers)
            b = client.post(f"{plain_url}/v1/similarity", content=content, headers=headers)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), content
            assert a.headers["content-type"] == b.headers["content-type"]
        assert [client.post(f"{direct_url}/v1/similarity", content=c, headers={"content-type": "application/json"}).status_code
                for c, _ in RAW_BODIES[:5]] == [200] * 5


def test_direct_route_takes_valid_bodies_and_hands_the_rest_to_fastapi_byte_for_byte():
    from pydantic import BaseModel, ConfigDict
    from starlette.responses import JSONResponse

    from qdup.serving.middleware import DirectJsonRoute

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid")
        question1: str

    handed: list[bytes] = []

    async def fallback(scope, receive, send):
        message = await receive()
        handed.append(message["body"])
        await JSONResponse({"by": "fastapi"}, status_code=422)(scope, receive, send)

    async def answer(body):
        return JSONResponse({"by": "direct", "question1": body.question1})

    route = DirectJsonRoute(fallback, "/v1/similarity", Body, answer)

    def call(path: str, chunks: list[bytes], media_type: bytes = b"application/json", method: str = "POST"):
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "path": path, "method": method, "headers": [(b"content-type", media_type)]}
        asyncio.run(route(scope, receive, send))
        return sent[1]["body"] if len(sent) > 1 else None

    assert call("/v1/similarity", [b'{"question1":', b' "in two chunks"}']) == b'{"by":"direct","question1":"in two chunks"}'
    assert handed == []
    for chunks in ([b'{"question1": 3}'], [b'{"question1": "a", "x": 1}'], [b'{"question1": "lone \\ud800"}']):
        assert call("/v1/similarity", chunks) == b'{"by":"fastapi"}'
        assert handed[-1] == b"".join(chunks)
    # Other paths, methods and media types go to FastAPI untouched (their body still unread).
    handed.clear()
    assert call("/v1/search", [b'{"question1": "a"}']) == b'{"by":"fastapi"}'
    assert call("/v1/similarity", [b'{"question1": "a"}'], media_type=b"text/plain") == b'{"by":"fastapi"}'
    assert call("/v1/similarity", [b'{"question1": "a"}'], method="PUT") == b'{"by":"fastapi"}'
    assert handed == [b'{"question1": "a"}'] * 3
