"""Feedback over HTTP: `POST /v1/feedback` (a person's judgement of a pair) and `GET /v1/feedback/stats`.

A 2xx answer is sent only after the row's transaction is committed in the store's registry database.
Writes are committed in groups (every request waiting while a commit runs shares the next one), so
the database's one-writer commit is not paid once per request under load.
"""

# No `from __future__ import annotations`: FastAPI must see the body type as an object (see http.py).
import asyncio
import copy
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from qdup.data.feedback import LABELS, pair_sha256
from qdup.registry.feedback import FeedbackLog, agreement, promoted_at
from qdup.registry.store import StoreError
from qdup.serving.settings import ServeConfig

# Rows one commit takes at most; the rest wait for the next.
_MAX_GROUP = 512
# /v1/model's live agreement scores at most the latest this many labels of the served version (on the model thread).
LIVE_MAX_ROWS = 5000
# Client addresses whose buckets are kept; beyond it the fullest (idle) ones are forgotten.
_MAX_CLIENTS = 10_000


class Refusal(BaseModel):
    error: str = Field(description="the field and what is wrong with it, on one line")
    detail: list[dict[str, Any]] | None = None


REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Refusal, "description": "a token is configured and the request did not bring it"},
    413: {"model": Refusal}, 422: {"model": Refusal},
    429: {"model": Refusal, "description": "this client address is over its feedback write rate; see Retry-After"},
    503: {"model": Refusal, "description": "the store's registry database could not take the row; nothing was stored"},
}


class FeedbackRefused(Exception):
    """A feedback request refused before anything is stored: status and a body naming the field."""

    def __init__(self, status: int, field: str, msg: str, kind: str, headers: dict[str, str] | None = None):
        self.status, self.headers = status, headers
        self.body = {"error": f"{field}: {msg}", "detail": [{"loc": ["body"], "field": field, "msg": msg, "type": kind}]}


async def _refused(_request: Request, exc: FeedbackRefused) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


class TokenBuckets:
    """A token bucket per client address: `rate` tokens a second, at most `burst` held. Hand-written: a dict of two
    floats per client is all it takes, and the server is one process (a shared limiter would need a shared store)."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, float(burst)
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str, now: float | None = None) -> float:
        """0 when the client may write now (a token is taken), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate
        self.buckets[client] = (tokens - 1, now)
        if len(self.buckets) > _MAX_CLIENTS:
            for key, _ in sorted(self.buckets.items(), key=lambda kv: -kv[1][0])[: _MAX_CLIENTS // 10]:
                del self.buckets[key]
        return 0.0


class GroupWriter:
    """Appends rows to the feedback log on one thread, each commit taking every row that waited for it."""

    def __init__(self, log: FeedbackLog):
        self.log = log
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdup-feedback")
        self.pending: list[tuple[dict[str, Any], asyncio.Future]] = []
        self.flushing: asyncio.Task | None = None

    async def write(self, row: dict[str, Any]) -> int:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((row, future))
        if self.flushing is None:
            self.flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                group, self.pending = self.pending[:_MAX_GROUP], self.pending[_MAX_GROUP:]
                try:
                    ids = await loop.run_in_executor(self.executor, self.log.append, [row for row, _ in group])
                except Exception as exc:  # every waiting request answers with it (503); nothing of the group was stored
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), row_id in zip(group, ids, strict=True):
                    if not future.done():  # a client that left: its row is stored all the same
                        future.set_result(row_id)
        finally:
            self.flushing = None

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class LiveAgreement:
    """The served decision's agreement with the labels received for a version since its promotion (the latest
    LIVE_MAX_ROWS of them), recomputed only when new rows arrived (shown by /v1/model)."""

    def __init__(self, log: FeedbackLog):
        self.log = log
        self.cached: dict[str, tuple[int, dict[str, Any]]] = {}

    async def block(self, served: Any, batcher: Any) -> dict[str, Any]:
        since = await run_in_threadpool(promoted_at, self.log.store, served.version)
        frame = await run_in_threadpool(self.log.frame, since, served.version)
        last = int(frame["id"].max()) if len(frame) else 0
        hit = self.cached.get(served.version)
        if hit is not None and hit[0] == last:
            return hit[1]
        counts = {label: int((frame["label"] == label).sum()) for label in LABELS}
        frame = frame.tail(LIVE_MAX_ROWS).reset_index(drop=True)
        out: dict[str, Any] = {"since": since, "counts": counts, "agreement": agreement(frame, []) if not len(frame) else None}
        if len(frame):
            q1, q2 = frame["question1"].tolist(), frame["question2"].tolist()
            sims, rr = await batcher.decide(served, q1, q2)
            reranker = served.predictor.reranker
            duplicate = reranker.decide(rr) if reranker is not None and rr is not None else np.asarray(sims) >= served.threshold
            out["agreement"] = await run_in_threadpool(agreement, frame, duplicate)
        self.cached[served.version] = (last, out)
        return out


