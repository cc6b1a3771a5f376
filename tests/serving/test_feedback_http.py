"""POST /v1/feedback on a real server: what is stored, what is refused (nothing stored), the token, the rate limit, /v1/model."""

from __future__ import annotations

import httpx
import pytest

from qdup.registry.feedback import FeedbackLog, pair_sha256
from qdup.serving.http import create_app
from qdup.serving.settings import ServeConfig
from tests.serving.conftest import live_server, make_store

PAIR = {"question1": "How do I learn Python?", "question2": "What is the best way to learn Python?"}


def test_a_judgement_is_committed_before_the_answer_and_counted(tmp_path, tiny_exports):
    store, v1, v2 = make_store(tmp_path / "store", tiny_exports)
    with live_server(create_app(ServeConfig(store=store.url, poll_s=1.0))) as url:
        r = httpx.post(f"{url}/v1/feedback", json={**PAIR, "label": "duplicate", "version": v1, "source": "page", "note": "same"})
        assert r.status_code == 201, r.text
        # A second process (a fresh log object) sees the row as soon as the answer came.
        rows = FeedbackLog(store).frame()
        assert len(rows) == 1 and rows["id"][0] == r.json()["id"]
        assert rows.iloc[0][["version", "label", "source", "note"]].tolist() == [v1, "duplicate", "page", "same"]
        assert rows["pair_sha256"][0] == pair_sha256(PAIR["question2"].upper(), "  " + PAIR["question1"])
        swapped = {"question1": PAIR["question2"], "question2": PAIR["question1"], "label": "not_duplicate", "version": v2}
        assert httpx.post(f"{url}/v1/feedback", json=swapped).status_code == 201
        stats = httpx.get(f"{url}/v1/feedback/stats").json()
        assert stats == {"total": 2, "counts": {v1: {"duplicate": 1, "not_duplicate": 0}, v2: {"duplicate": 0, "not_duplicate": 1}}}
        assert FeedbackLog(store).frame()["source"].tolist() == ["page", "api"]  # api is the default source
        # /v1/model: the served version's rows since its promotion and the decision's agreement with them.
        model = httpx.get(f"{url}/v1/model").json()
        fb = model["feedback"]
        assert fb["token_required"] is False and fb["counts"] == {"duplicate": 1, "not_duplicate": 0}
        expected = httpx.post(f"{url}/v1/similarity", json=PAIR).json()["duplicate"]
        assert fb["agreement"]["n"] == 1 and fb["agreement"]["agreement"] == (1.0 if expected else 0.0)


BAD = [
    ({"question1": ""}, "question1"),
    ({"question2": " \t\n "}, "question2"),
    ({"question1": "x" * 2001}, "question1"),
    ({"label": "maybe"}, "label"),
    ({"label": 1}, "label"),
    ({"source": "email"}, "source"),
    ({"note": "n" * 1001}, "note"),
    ({"extra": 1}, "extra"),
]


@pytest.mark.parametrize(("change", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(tmp_path, tiny_exports, change, field):
    store, v1, _ = make_store(tmp_path / "store", tiny_exports)
    with live_server(create_app(ServeConfig(store=store.url, poll_s=1.0))) as url:
        body = {**PAIR, "label": "duplicate", "version": v1, **change}
        r = httpx.post(f"{url}/v1/feedback", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["field"] == field and r.json()["error"].startswith(f"{field}: ")
        for missing in ("question1", "label", "version"):
            r = httpx.post(f"{url}/v1/feedback", json={k: v for k, v in {**PAIR, "label": "duplicate", "version": v1}.items() if k != missing})
            assert r.status_code == 422 and r.json()["detail"][0]["field"] == missing
        r = httpx.post(f"{url}/v1/feedback", json={**PAIR, "label": "duplicate", "version": "20990101T000000000Z-abcdef"})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "version" and "no version" in r.json()["error"]
    assert FeedbackLog(store).count() == 0


def test_the_token_guards_writes_and_reads_unless_reads_are_public(tmp_path, tiny_exports):
    store, v1, _ = make_store(tmp_path / "store", tiny_exports)
    body = {**PAIR, "label": "not_duplicate", "version": v1}
    with live_server(create_app(ServeConfig(store=store.url, poll_s=1.0, feedback_token="s3cret"))) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}, {"Authorization": "Basic s3cret"}):
            r = httpx.post(f"{url}/v1/feedback", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["detail"][0]["field"] == "authorization"
            assert r.headers["www-authenticate"] == "Bearer"
        # A wrong token is refused before the body is looked at: bad input gets 401 too, and stores nothing.
        assert httpx.post(f"{url}/v1/feedback", json={"label": "x"}).status_code == 401
        assert FeedbackLog(store).count() == 0
        assert httpx.get(f"{url}/v1/feedback/stats").status_code == 401
        assert httpx.post(f"{url}/v1/feedback", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 201
        assert httpx.get(f"{url}/v1/feedback/stats", headers={"Authorization": "Bearer s3cret"}).json()["total"] == 1
        hidden = httpx.get(f"{url}/v1/model").json()["feedback"]
        assert hidden["token_required"] is True and "counts" not in hidden and "token" in hidden["hidden"]
        shown = httpx.get(f"{url}/v1/model", headers={"Authorization": "Bearer s3cret"}).json()["feedback"]
        assert shown["counts"] == {"duplicate": 0, "not_duplicate": 1}
    cfg = ServeConfig(store=store.url, poll_s=1.0, feedback_token="s3cret", feedback_public_reads=True)
    with live_server(create_app(cfg)) as url:
        assert httpx.get(f"{url}/v1/feedback/stats").json()["total"] == 1
        assert httpx.get(f"{url}/v1/model").json()["feedback"]["counts"] == {"duplicate": 0, "not_duplicate": 1}
        assert httpx.post(f"{url}/v1/feedback", json=body).status_code == 401
    assert FeedbackLog(store).count() == 1


def test_writes_are_limited_per_client(tmp_path, tiny_exports):
    store, v1, _ = make_store(tmp_path / "store", tiny_exports)
    cfg = ServeConfig(store=store.url, poll_s=1.0, feedback_rate_per_s=0.01, feedback_burst=3)
    with live_server(create_app(cfg)) as url:
        codes = [httpx.post(f"{url}/v1/feedback", json={**PAIR, "label": "duplicate", "version": v1}).status_code for _ in range(5)]
        assert codes == [201, 201, 201, 429, 429]
        r = httpx.post(f"{url}/v1/feedback", json={**PAIR, "label": "duplicate", "version": v1})
        assert r.json()["detail"][0]["field"] == "client" and int(r.headers["retry-after"]) >= 1
    assert FeedbackLog(store).count() == 3
