"""The load generator side of `bench.load`: request body files, wrk command lines, and wrk's results parsed."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The wrk script: rotates bodies, counts statuses and answer versions, prints one JSON line (rotate.lua's header).
LUA_SCRIPT = Path(__file__).with_name("rotate.lua")
RESULT_MARKER = "QDUP_WRK_JSON "
INSTALL_HINT = "apt-get update && apt-get install -y wrk"


class WrkError(RuntimeError):
    """wrk did not run, or its output held no result line."""


def find_wrk() -> str:
    """The wrk executable, or one clear line saying how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(f"bench.load needs wrk (a C HTTP load generator) on PATH: {INSTALL_HINT}")
    return found


def wrk_version(exe: str) -> str:
    """wrk's first output line (`wrk debian/4.1.0-3 [epoll] ...`); wrk -v exits 1 by design."""
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"


# ---------------------------------------------------------------- request bodies


def question_stream(questions: Sequence[str], seed: int):
    """Questions in a seeded shuffled order, reshuffled after each pass: no question repeats before the pool is used up."""
    if not questions:
        raise ValueError("no questions to send")
    rng = random.Random(seed)
    order = list(questions)
    while True:
        rng.shuffle(order)
        yield from order


def pair_batches(questions: Sequence[str], pairs_per_request: int, requests: int, seed: int) -> list[list[tuple[str, str]]]:
    """`requests` lists of `pairs_per_request` (question1, question2) pairs, drawn from the pool without early repeats."""
    if pairs_per_request < 1 or requests < 1:
        raise ValueError("pairs_per_request and requests must be >= 1")
    stream = question_stream(questions, seed)
    return [[(next(stream), next(stream)) for _ in range(pairs_per_request)] for _ in range(requests)]


def search_queries(questions: Sequence[str], requests: int, seed: int) -> list[str]:
    stream = question_stream(questions, seed)
    return [next(stream) for _ in range(requests)]


def similarity_body(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The /v1/similarity body: the one-pair form for a single pair, else the batch form."""
    if len(pairs) == 1:
        return {"question1": pairs[0][0], "question2": pairs[0][1]}
    return {"pairs": [{"question1": a, "question2": b} for a, b in pairs]}


def search_body(question: str, k: int) -> dict[str, Any]:
    return {"question": question, "k": k}


def write_bodies(path: Path, bodies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One JSON body per line (json.dumps escapes newlines, so a line is a whole body), as rotate.lua reads them."""
    if not bodies:
        raise ValueError("no request bodies")
    sizes = []
    with open(path, "w", encoding="utf-8") as f:
        for body in bodies:
            line = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
            sizes.append(len(line.encode("utf-8")))
            f.write(line + "\n")
    return {"path": str(path), "bodies": len(bodies), "mean_bytes": round(sum(sizes) / len(sizes), 1), "max_bytes": max(sizes)}


# ---------------------------------------------------------------- running wrk


def wrk_command(exe: str, url: str, route: str, bodies: Path, *, threads: int, connections: int, seconds: float,
                max_requests: int, timeout_s: float, start: int = 0) -> list[str]:
    """wrk's command line: `connections` keep-alive connections over `threads` threads for `seconds`,
    each thread stopping after its share of `max_requests` answers, sending the bodies from `start` on (rotate.lua)."""
    if connections < 1 or threads < 1 or seconds <= 0 or max_requests < 1:
        raise ValueError("connections, threads and max_requests must be >= 1 and seconds > 0")
    threads = min(threads, connections)  # wrk refuses fewer connections than threads
    per_thread = max(1, math.ceil(max_requests / threads))
    return [exe, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--timeout", f"{max(1, round(timeout_s))}s", "-s", str(LUA_SCRIPT), url,
            "--", str(bodies), route, str(per_thread), str(start), str(threads)]


def parse_wrk_output(text: str) -> dict[str, Any]:
    """The JSON line rotate.lua's done() prints (the last one, should wrk print more)."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        tail = " | ".join(text.strip().splitlines()[-5:])
        raise WrkError(f"no {RESULT_MARKER.strip()} line in wrk's output (is rotate.lua in use?): {tail}")
    return json.loads(lines[-1][len(RESULT_MARKER):])


def _sum_counts(dicts: Sequence[dict[str, int] | list | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        # An empty Lua table is written as {} whether it was a list or a map; a list here is always empty.
        for k, v in (d or {}).items() if isinstance(d, dict) else ():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def summarise(raw: dict[str, Any], items_per_request: int) -> dict[str, Any]:
    """Figures of one wrk run: answers by status, failures, answers/s and items/s over the active window, latency in ms."""
    threads = raw.get("threads") or []
    statuses = _sum_counts([t.get("statuses") for t in threads])
    versions = _sum_counts([t.get("versions") for t in threads])
    answered = sum(statuses.values())
    ok = sum(n for s, n in statuses.items() if 200 <= int(s) < 300)
    errors = {k: int(v) for k, v in (raw.get("errors") or {}).items()}
    # wrk counts a non-2xx/3xx answer as a `status` error too; socket-level failures are the others.
    socket_errors = sum(v for k, v in errors.items() if k != "status")
    starts = [t["first_sent_s"] for t in threads if t.get("first_sent_s")]
    ends = [t["last_answer_s"] for t in threads if t.get("last_answer_s")]
    window = (max(ends) - min(starts)) if starts and ends else None
    lat = raw.get("latency_us") or {}
    pct = lat.get("percentiles") or {}

    def ms(us: Any) -> float | None:
        return None if us is None else round(float(us) / 1000.0, 3)

    return {
        "answered": answered,
        "ok": ok,
        "non_2xx": answered - ok,
        "socket_errors": socket_errors,
        "failed": answered - ok + socket_errors,
        "statuses": statuses,
        "wrk_errors": errors,
        "window_s": None if window is None else round(window, 3),
        "wrk_duration_s": round(raw.get("duration_us", 0) / 1e6, 3),
        "requests_per_s": round(ok / window, 1) if window else None,
        "items_per_s": round(ok * items_per_request / window, 1) if window else None,
        "latency_ms": {"p50": ms(pct.get("50")), "p90": ms(pct.get("90")), "p99": ms(pct.get("99")),
                       "p99.9": ms(pct.get("99.9")), "mean": ms(lat.get("mean")), "max": ms(lat.get("max"))},
        "versions": versions,
        "version_changes_per_thread": [int(t.get("version_changes") or 0) for t in threads],
        "stopped_on_budget": any(bool(t.get("stopped_on_budget")) for t in threads),
        "sent": sum(int(t.get("sent") or 0) for t in threads),
    }
