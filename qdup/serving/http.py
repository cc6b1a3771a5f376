"""The HTTP API and web page of `qdup serve-model`: similarity, search, model facts, health, readiness."""

# No `from __future__ import annotations`: the endpoints' body types are local to create_app, and
# FastAPI must see them as objects, not as names it would look up in this module.
import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from qdup.registry.store import ArtifactStore
from qdup.serving.batcher import MicroBatcher, SearchBatcher
from qdup.serving.cache import EncodingCache
from qdup.serving.feedback_api import feedback_facts, install_feedback
from qdup.serving.follower import FollowerState, ModelFollower
from qdup.serving.metrics import RequestMetrics, ServerMetrics
from qdup.serving.middleware import BodyLimit, DirectJsonRoute, Utf8JsonRoute, validation_error
from qdup.serving.schemas import PairsAnswer, Problem, SearchAnswer, SearchManyAnswer, SimilarityAnswer, request_models
from qdup.serving.settings import ServeConfig
from qdup.serving.threads import serving_threads, set_faiss_threads

STATIC_DIR = Path(str(resources.files("qdup.serving") / "static"))


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
    app.add_exception_handler(RequestValidationError, validation_error)
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
        head: dict[str, Any] = {"version": served.version, "threshold": threshold, "decided_by": served.predictor.decided_by}
        reranker = served.predictor.reranker
        if reranker is None or rr is None:
            head["decided_by"] = "encoder"
            scores = [{"similarity": s, "duplicate": s >= threshold} for s in sims.tolist()]
        else:
            head["reranker_threshold"] = reranker.threshold
            by_reranker = head["decided_by"] == "reranker"
            scores = [{"similarity": s, "reranker_score": r, "duplicate": r >= reranker.threshold if by_reranker else s >= threshold}
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
            # What serves first: the deciding scorer, its threshold and test figures, the encoder and baseline beside.
            # (None for a version from before it was recorded.)
            "served": manifest.get("served"),
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
