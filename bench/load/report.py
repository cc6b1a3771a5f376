"""The load benchmark's targets table (issue 17) and its markdown report: pure functions of results.json."""

from __future__ import annotations

from typing import Any

from bench.harness.results import header
from bench.harness.tables import dig, fmt, measured, met_text, met_when, table

# Issue 17's table: what was measured before it ("today"), the model alone then, and the target.
ISSUE_TODAY = {
    "single_p50": "5.8 ms",
    "concurrent": "1,276 pairs/s, p99 335 ms",
    "batch": "5,840 pairs/s",
    "in_process_batch": "8,364 pairs/s",
    "search_single": "p50 47 ms",
    "search_concurrent": "22 queries/s, p50 724 ms",
    "predict": "6.1–6.8 s",
    "promotion": "0 failed",
}
TARGETS = {
    "single_p50_ms": 4.0,
    "concurrent_pairs_per_s": 2500.0,
    "concurrent_p99_ms": 100.0,
    "batch_share_of_in_process": 0.90,
    "in_process_batch_pairs_per_s": 15000.0,
    "search_single_p50_ms": 10.0,
    "search_concurrent_queries_per_s": 200.0,
    "predict_seconds": 2.0,
}


def ratio(server: float | None, alone: float | None) -> float | None:
    """server / model alone (None when either is missing or the model-alone figure is 0)."""
    if server is None or alone is None or alone == 0:
        return None
    return round(server / alone, 3)


def _alone(phase: dict[str, Any], key: str, unit: str, digits: int) -> str:
    """The model-alone figure of a similarity phase; with a pair reranker, its `Predictor.similarity` part beside it."""
    text = measured(dig(phase, "model_alone", key), unit, digits)
    encoder = dig(phase, "model_alone", "encoder", key)
    if dig(phase, "model_alone", "reranker") and encoder is not None:
        text += f" (with the reranker; `Predictor.similarity` alone {measured(encoder, unit, digits)})"
    return text


def figure_row(figure: str, today: str, alone: str, target: str, measured: str, met: bool | None, ratio_: float | None,
         ratio_means: str) -> dict[str, Any]:
    return {"figure": figure, "today": today, "model_alone": alone, "target": target, "measured": measured,
            "met": met, "ratio": ratio_, "ratio_means": ratio_means}


