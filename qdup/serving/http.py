"""The HTTP API and web page of `qdup serve-model`: similarity, search, model facts, health, readiness."""

# No `from __future__ import annotations`: the endpoints' body types are local to create_app, and
# FastAPI must see them as objects, not as names it would look up in this module.
import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StringConstraints, Tag, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qdup.registry.store import ArtifactStore
from qdup.serving.batcher import MicroBatcher, SearchBatcher
from qdup.serving.cache import EncodingCache
from qdup.serving.feedback_api import feedback_facts, install_feedback
from qdup.serving.follower import FollowerState, ModelFollower
from qdup.serving.metrics import RequestMetrics, ServerMetrics
from qdup.serving.settings import ServeConfig
from qdup.serving.threads import serving_threads, set_faiss_threads

STATIC_DIR = Path(str(resources.files("qdup.serving") / "static"))
# Tags of the request forms (one pair or a batch; one question or several); not field names, so
# they are left out of the field path that errors name.
_FORM_TAGS = {"one_pair_form", "pairs_form", "one_question_form", "questions_form"}


def _error_body(field: str, msg: str, kind: str) -> dict[str, Any]:
    return {"error": f"{field}: {msg}", "detail": [{"loc": ["body"], "field": field, "msg": msg, "type": kind}]}


class BodyLimit:
    """Refuse a request body over `limit` bytes before anything parses it: by Content-Length, and while streaming."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(_error_body("body", f"request body is over {self.limit:,} bytes", "too_large"), status_code=413)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await too_large(scope, receive, send)
                    return
        received = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            # Over the limit mid-stream: answer 413 ourselves and tell the app the client left,
            # so that nothing parses the body and nothing the app says afterwards is sent.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p != "body" and p not in _FORM_TAGS]
    return ".".join(parts) or "body"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each offending field (dotted path), without echoing the input back."""
    details = []
    for e in exc.errors():
        loc = e.get("loc", ())
        field = "body" if e.get("type") == "json_invalid" else _field_path(loc)
        details.append({"loc": list(loc), "field": field, "msg": e.get("msg"), "type": e.get("type")})
    first = details[0] if details else {"field": "body", "msg": "invalid request"}
    return JSONResponse({"error": f"{first['field']}: {first['msg']}", "detail": details}, status_code=422)


class Utf8JsonRoute(APIRoute):
    """A route whose JSON body must be UTF-8 (RFC 8259): any other bytes are invalid JSON, 422 like the rest.

    FastAPI would answer 400, a status the API does not document, for a body that does not decode.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method == "POST":
                body = await request.body()  # kept by the request: the handler parses the same bytes
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    error = {"type": "json_invalid", "loc": ("body", exc.start), "msg": "JSON body is not valid UTF-8", "input": {}}
                    raise RequestValidationError([error]) from None
            return await handler(request)

        return checked


def _json_media_type(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


class DirectJsonRoute:
    """One POST route answered without FastAPI's routing, dependency solving and request objects, for bodies that
    validate: they were half of the event loop's time per one-pair request under 32 clients (py-spy), the model
    call a small part. The body is validated by the route's own pydantic model from the raw bytes (pydantic's JSON
    parser); a body that does not validate, or is not `application/json`, goes on to FastAPI unchanged (its bytes
    replayed), so that errors, 422s and the OpenAPI schema stay FastAPI's. `answer` is the endpoint's own function.
    """

    def __init__(self, app: ASGIApp, path: str, body_type: Any, answer: Callable[[Any], Coroutine[Any, Any, Response]]):
        self.app, self.path, self.answer = app, path, answer
        self.adapter = TypeAdapter(body_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST"
                or not _json_media_type(scope["headers"])):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left (or the body limit answered): nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            parsed = self.adapter.validate_json(body)
        except ValidationError:
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        response = await self.answer(parsed)
        await response(scope, receive, send)


def _whole_number(value: Any) -> Any:
    """A JSON number with no fraction (5.0) is an integer to JSON Schema: take it as one; 5.5, true and "5" stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The characters str.isspace() calls whitespace (those _not_blank strips), as a class that Python's, ECMAScript's
# and Rust's regular expressions read alike (their \s differ on a few control characters).
SPACE_CLASS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK_PATTERN = f"[^{SPACE_CLASS}]"


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or whitespace-only")
    return value


