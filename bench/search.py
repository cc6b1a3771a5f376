"""Search benchmark: python -m bench.search --out bench/results/search [--questions N] [--threads 2] [--skip STEP ...]."""

# Each step runs in its own process (wall times and peak RSS from getrusage): generate a corpus of
# distinct questions with qdup's demo generator, build the question index (encoding with a
# randomly initialised encoder of the default architecture: the same work per question as a trained
# one), single-query latency and batch throughput in a warm process, top-10 mining of the whole
# corpus, mining recall against exact mining on a subset, the lexical (BM25) index on the real
# duplicate pairs of ../shared/data when present, one hybrid query's latency on the full index and on 14,000
# questions, and the retrieval evaluation's peak memory on 77,000 questions. Writes search.json and search.md to --out.

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from bench import search_steps
from bench.harness.procs import peak_rss_bytes
from bench.harness.results import Run, page
from bench.harness.steps import bench_env, run_step, write_step
from bench.harness.tables import table, verdict
from bench.search_steps import RETRIEVAL_CORPUS
from bench.shared_data import REPO

FULL_QUESTIONS = 537_933  # distinct questions of the full Quora release
STEPS = ("corpus", "build", "query", "hybrid", "real_vocab", "mine", "mine_recall", "real_lexical", "retrieval_memory")
TARGETS = {
    "build_s": 60.0,
    "query_p50_ms": 5.0,
    "query_p99_ms": 20.0,
    "batch_qps": 2000.0,
    "mine_s": 600.0,
    "mine_recall": 0.95,
    "peak_rss_bytes": 4 * 1024**3,
    "hybrid_p50_ms": 10.0,
    "hybrid_over_dense": 3.0,
    "dense_p50_ms": 5.0,
    "retrieval_rss_bytes": 2 * 1024**3,
}


def search_step(step: str, work: Path, n: int, threads: int) -> dict[str, Any]:
    """One step in its own `python -m bench.search --step` process: its figures, `ok`, and the process's wall seconds."""
    cmd = [sys.executable, "-m", "bench.search", "--step", step, "--work", str(work), "--questions", str(n),
           "--threads", str(threads)]
    env = bench_env({"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"})
    proc = run_step(cmd, work / f"{step}.json", work / "logs" / f"{step}.log", env, timeout_s=24 * 3600)
    if "error" in proc:
        return {"ok": False, "wall_s": proc["wall_seconds"], "stderr_tail": proc["error"]}
    return {"ok": True, "wall_s": proc["wall_seconds"], **proc["result"]}


def _over_dense(step: dict[str, Any], prefix: str, form: str) -> float | None:
    """Hybrid p50 over dense p50 as the step measured them, interleaved query by query (older results: their p50s)."""
    if f"{prefix}hybrid_{form}_over_dense" in step:
        return step[f"{prefix}hybrid_{form}_over_dense"]
    hybrid, dense = step.get(f"{prefix}hybrid_{form}", {}).get("p50_ms"), step.get(f"{prefix}dense", {}).get("p50_ms")
    return None if hybrid is None or not dense else hybrid / dense