def targets_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure of issue 17 that this benchmark measures (index build and retrieval memory: bench.search)."""
    phases = results.get("phases") or {}
    rows = []

    single = phases.get("similarity_single") or {}
    p50, alone_p50 = dig(single, "server", "latency_ms", "p50"), dig(single, "model_alone", "p50_ms")
    rows.append(figure_row("`/v1/similarity` one pair, 1 client, p50", ISSUE_TODAY["single_p50"], _alone(single, "p50_ms", "ms", 2),
                     "≤ 4 ms", measured(p50, "ms", 2) + f" (p99 {measured(dig(single, 'server', 'latency_ms', 'p99'), 'ms', 2)})",
                     met_when(p50 is not None and p50 <= TARGETS["single_p50_ms"], p50), ratio(p50, alone_p50),
                     "server p50 / model-alone p50"))

    conc = phases.get("similarity_concurrent") or {}
    rate, p99 = dig(conc, "server", "items_per_s"), dig(conc, "server", "latency_ms", "p99")
    alone_rate = dig(conc, "model_alone", "pairs_per_s")
    failed = dig(conc, "server", "failed")
    rows.append(figure_row(f"one pair per request, {conc.get('clients', 32)} clients", ISSUE_TODAY["concurrent"],
                     _alone(conc, "pairs_per_s", "pairs/s", 0) + " in 32-pair calls", "≥ 2,500 pairs/s, p99 ≤ 100 ms",
                     f"{measured(rate, 'pairs/s', 0)}, p99 {measured(p99, 'ms', 1)}, {failed} failed",
                     met_when(rate is not None and p99 is not None and rate >= TARGETS["concurrent_pairs_per_s"]
                          and p99 <= TARGETS["concurrent_p99_ms"] and failed == 0, rate, p99),
                     ratio(rate, alone_rate), "server pairs/s / model-alone pairs/s"))

    batch_runs = [p for name, p in phases.items() if name.startswith("similarity_batch_")]
    best = max(batch_runs, key=lambda p: dig(p, "server", "items_per_s") or 0.0, default=None)
    if best is not None:
        rate, alone_rate = dig(best, "server", "items_per_s"), dig(best, "model_alone", "pairs_per_s")
        share = ratio(rate, alone_rate)
        each = ", ".join(f"{p['clients']} clients {measured(dig(p, 'server', 'items_per_s'), 'pairs/s', 0)}" for p in batch_runs)
        rows.append(figure_row("1,000-pair requests, 2–8 clients (best)", ISSUE_TODAY["batch"], _alone(best, "pairs_per_s", "pairs/s", 0),
                         "≥ 90% of in-process", f"{measured(rate, 'pairs/s', 0)} ({each})",
                         met_when(share is not None and share >= TARGETS["batch_share_of_in_process"], share), share,
                         "server pairs/s / model-alone pairs/s (target ≥ 0.90)"))
        # The encoder's own speed: `Predictor.similarity`, without the reranker the endpoint adds.
        alone_best = max((dig(p, "model_alone", "encoder", "pairs_per_s") or dig(p, "model_alone", "pairs_per_s") or 0.0)
                         for p in batch_runs) or None
        rows.append(figure_row("in-process batch scoring (`Predictor.similarity`, real-length text, 1,000-pair calls)", ISSUE_TODAY["in_process_batch"], "—",
                         "≥ 15,000 pairs/s", measured(alone_best, "pairs/s", 0),
                         met_when(alone_best is not None and alone_best >= TARGETS["in_process_batch_pairs_per_s"], alone_best),
                         None, ""))

    s1 = phases.get("search_single") or {}
    p50, alone_p50 = dig(s1, "server", "latency_ms", "p50"), dig(s1, "model_alone", "p50_ms")
    method = dig(results, "model", "search_method") or "?"
    rows.append(figure_row(f"`/v1/search` ({method}, the default), {dig(results, 'model', 'index_questions') or 0:,}-question index, "
                     "1 client, p50", ISSUE_TODAY["search_single"], measured(alone_p50, "ms", 2), "≤ 10 ms",
                     measured(p50, "ms", 2), met_when(p50 is not None and p50 <= TARGETS["search_single_p50_ms"], p50),
                     ratio(p50, alone_p50), "server p50 / model-alone p50"))

    s16 = phases.get("search_concurrent") or {}
    rate, p50 = dig(s16, "server", "items_per_s"), dig(s16, "server", "latency_ms", "p50")
    alone_rate = dig(s16, "model_alone", "queries_per_s")
    rows.append(figure_row(f"`/v1/search`, {s16.get('clients', 16)} clients", ISSUE_TODAY["search_concurrent"],
                     measured(alone_rate, "queries/s", 0) + " one query at a time", "≥ 200 queries/s",
                     f"{measured(rate, 'queries/s', 0)}, p50 {measured(p50, 'ms', 1)}",
                     met_when(rate is not None and rate >= TARGETS["search_concurrent_queries_per_s"], rate),
                     ratio(rate, alone_rate), "server queries/s / model-alone queries/s"))

    pred = results.get("predict") or {}
    med = pred.get("median_s")
    rows.append(figure_row("`qdup predict` one pair, whole process (import + load + score)", ISSUE_TODAY["predict"], "—", "≤ 2 s",
                     measured(med, "s", 2) + (f" (median of {len(pred.get('runs_s') or [])})" if med is not None else ""),
                     met_when(med is not None and med <= TARGETS["predict_seconds"], med), None, ""))

    promo = phases.get("promotion") or {}
    server = promo.get("server") or {}
    switched = promo.get("switched")
    failed = server.get("failed")
    rows.append(figure_row(f"promotion under load ({promo.get('clients', 32)} clients)", ISSUE_TODAY["promotion"], "—",
                     "0 failed requests, the answers' version changes",
                     "not measured" if failed is None else f"{failed} failed of {server.get('answered', 0):,}; "
                     f"version changed: {'yes' if switched else 'no'}",
                     met_when(failed == 0 and bool(switched), failed, switched), None, ""))
    return rows


def render_markdown(results: dict[str, Any]) -> str:
    model, q = results["model"], results["questions"]
    out = [
        "# `qdup serve-model` under load (wrk)",
        "",
        *header(results),
        f"Load generator: {results['machine'].get('wrk', '?')}.  ",
        f"Model: {model['description']}; versions {model['first']} → {model['second']}.  ",
        f"Questions sent: {q['source']} ({q['pool']:,} distinct questions in the pool, median {q.get('median_chars', '?')} "
        "characters).",
    ]
    bodies = results.get("bodies") or {}
    if bodies:
        out[-1] += "  "
        out.append("Body files: " + "; ".join(
            f"{name} {b['bodies']:,} bodies (mean {b['mean_bytes']:,.0f} bytes, {b.get('distinct_questions', 0):,} distinct of "
            f"{b.get('questions', 0):,} questions)" for name, b in bodies.items()) + ".")
    if q.get("generated"):
        out += ["", "**The questions are generated (no shared real pairs were found): figures are not real-length text.**"]
    out += ["", "## Issue 17's targets", ""]
    out.append(table(
        ["figure", "today", "model alone, in-process", "target", "measured", "met?", "server / in-process"],
        [[r["figure"], r["today"], r["model_alone"], r["target"], r["measured"], met_text(r["met"]),
          "—" if r["ratio"] is None else f"{r['ratio']:.2f} ({r['ratio_means']})"] for r in results["targets"]],
    ))
    out += ["", "Index build time and the retrieval stage's memory are measured by `python -m bench.search`, not here.",
            "", "## Phases", "",
            "Server figures come from wrk (`bench/load/rotate.lua`): rates over the window from the first request sent "
            "to the last answer, latency percentiles from wrk's histogram. The model alone is the same computation in the "
            "benchmark's own process on the same request payloads, measured just before and just after the phase (the "
            "server idle); the ratio is the one to compare across machines. Each phase goes on through its body file where "
            "the last one stopped; `bodies repeated?` says whether it went past the file's end (a server cache would then "
            "see questions again). `others' share of the cores`: the CPU time other processes of the machine took during the "
            "phase (its busy time less the server's, wrk's and the benchmark's), as a share of all cores: 0 on a quiet machine.",
            ""]
    rows = []
    for name, p in results["phases"].items():
        s, a = p.get("server") or {}, p.get("model_alone") or {}
        lat = s.get("latency_ms") or {}
        rows.append([name, p["clients"], p.get("items_per_request", 1), fmt(s.get("answered"), 0), s.get("failed"),
                     fmt(s.get("requests_per_s"), 1), fmt(s.get("items_per_s"), 1), fmt(lat.get("p50"), 2), fmt(lat.get("p99"), 2),
                     fmt(a.get("p50_ms"), 2), fmt(a.get("pairs_per_s", a.get("queries_per_s")), 0),
                     fmt(p.get("loadavg_before"), 2), fmt(p.get("others_core_share"), 2), fmt(p.get("server_cpu_s"), 1),
                     fmt(p.get("client_cpu_s"), 1),
                     fmt(p.get("server_peak_rss_mib"), 0), "yes" if p.get("bodies_repeated") else "no"])
    out.append(table(["phase", "clients", "items/request", "answered", "failed", "requests/s", "items/s", "p50 ms", "p99 ms",
                      "alone p50 ms", "alone items/s", "load avg before", "others' share of the cores", "server CPU s", "wrk CPU s", "server peak RSS MiB",
                      "bodies repeated?"],
                     rows))
    promo = results["phases"].get("promotion")
    if promo:
        s = promo["server"]
        served_at = promo.get("served_at_s")
        out += ["", f"Promotion {promo['promoted_at_s']:.1f} s into the phase: production {model['first']} → {model['second']}; "
                + ("the server did not serve the new version within the phase" if served_at is None else
                   f"the server served it {served_at - promo['promoted_at_s']:.1f} s later (its poll, load, verification "
                   "and warm-up while under load)")
                + f"; the phase ran {fmt(s.get('window_s'), 1)} s; answers by version {s['versions']}; version changes seen per wrk thread "
                f"{s['version_changes_per_thread']} (a thread's connections interleave, so a change can be seen more than once "
                f"around the switch); statuses {s['statuses']}; socket errors {s['socket_errors']}."]
    pred = results.get("predict")
    if pred:
        out += ["", f"`qdup predict` one pair (`{pred['command']}`): runs {pred['runs_s']} s, median {pred['median_s']:.2f} s "
                f"(after one untimed run that warms the disk cache)."]
    out += ["", f"Server peak RSS (VmHWM) over the whole run: {fmt(results.get('server_peak_rss_mib'), 0)} MiB."]
    notes = results.get("notes") or []
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