def _form(many_key: str) -> Discriminator:
    """Choose the request form by the key present: a body is validated against one form only, and
    its errors name that form's fields (not every branch of a union)."""

    def tag(value: Any) -> str | None:
        if not isinstance(value, dict):
            return None
        return f"{many_key}_form" if many_key in value else f"one_{many_key.removesuffix('s')}_form"

    return Discriminator(tag)


def request_models(cfg: ServeConfig) -> dict[str, Any]:
    """The request and response models, with this configuration's limits in them (and in /docs)."""
    Question = Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=cfg.max_question_chars),
        AfterValidator(_not_blank),
        # The pattern tells the schema's readers (and fuzzers) what _not_blank checks: some character that is not whitespace.
        Field(description=f"a question: a non-blank string of at most {cfg.max_question_chars:,} characters",
              json_schema_extra={"pattern": NOT_BLANK_PATTERN}),
    ]
    strict = ConfigDict(extra="forbid")

    class PairRequest(BaseModel):
        model_config = strict
        question1: Question
        question2: Question

    class Pair(BaseModel):
        model_config = strict
        question1: Question
        question2: Question

    class PairsRequest(BaseModel):
        model_config = strict
        pairs: list[Pair] = Field(min_length=1, max_length=cfg.max_batch_pairs)

    K = Annotated[int, Field(ge=1, le=cfg.max_k, strict=True), BeforeValidator(_whole_number)]
    default_k = min(10, cfg.max_k)  # a default the schema's own bounds allow

    class QuestionRequest(BaseModel):
        model_config = strict
        question: Question
        k: K = default_k

    class QuestionsRequest(BaseModel):
        model_config = strict
        questions: list[Question] = Field(min_length=1, max_length=cfg.max_search_queries)
        k: K = default_k

    SimilarityBody = Annotated[
        Annotated[PairRequest, Tag("one_pair_form")] | Annotated[PairsRequest, Tag("pairs_form")], _form("pairs")
    ]
    SearchBody = Annotated[
        Annotated[QuestionRequest, Tag("one_question_form")] | Annotated[QuestionsRequest, Tag("questions_form")],
        _form("questions"),
    ]
    return {
        "SimilarityBody": SimilarityBody,
        "SearchBody": SearchBody,
        "PairsRequest": PairsRequest,
        "QuestionsRequest": QuestionsRequest,
        "Question": Question,
    }


class Score(BaseModel):
    similarity: float = Field(description="cosine of the two questions' encodings, in [-1, 1]")
    reranker_score: float | None = Field(default=None, description="the pair reranker's duplicate probability (versions with one)")
    duplicate: bool = Field(description="reranker_score >= reranker_threshold with a reranker, else similarity >= threshold")


class SimilarityAnswer(Score):
    version: str
    threshold: float
    reranker_threshold: float | None = None


class PairsAnswer(BaseModel):
    version: str
    threshold: float
    reranker_threshold: float | None = None
    results: list[Score]


SCORE_KIND_HELP = ("what `score` is: cosine (dense ranking), bm25 (lexical), rrf or weighted (hybrid fusion of the two), "
                   "reranker (the pair reranker's probability)")


class HitOut(BaseModel):
    id: str | int
    question: str
    score: float = Field(description="the score that ranked the hits: results are in descending order of it")
    score_kind: str = Field(description=SCORE_KIND_HELP)
    similarity: float = Field(description="the encoder cosine of the query and this question, in [-1, 1] (not the ranking score "
                                          "unless score_kind is cosine)")
    reranker_score: float | None = Field(default=None, description="the pair reranker's duplicate probability (versions with one)")
    duplicate: bool = Field(description="reranker_score >= the reranker's threshold with a reranker, else similarity >= the "
                                        "version's threshold (duplicate_by, duplicate_threshold)")


class SearchAnswer(BaseModel):
    version: str
    method: str = Field(description="the ranking: dense, lexical, hybrid or reranked (the version's choice)")
    score_kind: str = Field(description=SCORE_KIND_HELP)
    duplicate_by: str = Field(description="the field a hit's duplicate mark compares: reranker_score or similarity")
    duplicate_threshold: float
    results: list[HitOut]


class SearchManyAnswer(BaseModel):
    version: str
    method: str
    score_kind: str
    duplicate_by: str
    duplicate_threshold: float
    results: list[list[HitOut]]


class Problem(BaseModel):
    error: str
    version: str | None = None