async def feedback_facts(app: FastAPI, served: Any, request: Request) -> dict[str, Any]:
    """/v1/model's `feedback`: whether writes need a token, and the served version's labels and agreement with them
    (for a request allowed to read feedback)."""
    facts: dict[str, Any] = {"token_required": app.state.cfg.feedback_token is not None}
    try:
        await app.state.feedback["may_read"](request)
    except FeedbackRefused:
        return facts | {"hidden": "feedback reads need the feedback token on this server"}
    if served is not None:
        try:
            facts |= await app.state.feedback["live"].block(served, app.state.batcher)
        except Exception as exc:  # the registry is unreadable right now; the model still answers
            facts["error"] = f"{type(exc).__name__}: {exc}"
    return facts


def install_feedback(app: FastAPI, cfg: ServeConfig, follower: Any, batcher: Any, question_type: Any) -> None:
    """Add the feedback routes to `app`; `question_type` is the API's question field (its limits and checks)."""
    log = FeedbackLog(follower.store)
    writer = GroupWriter(log)
    buckets = TokenBuckets(cfg.feedback_rate_per_s, cfg.feedback_burst)
    live = LiveAgreement(log)
    known: set[str] = set()
    token = cfg.feedback_token.get_secret_value().encode() if cfg.feedback_token is not None else None
    app.state.feedback = {"log": log, "writer": writer, "live": live}  # may_read joins below
    app.add_exception_handler(FeedbackRefused, _refused)

    def check_token(request: Request) -> None:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token or b""):
            raise FeedbackRefused(401, "authorization", "feedback needs `Authorization: Bearer <token>` with the server's "
                                  "feedback token", "unauthorized", {"WWW-Authenticate": "Bearer"})

    async def may_write(request: Request) -> None:
        if token is not None:
            check_token(request)
        client = request.client.host if request.client else "-"
        wait = buckets.take(client)
        if wait > 0:
            raise FeedbackRefused(429, "client", f"over {cfg.feedback_rate_per_s:g} feedback writes a second; retry in "
                                  f"{wait:.1f} s", "rate_limited", {"Retry-After": str(max(1, round(wait)))})

    async def may_read(request: Request) -> None:
        if token is not None and not cfg.feedback_public_reads:
            check_token(request)

    app.state.feedback["may_read"] = may_read

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        question1: question_type
        question2: question_type
        label: Literal["duplicate", "not_duplicate"] = Field(description="the person's judgement of the pair")
        version: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)] = Field(
            description="the served version whose answer the person judged (a version of the store)")
        source: Literal["page", "api"] = Field(default="api", description="where the judgement was made")
        note: Annotated[str, StringConstraints(strict=True, max_length=cfg.max_note_chars)] | None = None

    async def known_version(version: str) -> bool:
        if version not in known:
            known.update(await run_in_threadpool(follower.store.versions))
        return version in known

    class Recorded(BaseModel):
        id: int = Field(description="the row's id in the store's feedback table")
        recorded: dict[str, Any] = Field(description="what was stored: the request's fields and pair_sha256")

    class Counts(BaseModel):
        counts: dict[str, dict[str, int]] = Field(description="rows by version, then by label")
        total: int

    @app.post("/v1/feedback", status_code=201, dependencies=[Depends(may_write)], response_model=Recorded, responses=REFUSALS,
              summary="Record a person's judgement of a pair (duplicate or not) against the served version")
    async def feedback(body: FeedbackRequest):
        if not await known_version(body.version):
            raise FeedbackRefused(422, "version", f"no version {body.version!r} in the store", "unknown_version")
        row = body.model_dump()
        row["pair_sha256"] = pair_sha256(body.question1, body.question2)
        try:
            row_id = await writer.write(row)
        except StoreError as exc:
            return JSONResponse({"error": f"feedback not stored: {exc}"}, status_code=503)
        return {"id": row_id, "recorded": row}

    # The schema names the versions a request may judge (the store's, when the schema is asked for): a client, or a
    # fuzzer, reads from it which values are valid, rather than learning it from 422s.
    plain_openapi = app.openapi

    def openapi_with_versions() -> dict[str, Any]:
        schema = copy.deepcopy(plain_openapi())
        versions = follower.store.versions()
        if versions:
            schema["components"]["schemas"]["FeedbackRequest"]["properties"]["version"]["enum"] = versions
        return schema

    app.openapi = openapi_with_versions

    @app.get("/v1/feedback/stats", dependencies=[Depends(may_read)], response_model=Counts,
             responses={k: v for k, v in REFUSALS.items() if k in (401, 503)}, summary="Feedback rows by version and label")
    async def stats():
        counts = await run_in_threadpool(log.counts)
        return {"counts": counts, "total": sum(sum(c.values()) for c in counts.values())}