def evaluate(results: dict[str, Any]) -> list[list[str]]:
    rows = []

    def row(name, target, value, limit, higher=False, fmt="{:.2f}"):
        rows.append([name, target, "not measured" if value is None else fmt.format(value), verdict(value, limit, higher)])

    b, q, m, r = (results.get(s, {}) for s in ("build", "query", "mine", "mine_recall"))
    h, rm = results.get("hybrid", {}), results.get("retrieval_memory", {})
    row("index build (encode + index)", "<= 60 s", b.get("build_s"), TARGETS["build_s"])
    row("  of which the lexical (BM25) index", "small part", b.get("lexical_s"), TARGETS["build_s"])
    for size in ("full", "small"):
        count = h.get(f"{size}_questions")
        label = "?" if count is None else f"{count:,}"
        row(f"hybrid search p50, one query (VersionSearcher.search), {label} questions", "<= 10 ms",
            h.get(f"{size}_hybrid_rrf", {}).get("p50_ms"), TARGETS["hybrid_p50_ms"])
        row(f"dense search p50, one query, {label} questions", "<= 5 ms", h.get(f"{size}_dense", {}).get("p50_ms"),
            TARGETS["dense_p50_ms"])
        if size == "full":
            for form in ("rrf", "weighted"):
                row(f"hybrid ({form}) p50 / dense p50, interleaved, {label} generated questions", "<= 3x",
                    _over_dense(h, "full_", form), TARGETS["hybrid_over_dense"], fmt="{:.2f}x")
    rv = results.get("real_vocab", {})
    for form in ("rrf", "weighted"):
        row(f"hybrid ({form}) p50 / dense p50, interleaved, {rv.get('questions', 0):,} questions with a real vocabulary",
            "<= 3x", _over_dense(rv, "", form), TARGETS["hybrid_over_dense"], fmt="{:.2f}x")
    rss = rm.get("peak_rss_bytes")
    row(f"peak RSS, retrieval evaluation, {rm.get('corpus', RETRIEVAL_CORPUS):,} questions", "<= 2 GiB",
        None if rss is None else rss / 1024**3, 2.0, fmt="{:.2f} GiB")
    row("one query p50 (encode + search)", "<= 5 ms", q.get("single_total", {}).get("p50_ms"), TARGETS["query_p50_ms"])
    row("one query p99 (encode + search)", "<= 20 ms", q.get("single_total", {}).get("p99_ms"), TARGETS["query_p99_ms"])
    row("batch search (search only)", ">= 2,000 q/s", q.get("batch_search_qps"), TARGETS["batch_qps"], True, "{:,.0f}")
    row("batch search (encode + search)", ">= 2,000 q/s", q.get("batch_total_qps"), TARGETS["batch_qps"], True, "{:,.0f}")
    row("mine top-10, whole corpus", "<= 600 s", m.get("mine_s"), TARGETS["mine_s"])
    row("mining recall vs exact (50k)", ">= 0.95", r.get("recall"), TARGETS["mine_recall"], True, "{:.4f}")
    for step in ("build", "query", "mine", "mine_recall"):
        rss = results.get(step, {}).get("peak_rss_bytes")
        row(f"peak RSS, {step}", "<= 4 GiB", None if rss is None else rss / 1024**3, 4.0, fmt="{:.2f} GiB")
    return rows