def no_index_message(version: str) -> str:
    return f"no question index for version {version}; build one with `qdup index build --model {version}`"


def _no_model(follower: ModelFollower) -> JSONResponse:
    reason = follower.last_error["error"] if follower.last_error else "still loading"
    return JSONResponse({"error": f"no model is loaded for {follower.ref!r}: {reason}", "version": None}, status_code=503)


def create_app(cfg: ServeConfig, follower: ModelFollower | None = None, direct_routes: bool = True) -> FastAPI:
    """The ASGI app. Without a follower, one is made for cfg.model and loads in the background at startup.

    `direct_routes=False` leaves every request to FastAPI's routing (the tests compare the two).
    """
    follower = follower or ModelFollower(ArtifactStore(cfg.store), cfg.model, cfg.poll_s, probe_attempts=cfg.probe_attempts)
    cache = EncodingCache(int(cfg.encoding_cache_mb * 2**20))
    metrics = ServerMetrics(follower, cache)
    batcher = MicroBatcher(cfg.batch_wait_ms, cfg.max_microbatch_pairs, cache=cache, observe=metrics.observe_batch)
    # Search on a thread of its own: a slow search never holds up the micro-batches on the model thread.
    search_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdup-search", initializer=set_faiss_threads,
                                         initargs=(cfg.faiss_threads,))
    searches = SearchBatcher(search_executor, cfg.max_search_queries)
    models = request_models(cfg)
    SimilarityBody, SearchBody = models["SimilarityBody"], models["SearchBody"]
    PairsRequest, QuestionsRequest = models["PairsRequest"], models["QuestionsRequest"]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        await searches.start()
        # The pools in effect as the server starts (read once: reading them scans the loaded libraries), on
        # the search thread: faiss's OpenMP setting is per thread and faiss runs there.
        app.state.threads = await asyncio.get_running_loop().run_in_executor(search_executor, serving_threads)
        follower.start()
        try:
            yield
        finally:
            follower.stop()
            await batcher.stop()
            await searches.stop()
            search_executor.shutdown(wait=True)
            app.state.feedback["writer"].close()

    app = FastAPI(
        title="qdup",
        summary="Is this question a duplicate? Answered by the store's current version of the model.",
        version="1",
        lifespan=lifespan,
    )
    app.state.cfg = cfg
    app.state.follower = follower
    app.state.batcher = batcher
    app.state.cache = cache
    app.state.metrics = metrics
    app.state.threads = None
    app.router.route_class = Utf8JsonRoute
    app.add_exception_handler(RequestValidationError, _validation_error)
    if direct_routes:
        # Inside the body limit and the metrics (added after it), so that their answers and counts are the same.
        app.add_middleware(DirectJsonRoute, path="/v1/similarity", body_type=SimilarityBody, answer=lambda body: similarity_answer(body))
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    # Added last, so outermost: answers of the body limit are counted and timed too.
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.post(
        "/v1/similarity",
        response_model=SimilarityAnswer | PairsAnswer,
        responses={422: {"model": Problem}, 413: {"model": Problem}, 503: {"model": Problem}},
        summary="Similarity and duplicate decision for one pair, or a batch of pairs",
    )
    async def similarity(body: SimilarityBody):
        return await similarity_answer(body)

    async def similarity_answer(body: Any) -> Response:
        served = follower.current  # this request finishes on this version, whatever switches meanwhile
        if served is None:
            return _no_model(follower)
        if isinstance(body, PairsRequest):
            q1 = [p.question1 for p in body.pairs]
            q2 = [p.question2 for p in body.pairs]
        else:
            q1, q2 = [body.question1], [body.question2]
        # A version with a pair reranker decides by it: its scores come from the same model call, on the model thread.
        sims, rr = await batcher.decide(served, q1, q2)
        # Plain dicts straight to JSON: re-validating a thousand results against the response
        # model would cost more than computing them (the model still documents the answer in /docs).
        threshold = served.threshold
        head: dict[str, Any] = {"version": served.version, "threshold": threshold}
        reranker = served.predictor.reranker
        if reranker is None or rr is None:
            scores = [{"similarity": s, "duplicate": s >= threshold} for s in sims.tolist()]
        else:
            head["reranker_threshold"] = reranker.threshold
            scores = [{"similarity": s, "reranker_score": r, "duplicate": r >= reranker.threshold}
                      for s, r in zip(sims.tolist(), rr.tolist(), strict=True)]
        if isinstance(body, PairsRequest):
            return JSONResponse({**head, "results": scores})
        return JSONResponse({**head, **scores[0]})

    @app.post(
        "/v1/search",
        response_model=SearchAnswer | SearchManyAnswer,
        responses={422: {"model": Problem}, 413: {"model": Problem}, 501: {"model": Problem}, 503: {"model": Problem}},
        summary="The indexed questions most similar to a question (or to each of several)",
    )
    async def search(body: SearchBody):
        served = follower.current
        if served is None:
            return _no_model(follower)
        if served.searcher is None:
            return JSONResponse({"error": no_index_message(served.version), "version": served.version}, status_code=501)
        many = isinstance(body, QuestionsRequest)
        queries = body.questions if many else [body.question]
        hits = await searches.search(served, queries, body.k)
        head = {"version": served.version, **served.searcher.describe()}
        if many:
            return SearchManyAnswer(**head, results=hits)
        return SearchAnswer(**head, results=hits[0])

    @app.get("/v1/model", summary="The served version: id, aliases, threshold, test metrics, dataset, switches")
    async def model(request: Request) -> dict[str, Any]:
        # One snapshot: the version and its error (or none) as the follower published them together.
        state = follower.state
        facts = await run_in_threadpool(model_facts, follower, state, batcher, cfg, app.state.threads)
        return facts | {"feedback": await feedback_facts(app, state.current, request)}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        # Prometheus' text format; not in the OpenAPI schema: it is for the scraper, not for API clients.
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, Any]:
        served = follower.current
        return {"status": "ok", "version": served.version if served else None}

    @app.get("/readyz", summary="A model is loaded and answers a probe pair", responses={503: {"model": Problem}})
    async def readyz():
        served = follower.current
        if served is None:
            return _no_model(follower)
        try:
            sims = await asyncio.wait_for(
                batcher.similarity(served, ["How do I learn Python?"], ["What is the best way to learn Python?"]),
                cfg.probe_timeout_s,
            )
        except Exception as exc:  # a stuck or failing model thread means not ready, whatever the cause
            problem = {"error": f"probe failed: {type(exc).__name__}: {exc}", "version": served.version}
            return JSONResponse(problem, status_code=503)
        return {"status": "ready", "version": served.version, "probe_similarity": float(sims[0])}

    install_feedback(app, cfg, follower, batcher, models["Question"])

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def model_facts(
    follower: ModelFollower, state: FollowerState, batcher: MicroBatcher, cfg: ServeConfig, threads: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What /v1/model answers from one snapshot of the follower (reads the store's aliases, so it runs off the event loop)."""
    # last_error.kind: "transient" or why the version failed (REFUSAL_KINDS); with `retry_in_s` it will be tried again,
    # else it is refused for good (`refused`).
    served = state.current
    facts: dict[str, Any] = {"ref": follower.ref, "version": None, "last_error": state.last_error, "refused": dict(state.refused)}
    if served is not None:
        manifest = served.manifest
        try:
            aliases = follower.store.aliases_of(served.version)
        except Exception as exc:  # the store is unreadable right now; the model still answers
            aliases = None
            facts["aliases_error"] = f"{type(exc).__name__}: {exc}"
        test = (manifest.get("metrics") or {}).get("test")
        facts |= {
            "version": served.version,
            "aliases": aliases,
            "threshold": served.threshold,
            "metrics": {"test": test},
            "dataset_sha256": (manifest.get("dataset") or {}).get("sha256"),
            # A model of generated data must not pass for a model of real questions.
            "dataset_generated_by": "qdup demo-data" if (manifest.get("dataset") or {}).get("generated") else None,
            "created": manifest.get("created"),
            "loaded_at": served.loaded_at,
            "search_index": served.searcher is not None,
        }
    facts["switches"] = list(state.switches[-20:])
    facts["batching"] = batcher.stats.as_dict()
    facts["encoding_cache"] = batcher.cache.stats().as_dict() if batcher.cache is not None else None
    facts["threads"] = threads
    limits = {"max_batch_pairs", "max_search_queries", "max_k", "max_question_chars", "max_body_bytes"}
    facts["limits"] = cfg.model_dump(include=limits)
    facts["batch_wait_ms"] = cfg.batch_wait_ms
    return facts

