"""The feedback phases of `python -m bench.load`: POST /v1/feedback writes while similarity load runs beside them.

Two phases on the same server (started with `--feedback-rate 0`: the per-client limit is not what is measured):
`feedback_similarity_alone`, single-pair similarity on --clients connections; then `feedback_writes`, feedback
writes on --feedback-clients connections with the same similarity load run at the same time by a second wrk. Targets:
>= 500 writes/s with p99 <= 50 ms on the store's SQLite registry, while the similarity load keeps >= 90% of its
throughput without writes. Every acknowledged write must be a row of the store afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.load.wrk import pair_batches, summarise, write_bodies

TARGETS = {"writes_per_s": 500.0, "writes_p99_ms": 50.0, "similarity_kept": 0.9}


def feedback_bodies(questions: Sequence[str], version: str, requests: int, seed: int) -> list[dict[str, Any]]:
    """One judgement per body: a pair from the question pool, a seeded label, the version the server serves."""
    rng = random.Random(seed)
    return [{"question1": a, "question2": b, "label": rng.choice(("duplicate", "not_duplicate")), "version": version,
             "source": "api"} for ((a, b),) in pair_batches(questions, 1, requests, seed)]


def feedback_phases(b: Any, store_url: str, version: str, questions: Sequence[str], similarity_bodies: Path) -> dict[str, Any]:
    """Run both phases on `b` (a bench.load.run.Bench; they join b.phases); their outcome (results.json's `feedback`)."""
    from qdup.registry.feedback import FeedbackLog
    from qdup.registry.store import ArtifactStore

    args = b.args
    path = b.work / "bodies" / "feedback.jsonl"
    write_bodies(path, feedback_bodies(questions, version, max(10_000, len(questions) // 2), args.seed + 3))
    rows_before = FeedbackLog(ArtifactStore(store_url)).count()
    alone = b.phase("feedback_similarity_alone", "/v1/similarity", similarity_bodies, args.clients, args.wrk_threads, 1, None)

    def similarity_beside(_wrk, _t0) -> dict[str, Any]:
        raw, _, _ = b.wrk("feedback_similarity_during", "/v1/similarity", similarity_bodies, args.clients, args.wrk_threads,
                          args.duration, b.out / "wrk" / "feedback_similarity_during.txt")
        return {"similarity_during": summarise(raw, 1)}

    writes = b.phase("feedback_writes", "/v1/feedback", path, args.feedback_clients, args.wrk_threads, 1, None,
                     similarity_beside)
    rows = FeedbackLog(ArtifactStore(store_url)).count() - rows_before
    w = writes["server"]
    during = writes["similarity_during"]
    kept = (during["requests_per_s"] / alone["server"]["requests_per_s"]
            if during.get("requests_per_s") and alone["server"].get("requests_per_s") else None)
    summary = {
        "writes_per_s": w["requests_per_s"], "writes_p99_ms": w["latency_ms"]["p99"], "writes_ok": w["ok"],
        "writes_failed": w["failed"], "rows_stored": rows, "acknowledged_all_stored": rows >= w["ok"],
        "similarity_alone_per_s": alone["server"]["requests_per_s"], "similarity_during_per_s": during.get("requests_per_s"),
        "similarity_kept": None if kept is None else round(kept, 3),
    }
    print(f"[feedback] {summary}", flush=True)
    return summary


def feedback_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark's rows of the targets table for the feedback phases (bench.load.report's row shape)."""
    from bench.harness.tables import measured, met_when
    from bench.load.report import figure_row

    fb = results.get("feedback") or {}
    rate, p99, kept = fb.get("writes_per_s"), fb.get("writes_p99_ms"), fb.get("similarity_kept")
    stored = fb.get("acknowledged_all_stored")
    return [
        figure_row("`/v1/feedback` writes (SQLite registry), with similarity load beside", "—", "—",
             f"≥ {TARGETS['writes_per_s']:.0f} writes/s, p99 ≤ {TARGETS['writes_p99_ms']:.0f} ms",
             f"{measured(rate, 'writes/s')}, p99 {measured(p99, 'ms', 2)}; acknowledged rows stored: {stored}",
             met_when(rate is not None and p99 is not None and rate >= TARGETS["writes_per_s"] and p99 <= TARGETS["writes_p99_ms"]
                  and bool(stored), rate, p99), None, ""),
        figure_row("similarity throughput kept during feedback writes", "—", "—", f"≥ {TARGETS['similarity_kept']:.0%}",
             "not measured" if kept is None else f"{kept:.1%} ({fb.get('similarity_during_per_s')} of "
             f"{fb.get('similarity_alone_per_s')} requests/s)",
             met_when(kept is not None and kept >= TARGETS["similarity_kept"], kept), kept, "during writes / without writes"),
    ]
