"""The load benchmark's targets table (issue 17) and its markdown report: pure functions of results.json."""

from __future__ import annotations

from typing import Any

from bench.report import table

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


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def ratio(server: float | None, alone: float | None) -> float | None:
    """server / model alone (None when either is missing or the model-alone figure is 0)."""
    if server is None or alone is None or alone == 0:
        return None
    return round(server / alone, 3)


def _num(v: float | None, unit: str, digits: int = 1) -> str:
    return "not measured" if v is None else f"{v:,.{digits}f} {unit}"


def _alone(phase: dict[str, Any], key: str, unit: str, digits: int) -> str:
    """The model-alone figure of a similarity phase; with a pair reranker, its `Predictor.similarity` part beside it."""
    text = _num(_get(phase, "model_alone", key), unit, digits)
    encoder = _get(phase, "model_alone", "encoder", key)
    if _get(phase, "model_alone", "reranker") and encoder is not None:
        text += f" (with the reranker; `Predictor.similarity` alone {_num(encoder, unit, digits)})"
    return text


def _row(figure: str, today: str, alone: str, target: str, measured: str, met: bool | None, ratio_: float | None,
         ratio_means: str) -> dict[str, Any]:
    return {"figure": figure, "today": today, "model_alone": alone, "target": target, "measured": measured,
            "met": met, "ratio": ratio_, "ratio_means": ratio_means}


def _met(ok: bool, *values: Any) -> bool | None:
    return None if any(v is None for v in values) else ok


