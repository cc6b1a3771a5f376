"""The server's encoding cache, /metrics, search on its own thread, and the inputs fuzzing found departures on."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qdup.serving.follower import ModelFollower, ServedModel, load_served
from qdup.serving.http import create_app
from qdup.serving.predictor import load_inference
from qdup.serving.settings import ServeConfig
from tests.serving.conftest import TEXTS, live_server, wait_for

PAIRS = [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3]), (TEXTS[4], TEXTS[0])]


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def pair_body(a: str, b: str) -> dict[str, str]:
    return {"question1": a, "question2": b}


class EncoderSearcher:
    """A real (small) Searcher: the served predictor's encodings of a few questions, exact search; `gate` can hold it."""

    def __init__(self, predictor, questions: list[str]):
        self.predictor, self.questions = predictor, questions
        self.vectors = predictor.encode(questions)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def search(self, queries: list[str], k: int) -> list[list[dict]]:
        self.entered.set()
        if not self.gate.wait(timeout=60):
            raise TimeoutError("search held for too long")
        sims = self.predictor.encode(queries) @ self.vectors.T
        return [[{"id": f"q{i}", "question": self.questions[i], "score": float(row[i]), "score_kind": "cosine",
                  "similarity": float(row[i]), "duplicate": bool(row[i] >= self.predictor.threshold)} for i in np.argsort(-row)[:k]]
                for row in sims]

    def describe(self) -> dict:
        return {"method": "dense", "score_kind": "cosine", "duplicate_by": "similarity",
                "duplicate_threshold": float(self.predictor.threshold)}

    def warm(self) -> None:
        self.search(["warm"], 1)


@pytest.fixture
def indexed(store_v1_v2):
    """A follower whose versions each carry a small searcher."""
    store, v1, v2 = store_v1_v2
    searchers: dict[str, EncoderSearcher] = {}

    def with_index(store, version: str) -> ServedModel:
        served = load_served(store, version)
        searchers[version] = EncoderSearcher(served.predictor, TEXTS)
        return dataclasses.replace(served, searcher=searchers[version])

    return store, v1, v2, ModelFollower(store, "production", poll_s=0.1, loader=with_index), searchers


def test_cache_counts_metrics_and_a_switch_that_reuses_nothing(indexed, tiny_exports):
    store, v1, v2, follower, _ = indexed
    app = create_app(ServeConfig(store=store.url, poll_s=0.1, encoding_cache_mb=1), follower)
    want = load_inference(tiny_exports["v1"]).similarity([a for a, _ in PAIRS], [b for _, b in PAIRS])
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        base = client.get("/v1/model").json()["encoding_cache"]  # /readyz's probes went through the cache too
        before = scrape(client)
        for (a, b), sim in zip(PAIRS, want, strict=True):
            r = client.post("/v1/similarity", json=pair_body(a, b))
            assert r.status_code == 200 and r.json()["similarity"] == pytest.approx(float(sim), abs=1e-6)
        cache = client.get("/v1/model").json()["encoding_cache"]
        # Five distinct questions, each encoded once; TEXTS[0] asked again in the third pair is a hit.
        assert cache["misses"] - base["misses"] == 5 and cache["hits"] - base["hits"] == 1
        assert cache["entries"] == base["entries"] + 5 and 0 < cache["bytes"] <= cache["max_bytes"] == 2**20
        batch = client.post("/v1/similarity", json={"pairs": [pair_body(a, b) for a, b in PAIRS]}).json()
        np.testing.assert_allclose([s["similarity"] for s in batch["results"]], want, atol=1e-6)
        assert client.get("/v1/model").json()["encoding_cache"]["misses"] == cache["misses"]  # all 5 questions cached now
        assert client.post("/v1/similarity", json={"question1": ""}).status_code == 422

        after = scrape(client)
        moved = lambda name, **labels: after.get((name, tuple(sorted(labels.items()))), 0) - before.get(  # noqa: E731
            (name, tuple(sorted(labels.items()))), 0)
        assert moved("qdup_requests_total", endpoint="/v1/similarity", status="200") == 4
        assert moved("qdup_requests_total", endpoint="/v1/similarity", status="422") == 1
        assert moved("qdup_request_seconds_count", endpoint="/v1/similarity") == 5
        assert moved("qdup_microbatch_pairs_count") == 4 and moved("qdup_microbatch_pairs_sum") == 6
        assert moved("qdup_microbatch_requests_sum") == 4
        assert moved("qdup_encoding_cache_misses_total") == 5 and moved("qdup_encoding_cache_hits_total") == 1 + 5
        assert after[("qdup_served_version_info", (("ref", "production"), ("version", v1)))] == 1
        assert after[("qdup_version_switches_total", ())] == 1

        # After a switch, the same questions are encoded again by the new version: no entry of v1 is reused.
        store.promote(v2, "test", why="switch")
        wait_for(lambda: client.post("/v1/similarity", json=pair_body("a b", "c d")).json()["version"] == v2)
        misses = client.get("/v1/model").json()["encoding_cache"]["misses"]
        r = client.post("/v1/similarity", json=pair_body(*PAIRS[0]))
        assert r.json()["version"] == v2
        assert client.get("/v1/model").json()["encoding_cache"]["misses"] == misses + 2
        final = scrape(client)
        assert final[("qdup_served_version_info", (("ref", "production"), ("version", v2)))] == 1
        assert final[("qdup_version_switches_total", ())] == 2


