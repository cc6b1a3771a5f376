"""Micro-batching: concurrent requests share one model call, run off the event loop in one worker thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from qdup.serving.cache import EncodingCache, cached_cosines
from qdup.serving.follower import ServedModel

T = TypeVar("T")


@dataclass
class _Item:
    served: ServedModel
    q1: list[str]
    q2: list[str]
    future: asyncio.Future
    arrived: float
    rerank: bool = False


@dataclass
class BatchStats:
    """What the batcher did: model calls, requests and pairs, and how many requests shared a call."""

    calls: int = 0
    requests: int = 0
    pairs: int = 0
    max_requests_per_call: int = 0
    requests_per_call: Counter = field(default_factory=Counter)

    def record(self, requests: int, pairs: int) -> None:
        self.calls += 1
        self.requests += requests
        self.pairs += pairs
        self.max_requests_per_call = max(self.max_requests_per_call, requests)
        self.requests_per_call[requests] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_calls": self.calls,
            "requests": self.requests,
            "pairs": self.pairs,
            "mean_requests_per_call": round(self.requests / self.calls, 3) if self.calls else None,
            "max_requests_per_call": self.max_requests_per_call,
            "requests_per_call": {str(k): v for k, v in sorted(self.requests_per_call.items())},
        }


async def stop_collector(task: asyncio.Task | None, queue: asyncio.Queue | None) -> None:
    """Cancel a batcher's collector task, then fail what is still queued (each item has a `future`): shutting down."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    while queue is not None and not queue.empty():
        item = queue.get_nowait()
        if not item.future.done():
            item.future.set_exception(RuntimeError("the server is shutting down"))


class MicroBatcher:
    """Queue pair requests; one collector gathers them for up to `wait_ms` (or `max_pairs` pairs) into one call.

    The model runs in a single worker thread, so the event loop keeps accepting requests while
    it computes; requests that queue up meanwhile form the next call. Requests are grouped by
    the ServedModel they started with, so each is answered by the version it names.
    """

    def __init__(
        self, wait_ms: float = 2.0, max_pairs: int = 1024, cache: EncodingCache | None = None,
        observe: Callable[[int, int], None] | None = None,
    ):
        self.wait_s = wait_ms / 1000.0
        self.max_pairs = max_pairs
        self.stats = BatchStats()
        # Question encodings kept across calls (per version); None or disabled: Predictor.similarity as it is.
        self.cache = cache
        # Told (requests, pairs) of every model call: the server's metrics.
        self.observe = observe
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdup-model")
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._collect(), name="qdup-batcher")

    async def stop(self) -> None:
        await stop_collector(self._task, self._queue)
        self._task = None
        self.executor.shutdown(wait=True)

    async def similarity(self, served: ServedModel, q1: list[str], q2: list[str]) -> np.ndarray:
        """Similarities of the pairs, computed by `served` together with whatever else is queued."""
        sims, _ = await self._submit(served, q1, q2, rerank=False)
        return sims

    async def decide(self, served: ServedModel, q1: list[str], q2: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Similarities and, for a version with a pair reranker, its scores: both in the one model call."""
        return await self._submit(served, q1, q2, rerank=served.predictor.reranker is not None)

    async def _submit(self, served: ServedModel, q1: list[str], q2: list[str], rerank: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        loop = asyncio.get_running_loop()
        item = _Item(served, q1, q2, loop.create_future(), loop.time(), rerank)
        self._queue.put_nowait(item)
        return await item.future

    def _model_call(self, served: ServedModel, items: list[_Item]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """One call for a version's share of a micro-batch (on the model thread): cosines, then reranker scores."""
        q1 = [q for it in items for q in it.q1]
        q2 = [q for it in items for q in it.q2]
        predictor = served.predictor
        if self.cache is not None and self.cache.enabled:
            sims = cached_cosines(self.cache, served.version, predictor.encode, q1, q2)
        else:
            sims = predictor.similarity(q1, q2)
        # The reranker scores the pairs of the requests that decide by it, in one call for all of them.
        scores: np.ndarray | None = None
        wanted = [i for i, it in enumerate(items) if it.rerank]
        bounds = np.cumsum([0] + [len(it.q1) for it in items])
        if wanted and predictor.reranker is not None:
            rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in wanted])
            scores = np.full(len(q1), np.nan)
            scores[rows] = predictor.reranker.score([q1[r] for r in rows], [q2[r] for r in rows], sims[rows])
        return [(sims[bounds[i]:bounds[i + 1]], None if scores is None or not it.rerank else scores[bounds[i]:bounds[i + 1]])
                for i, it in enumerate(items)]

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run another computation on the model thread, in turn with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            first = await queue.get()
            batch = [first]
            pairs = len(first.q1)
            # Wait from the first request's arrival: one that queued during the previous call has
            # already waited, so a busy server dispatches at once with everything queued.
            deadline = first.arrived + self.wait_s
            while pairs < self.max_pairs:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                batch.append(item)
                pairs += len(item.q1)
            await self._run_batch(loop, batch)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        groups: dict[int, list[_Item]] = {}
        for item in batch:
            groups.setdefault(id(item.served), []).append(item)
        for items in groups.values():
            items = [it for it in items if not it.future.done()]  # the client went away
            if not items:
                continue
            try:
                answers = await loop.run_in_executor(self.executor, self._model_call, items[0].served, items)
            except Exception as exc:
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            pairs = sum(len(it.q1) for it in items)
            self.stats.record(len(items), pairs)
            if self.observe is not None:
                self.observe(len(items), pairs)
            for it, answer in zip(items, answers, strict=True):
                if not it.future.done():
                    it.future.set_result(answer)


