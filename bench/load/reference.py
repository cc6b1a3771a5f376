"""The model alone: what /v1/similarity and /v1/search compute, in the benchmark's own process on the same payloads,
measured before and after each server phase."""

from __future__ import annotations

import time
from typing import Any

from bench.harness.stats import short_latency, timed_calls


def endpoint_similarity(served, q1: list[str], q2: list[str]) -> float:
    """What /v1/similarity computes: the encoder's similarities (`Predictor.similarity`), then the version's pair
    reranker when it has one. Returns the seconds `Predictor.similarity` took (the rest was the reranker's)."""
    t0 = time.perf_counter()
    sims = served.predictor.similarity(q1, q2)
    encoder_s = time.perf_counter() - t0
    reranker = served.predictor.reranker
    if reranker is not None:
        reranker.score(q1, q2, sims)
    return encoder_s


def similarity_reference(served, batches: list[list[tuple[str, str]]], seconds: float) -> dict[str, Any]:
    """/v1/similarity's work on these batches in this process; `encoder`: the `Predictor.similarity` part alone."""
    r = timed_calls(lambda b: endpoint_similarity(served, [a for a, _ in b], [q for _, q in b]), batches, seconds)
    encoder_walls = r.pop("returned")
    pairs = len(batches[0])
    encoder = short_latency(encoder_walls)
    return r | {"pairs_per_call": pairs, "pairs_per_s": round(r["calls_per_s"] * pairs, 1),
                "pairs_per_cpu_s": round(r["calls"] * pairs / r["cpu_s"], 1) if r["cpu_s"] > 0 else None,
                "reranker": served.predictor.reranker is not None,
                "encoder": encoder | {"pairs_per_s": round(encoder["calls_per_s"] * pairs, 1)}}


def search_reference(served, queries: list[str], k: int, seconds: float) -> dict[str, Any]:
    """/v1/search's work (the version's searcher, its default method), one query at a time, in this process."""
    r = timed_calls(lambda q: served.searcher.search([q], k), queries, seconds)
    r.pop("returned")
    return r | {"queries_per_s": r["calls_per_s"]}


MEAN_KEYS = ("p50_ms", "p99_ms", "pairs_per_s", "queries_per_s", "pairs_per_cpu_s")


def both_sides(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The mean of the measurements taken before and after a phase (the encoder part's too), with both kept."""
    def mean(x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
        return {k: round((x[k] + y[k]) / 2, 3) for k in MEAN_KEYS if x.get(k) is not None and y.get(k) is not None}

    out = mean(before, after)
    if "encoder" in before and "encoder" in after:
        out["encoder"] = mean(before["encoder"], after["encoder"])
    if "reranker" in before:
        out["reranker"] = before["reranker"]
    return out | {"before": before, "after": after}