def test_a_disabled_cache_answers_the_same(store_v1_v2, tiny_exports):
    store, _, _ = store_v1_v2
    app = create_app(ServeConfig(store=store.url, poll_s=0.1, encoding_cache_mb=0))
    want = load_inference(tiny_exports["v1"]).similarity([a for a, _ in PAIRS], [b for _, b in PAIRS])
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        got = client.post("/v1/similarity", json={"pairs": [pair_body(a, b) for a, b in PAIRS]}).json()
        np.testing.assert_allclose([s["similarity"] for s in got["results"]], want, atol=1e-6)
        cache = client.get("/v1/model").json()["encoding_cache"]
        assert cache["enabled"] is False and cache["entries"] == 0 and cache["hits"] == 0


def test_a_search_in_progress_does_not_hold_up_similarity(indexed):
    store, v1, _, follower, searchers = indexed
    app = create_app(ServeConfig(store=store.url, poll_s=0.1), follower)

    async def both(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            searcher = searchers[v1]
            searcher.gate.clear()
            searcher.entered.clear()
            search = asyncio.create_task(client.post("/v1/search", json={"question": TEXTS[0], "k": 2}))
            # The search is running (and held) on its thread; similarity requests still get answered.
            while not searcher.entered.is_set():
                await asyncio.sleep(0.01)
            answers = await asyncio.gather(*(client.post("/v1/similarity", json=pair_body(a, b)) for a, b in PAIRS))
            held = not search.done()
            searcher.gate.set()
            return answers, held, await search

    with live_server(app) as url:
        answers, held, search = asyncio.run(both(url))
    assert all(r.status_code == 200 for r in answers) and held
    assert search.status_code == 200 and search.json()["results"][0]["id"] == "q0"


def test_searches_that_arrive_together_share_one_call_and_get_their_own_hits(indexed):
    store, v1, _, follower, searchers = indexed
    app = create_app(ServeConfig(store=store.url, poll_s=0.1), follower)
    calls: list[list[str]] = []

    async def together(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            searcher = searchers[v1]
            search = searcher.search

            def counted(queries, k):
                calls.append(list(queries))
                return search(queries, k)

            searcher.search = counted
            searcher.gate.clear()
            searcher.entered.clear()
            first = asyncio.create_task(client.post("/v1/search", json={"question": TEXTS[0], "k": 2}))
            while not searcher.entered.is_set():
                await asyncio.sleep(0.01)
            # Queued while the first search is held: they go into one call together.
            rest = [asyncio.create_task(client.post("/v1/search", json={"question": q, "k": 2})) for q in TEXTS[1:4]]
            await asyncio.sleep(0.3)
            searcher.gate.set()
            return await first, await asyncio.gather(*rest)

    with live_server(app) as url:
        first, rest = asyncio.run(together(url))
    assert [len(c) for c in calls] == [1, 3]
    for r, q in zip([first, *rest], TEXTS[:4], strict=True):
        assert r.status_code == 200 and r.json()["results"][0]["question"] == q


def test_a_whole_number_k_is_an_integer_and_other_k_are_refused(indexed):
    store, _, _, follower, _ = indexed
    app = create_app(ServeConfig(store=store.url, poll_s=0.1, max_k=20), follower)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for body in ({"question": TEXTS[0], "k": 3.0}, {"questions": [TEXTS[0], TEXTS[1]], "k": 3.0}):
            r = client.post("/v1/search", json=body)
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            assert len(results) == 3 or [len(hits) for hits in results] == [3, 3]
        for k, kind in ((True, "int_type"), ("5", "int_type"), (5.5, "int_type"), (21.0, "less_than_equal"), (0.0, "greater_than_equal")):
            r = client.post("/v1/search", json={"question": "a", "k": k})
            assert r.status_code == 422, (k, r.text)
            assert r.json()["detail"][0]["field"] == "k" and r.json()["detail"][0]["type"] == kind, k


@pytest.mark.parametrize("body", [b'{"question1": "caf\xe9", "question2": "b"}', b"\xff\xfe{}", b'{"question": "\xc3"}'])
def test_a_body_that_is_not_utf8_is_invalid_json_422(store_v1_v2, body):
    store, _, _ = store_v1_v2
    app = create_app(ServeConfig(store=store.url, poll_s=0.1))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for path in ("/v1/similarity", "/v1/search"):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["field"] == "body" and r.json()["detail"][0]["type"] == "json_invalid"
            assert r.json()["error"] == "body: JSON body is not valid UTF-8"
        # A UTF-8 body with the same characters is fine.
        ok = client.post("/v1/similarity", content='{"question1": "café", "question2": "b"}'.encode(),
                         headers={"content-type": "application/json"})
        assert ok.status_code == 200


def test_the_schemas_not_blank_pattern_is_what_the_server_checks():
    """The pattern /openapi.json publishes for a question matches exactly the strings the server accepts as non-blank."""
    import re

    from qdup.serving.schemas import NOT_BLANK_PATTERN

    pattern = re.compile(NOT_BLANK_PATTERN)
    # Every whitespace character lies below U+3100; past it, a sample.
    for code in [*range(0x3100), 0xFEFF, 0x10FFFF]:
        c = chr(code)
        assert bool(pattern.search(c)) == bool(c.strip()), hex(code)
    assert pattern.search(" \t x ") and not pattern.search(" \t\u3000\x1e ")