@dataclass
class _Search:
    served: ServedModel
    queries: list[str]
    k: int
    future: asyncio.Future


class SearchBatcher:
    """Searches that arrive together share one call on the search thread: one encoder call and one matrix product
    for all their queries instead of one per request. Requests are grouped by version and k (a hit list depends on
    both), each answered with its own queries' hits."""

    def __init__(self, executor: ThreadPoolExecutor, max_queries: int = 64):
        self.executor = executor
        self.max_queries = max_queries
        self.calls = 0
        self.requests = 0
        self._queue: asyncio.Queue[_Search] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._collect(), name="qdup-search-batcher")

    async def stop(self) -> None:
        await stop_collector(self._task, self._queue)
        self._task = None

    async def search(self, served: ServedModel, queries: list[str], k: int) -> list[list[dict[str, Any]]]:
        """The hits of each query, searched by `served`'s index together with whatever else is queued."""
        if self._queue is None:
            raise RuntimeError("the search batcher is not started")
        item = _Search(served, queries, k, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(item)
        return await item.future

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            # No waiting for company: what queued while the previous call ran goes into the next one.
            batch = [await queue.get()]
            count = len(batch[0].queries)
            while count < self.max_queries and not queue.empty():
                batch.append(queue.get_nowait())
                count += len(batch[-1].queries)
            groups: dict[tuple[int, int], list[_Search]] = {}
            for item in batch:
                groups.setdefault((id(item.served), item.k), []).append(item)
            for items in groups.values():
                items = [it for it in items if not it.future.done()]
                if not items:
                    continue
                queries = [q for it in items for q in it.queries]
                try:
                    hits = await loop.run_in_executor(self.executor, items[0].served.searcher.search, queries, items[0].k)
                except Exception as exc:
                    for it in items:
                        if not it.future.done():
                            it.future.set_exception(exc)
                    continue
                self.calls += 1
                self.requests += len(items)
                start = 0
                for it in items:
                    if not it.future.done():
                        it.future.set_result(hits[start : start + len(it.queries)])
                    start += len(it.queries)