def render(results: dict[str, Any]) -> str:
    lines = [
        ("Wall times on a shared machine include waiting for the cores; CPU seconds (all threads of the process) "
        "are given beside them where the two differ much (see search.json: *_cpu_s, single_total_cpu, load_after)."),
        "",
    ]
    lines += [table(["measure", "target", "measured", "verdict"], evaluate(results)), ""]
    carried = {step: v["carried"] for step, v in results.items() if isinstance(v, dict) and v.get("carried")}
    if carried:
        lines += ["Steps whose figures come from an earlier run (skipped in this one): " + "; ".join(
            f"`{step}` (`{c.get('command')}`, commit {c.get('commit')})" for step, c in carried.items()) + ".", ""]
    b = results.get("build", {})
    if b.get("ok"):
        lines += [
            (
                "Index build breakdown: "
                f"encode {b['encode_s']:.1f} s ({b['encode_qps']:,.0f} questions/s), index ({b['backend']}) {b['index_s']:.1f} s, "
                f"save {b['save_s']:.1f} s; recall@10 vs exact on 1,000 indexed questions {b['recall_at_10']:.4f}. "
                "The encoder has random weights (seeded): encoding costs the same as with trained weights."
            ),
            "",
        ]
    q = results.get("query", {})
    if q.get("ok"):
        lines += [
            (
                f"Single query: encode p50 {q['single_encode']['p50_ms']:.2f} ms, search p50 {q['single_search']['p50_ms']:.2f} ms; "
                f"batch encode {q['batch_encode_qps']:,.0f} q/s; recall@10 of held-out queries {q['held_out_recall_at_10']:.4f}."
            ),
            "",
        ]
    rl = results.get("real_lexical", {})
    if rl.get("ok") and "metrics" in rl:
        mm = rl["metrics"]
        lines += [
            (
                f"Real duplicate pairs ({rl['pairs']:,} queries, corpus {rl['corpus']:,} questions), lexical ({rl['lexical_index']}): "
                f"MRR@10 {mm['mrr@10']:.4f}, recall@1 {mm['recall@1']:.4f}, recall@10 {mm['recall@10']:.4f}, "
                f"recall@100 {mm['recall@100']:.4f} (fit {rl['fit_s']:.1f} s, search {rl['search_s']:.1f} s)."
            ),
            "",
        ]
        if "exact" in rl:
            bb, mb = rl["exact"], rl["exact"]["metrics"]
            lines += [(f"Beside it, {bb['lexical_index']}: MRR@10 {mb['mrr@10']:.4f}, "
                       f"recall@1 {mb['recall@1']:.4f}, recall@10 {mb['recall@10']:.4f}, recall@100 {mb['recall@100']:.4f} "
                       f"(fit {bb['fit_s']:.1f} s, search {bb['search_s']:.1f} s)."), ""]
    rv = results.get("real_vocab", {})
    if rv.get("ok") and "served_metrics" in rv:
        sm, em = rv["served_metrics"], rv["exact_metrics"]
        lines += [(
            f"Real vocabulary at full size: every distinct real question ({rv['real_questions']:,}) among "
            f"{rv['questions']:,} (the rest generated; vocabulary {rv['vocabulary']:,} stems). Lexical, served "
            f"({rv['postings_per_term']:,} postings per word) against exact, {rv['quality_queries']:,} real question1 -> "
            f"question2 queries: MRR@10 {sm['mrr@10']:.4f} vs {em['mrr@10']:.4f}, recall@10 {sm['recall@10']:.4f} vs "
            f"{em['recall@10']:.4f}, recall@100 {sm['recall@100']:.4f} vs {em['recall@100']:.4f}. One query p50: dense "
            f"{rv['dense']['p50_ms']:.2f} ms, lexical {rv['lexical']['p50_ms']:.2f} ms (exact {rv['lexical_exact']['p50_ms']:.2f} ms), "
            f"hybrid rrf {rv['hybrid_rrf']['p50_ms']:.2f} ms, weighted {rv['hybrid_weighted']['p50_ms']:.2f} ms."), ""]
    lines += ["Raw figures: search.json."]
    return page("Search benchmark", results, lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "search")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: <out>/work)")
    p.add_argument("--questions", type=int, default=FULL_QUESTIONS)
    p.add_argument("--threads", type=int, default=2, help="faiss threads (the target machine has 2 cores)")
    p.add_argument("--skip", nargs="*", default=[], choices=STEPS)
    p.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    work = a.work or (a.out / "work")
    work.mkdir(parents=True, exist_ok=True)
    if a.step:
        result = getattr(search_steps, f"step_{a.step}")(work, a.questions, a.threads)
        write_step(work / f"{a.step}.json", {**result, "peak_rss_bytes": peak_rss_bytes()})
        return 0
    for name in ("index", "mined.parquet"):
        target = work / name
        if "build" in a.skip:
            break
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    run = Run("bench.search", argv)
    results: dict[str, Any] = {}
    previous = a.out / "search.json"
    if a.skip and previous.is_file():
        # A step skipped here keeps its figures from the results file, marked with the command and commit that took them.
        old = json.loads(previous.read_text())
        for step in a.skip:
            if isinstance(old.get(step), dict):
                results[step] = {**old[step], "carried": old[step].get("carried") or
                                 {"command": old.get("command"), "commit": old.get("commit", "not recorded")}}
    for step in STEPS:
        if step in a.skip:
            continue
        print(f"[bench.search] {step} ...", flush=True)
        results[step] = search_step(step, work, a.questions, a.threads)
        results[step]["load_after"] = os.getloadavg()[0]
        print(f"[bench.search] {step}: {json.dumps(results[step], default=str)[:400]}", flush=True)
    run.save(a.out, "search.json", results, "search.md", render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
