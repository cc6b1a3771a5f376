"""Timing statistics of the benchmarks: percentiles, latency summaries, throughput, timed and repeated calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation (numpy's default), with the errors named."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min/max in milliseconds of per-call wall times given in seconds."""
    ms = [1000.0 * s for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }


def short_latency(walls: Sequence[float]) -> dict[str, float]:
    """p50 and p99 (ms, 3 decimals) and calls per second of per-call wall times in seconds."""
    lat = latency_summary(walls)
    return {"p50_ms": round(lat["p50_ms"], 3), "p99_ms": round(lat["p99_ms"], 3), "calls_per_s": round(len(walls) / sum(walls), 1)}


def throughput(items: float, seconds: float) -> float | None:
    """Items per second, or None when no time was measured."""
    return items / seconds if seconds and seconds > 0 else None


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """fn's result and its wall seconds (3 decimals)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t0, 3)


def call_latencies(call: Callable[[Any], Any], payloads: Sequence[Any], warmup: int = 0) -> list[float]:
    """Wall seconds of call(p) for each payload after the first `warmup` ones (called, not timed)."""
    for p in payloads[:warmup]:
        call(p)
    times = []
    for p in payloads[warmup:]:
        t0 = time.perf_counter()
        call(p)
        times.append(time.perf_counter() - t0)
    return times


def interleaved_latencies(calls: dict[str, Callable[[Any], Any]], payloads: Sequence[Any], warmup: int = 0) -> dict[str, list[float]]:
    """Wall seconds of each named call on each payload after the first `warmup`, the calls taken in turn on every
    payload (their order rotating from one payload to the next), so that a change in the machine's load reaches each
    call alike: the way to compare two calls' latencies on a machine that is not quiet."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, p in enumerate(payloads):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter()
            calls[name](p)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` timed calls (seconds): the figure least inflated by other load."""
    return min(timed(fn)[1] for _ in range(repeats))


def mean_call_us(fn: Callable[[Any], Any], x: Any, min_calls: int = 20, work: int = 2000) -> float:
    """Mean microseconds of one call on `x`, over enough calls (at least `min_calls`, about `work` rows) to time."""
    calls = max(min_calls, work // len(x))
    t = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - t) / calls * 1e6


def timed_calls(call: Callable[[Any], Any], payloads: Sequence[Any], seconds: float, min_calls: int = 3) -> dict[str, Any]:
    """Call on the payloads in turn for `seconds` (at least min_calls, one untimed first): wall and CPU per call, and
    what each call returned (`returned`: e.g. the seconds of a part of it)."""
    call(payloads[0])
    walls, cpus, returned, i = [], [], [], 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end or len(walls) < min_calls:
        payload = payloads[i % len(payloads)]
        i += 1
        w0, c0 = time.perf_counter(), time.process_time()
        returned.append(call(payload))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"calls": len(walls), **short_latency(walls), "cpu_s": round(sum(cpus), 2), "wall_s": round(sum(walls), 2),
            "returned": returned}