def targets_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure of issue 17 that this benchmark measures (index build and retrieval memory: bench.search)."""
    phases = results.get("phases") or {}
    rows = []

    single = phases.get("similarity_single") or {}
    p50, alone_p50 = _get(single, "server", "latency_ms", "p50"), _get(single, "model_alone", "p50_ms")
    rows.append(_row("`/v1/similarity` one pair, 1 client, p50", ISSUE_TODAY["single_p50"], _alone(single, "p50_ms", "ms", 2),
                     "≤ 4 ms", _num(p50, "ms", 2) + f" (p99 {_num(_get(single, 'server', 'latency_ms', 'p99'), 'ms', 2)})",
                     _met(p50 is not None and p50 <= TARGETS["single_p50_ms"], p50), ratio(p50, alone_p50),
                     "server p50 / model-alone p50"))

    conc = phases.get("similarity_concurrent") or {}
    rate, p99 = _get(conc, "server", "items_per_s"), _get(conc, "server", "latency_ms", "p99")
    alone_rate = _get(conc, "model_alone", "pairs_per_s")
    failed = _get(conc, "server", "failed")
    rows.append(_row(f"one pair per request, {conc.get('clients', 32)} clients", ISSUE_TODAY["concurrent"],
                     _alone(conc, "pairs_per_s", "pairs/s", 0) + " in 32-pair calls", "≥ 2,500 pairs/s, p99 ≤ 100 ms",
                     f"{_num(rate, 'pairs/s', 0)}, p99 {_num(p99, 'ms', 1)}, {failed} failed",
                     _met(rate is not None and p99 is not None and rate >= TARGETS["concurrent_pairs_per_s"]
                          and p99 <= TARGETS["concurrent_p99_ms"] and failed == 0, rate, p99),
                     ratio(rate, alone_rate), "server pairs/s / model-alone pairs/s"))

    batch_runs = [p for name, p in phases.items() if name.startswith("similarity_batch_")]
    best = max(batch_runs, key=lambda p: _get(p, "server", "items_per_s") or 0.0, default=None)
    if best is not None:
        rate, alone_rate = _get(best, "server", "items_per_s"), _get(best, "model_alone", "pairs_per_s")
        share = ratio(rate, alone_rate)
        each = ", ".join(f"{p['clients']} clients {_num(_get(p, 'server', 'items_per_s'), 'pairs/s', 0)}" for p in batch_runs)
        rows.append(_row("1,000-pair requests, 2–8 clients (best)", ISSUE_TODAY["batch"], _alone(best, "pairs_per_s", "pairs/s", 0),
                         "≥ 90% of in-process", f"{_num(rate, 'pairs/s', 0)} ({each})",
                         _met(share is not None and share >= TARGETS["batch_share_of_in_process"], share), share,
                         "server pairs/s / model-alone pairs/s (target ≥ 0.90)"))
        # The encoder's own speed: `Predictor.similarity`, without the reranker the endpoint adds.
        alone_best = max((_get(p, "model_alone", "encoder", "pairs_per_s") or _get(p, "model_alone", "pairs_per_s") or 0.0)
                         for p in batch_runs) or None
        rows.append(_row("in-process batch scoring (`Predictor.similarity`, real-length text, 1,000-pair calls)", ISSUE_TODAY["in_process_batch"], "—",
                         "≥ 15,000 pairs/s", _num(alone_best, "pairs/s", 0),
                         _met(alone_best is not None and alone_best >= TARGETS["in_process_batch_pairs_per_s"], alone_best),
                         None, ""))

    s1 = phases.get("search_single") or {}
    p50, alone_p50 = _get(s1, "server", "latency_ms", "p50"), _get(s1, "model_alone", "p50_ms")
    method = _get(results, "model", "search_method") or "?"
    rows.append(_row(f"`/v1/search` ({method}, the default), {_get(results, 'model', 'index_questions') or 0:,}-question index, "
                     "1 client, p50", ISSUE_TODAY["search_single"], _num(alone_p50, "ms", 2), "≤ 10 ms",
                     _num(p50, "ms", 2), _met(p50 is not None and p50 <= TARGETS["search_single_p50_ms"], p50),
                     ratio(p50, alone_p50), "server p50 / model-alone p50"))

    s16 = phases.get("search_concurrent") or {}
    rate, p50 = _get(s16, "server", "items_per_s"), _get(s16, "server", "latency_ms", "p50")
    alone_rate = _get(s16, "model_alone", "queries_per_s")
    rows.append(_row(f"`/v1/search`, {s16.get('clients', 16)} clients", ISSUE_TODAY["search_concurrent"],
                     _num(alone_rate, "queries/s", 0) + " one query at a time", "≥ 200 queries/s",
                     f"{_num(rate, 'queries/s', 0)}, p50 {_num(p50, 'ms', 1)}",
                     _met(rate is not None and rate >= TARGETS["search_concurrent_queries_per_s"], rate),
                     ratio(rate, alone_rate), "server queries/s / model-alone queries/s"))

    pred = results.get("predict") or {}
    med = pred.get("median_s")
    rows.append(_row("`qdup predict` one pair, whole process (import + load + score)", ISSUE_TODAY["predict"], "—", "≤ 2 s",
                     _num(med, "s", 2) + (f" (median of {len(pred.get('runs_s') or [])})" if med is not None else ""),
                     _met(med is not None and med <= TARGETS["predict_seconds"], med), None, ""))

    promo = phases.get("promotion") or {}
    server = promo.get("server") or {}
    switched = promo.get("switched")
    failed = server.get("failed")
    rows.append(_row(f"promotion under load ({promo.get('clients', 32)} clients)", ISSUE_TODAY["promotion"], "—",
                     "0 failed requests, the answers' version changes",
                     "not measured" if failed is None else f"{failed} failed of {server.get('answered', 0):,}; "
                     f"version changed: {'yes' if switched else 'no'}",
                     _met(failed == 0 and bool(switched), failed, switched), None, ""))
    return rows


def _met_text(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def render_markdown(results: dict[str, Any]) -> str:
    m, model, q = results["machine"], results["model"], results["questions"]
    out = [
        "# `qdup serve-model` under load (wrk)",
        "",
        f"Command: `{results['command']}`  ",
        f"Commit {results['commit']}, started {results['started']}, took {_f(results.get('total_seconds'), 0)} s.  ",
        f"Machine: {m['cpus']} CPUs ({m['usable_cores']} usable, {m['cpu_model']}), {_f(m.get('ram_gib'))} GiB RAM, "
        f"load average at start {m['loadavg_start']}; {m['wrk']}.  ",
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
        [[r["figure"], r["today"], r["model_alone"], r["target"], r["measured"], _met_text(r["met"]),
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
        rows.append([name, p["clients"], p.get("items_per_request", 1), _f(s.get("answered"), 0), s.get("failed"),
                     _f(s.get("requests_per_s")), _f(s.get("items_per_s")), _f(lat.get("p50"), 2), _f(lat.get("p99"), 2),
                     _f(a.get("p50_ms"), 2), _f(a.get("pairs_per_s", a.get("queries_per_s")), 0),
                     _f(p.get("loadavg_before"), 2), _f(p.get("others_core_share"), 2), _f(p.get("server_cpu_s"), 1),
                     _f(p.get("client_cpu_s"), 1),
                     _f(p.get("server_peak_rss_mib"), 0), "yes" if p.get("bodies_repeated") else "no"])
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
                + f"; the phase ran {_f(s.get('window_s'))} s; answers by version {s['versions']}; version changes seen per wrk thread "
                f"{s['version_changes_per_thread']} (a thread's connections interleave, so a change can be seen more than once "
                f"around the switch); statuses {s['statuses']}; socket errors {s['socket_errors']}."]
    pred = results.get("predict")
    if pred:
        out += ["", f"`qdup predict` one pair (`{pred['command']}`): runs {pred['runs_s']} s, median {pred['median_s']:.2f} s "
                f"(after one untimed run that warms the disk cache)."]
    out += ["", f"Server peak RSS (VmHWM) over the whole run: {_f(results.get('server_peak_rss_mib'), 0)} MiB."]
    notes = results.get("notes") or []
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
