"""The server's Prometheus metrics (/metrics): requests, latencies, micro-batches, encoding cache, served version."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qdup.serving.cache import EncodingCache
from qdup.serving.follower import ModelFollower

# Paths counted under their own name; anything else (a typo, a scan) under "other", so that a client
# cannot grow the number of series.
ENDPOINTS = ("/v1/similarity", "/v1/search", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/")
# Seconds: a cached one-pair answer (about a millisecond) up to a 1,000-pair batch behind a queue.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PAIR_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
REQUEST_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def endpoint_of(path: str) -> str:
    if path in ENDPOINTS:
        return path
    if path.startswith("/static/"):
        return "/static"
    return "other"


class _StateCollector:
    """Read at each scrape from the objects that hold the state: the cache's counts and the follower's versions."""

    def __init__(self, follower: ModelFollower, cache: EncodingCache | None):
        self.follower, self.cache = follower, cache

    def collect(self) -> Iterable[Metric]:
        served = self.follower.current
        info = InfoMetricFamily("qdup_served_version", "the model version the server answers with", labels=["ref"])
        info.add_metric([self.follower.ref], {"version": served.version if served else ""})
        yield info
        yield CounterMetricFamily("qdup_version_switches", "versions switched to (the first load included)",
                                  value=len(self.follower.switches))
        failed = CounterMetricFamily("qdup_version_load_failures", "versions that failed to load or verify, by kind", labels=["kind"])
        for kind, count in sorted(self.follower.failed_loads.items()):
            failed.add_metric([kind], count)
        yield failed
        if self.cache is not None:
            stats = self.cache.stats()
            yield CounterMetricFamily("qdup_encoding_cache_hits", "distinct questions of a model call found in the cache", value=stats.hits)
            yield CounterMetricFamily("qdup_encoding_cache_misses", "distinct questions of a model call encoded", value=stats.misses)
            yield CounterMetricFamily("qdup_encoding_cache_evictions", "entries dropped for the byte bound", value=stats.evictions)
            yield GaugeMetricFamily("qdup_encoding_cache_entries", "questions held", value=stats.entries)
            yield GaugeMetricFamily("qdup_encoding_cache_bytes", "bytes held (vectors, texts, bookkeeping)", value=stats.bytes)
            yield GaugeMetricFamily("qdup_encoding_cache_max_bytes", "the bound (0: disabled)", value=stats.max_bytes)


class ServerMetrics:
    """One app's metrics in a registry of its own (several apps may live in one process, as in the tests)."""

    def __init__(self, follower: ModelFollower, cache: EncodingCache | None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("qdup_requests", "HTTP requests answered, by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("qdup_request_seconds", "time from a request's arrival to its answer's last byte, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_pairs = Histogram("qdup_microbatch_pairs", "pairs in one model call", buckets=PAIR_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("qdup_microbatch_requests", "requests sharing one model call", buckets=REQUEST_BUCKETS,
                                        registry=self.registry)
        self.registry.register(_StateCollector(follower, cache))

    def observe_batch(self, requests: int, pairs: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_pairs.observe(pairs)


class RequestMetrics:
    """Count every answer and time it, the outermost layer: 413s and 422s are counted like the rest."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, clock: Callable[[], float] = time.perf_counter):
        self.app, self.metrics, self.clock = app, metrics, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.clock()
        status = 500  # what the client gets when the app fails before answering

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            endpoint = endpoint_of(scope.get("path", ""))
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(self.clock() - start)
