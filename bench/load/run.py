"""`python -m bench.load`: drive a real `qdup serve-model` with wrk and compare each figure with the model alone.

Starts the server (`python -m qdup.cli serve-model`) in a subprocess on 127.0.0.1 over a temporary store
holding two versions of one model, then runs these phases, each bounded by --duration seconds and
--max-requests requests (wrk, a C load generator, so that the client's own cost does not hide the server's):

  similarity_single      /v1/similarity, one pair per request, 1 connection: p50/p99
  similarity_concurrent  one pair per request, --clients connections (default 32) on --wrk-threads threads: pairs/s, p50/p99
  similarity_batch_N     --batch-pairs pairs per request, N connections for each N of --batch-clients: pairs/s
  search_single          /v1/search (the version's default method and index), 1 connection: p50
  search_concurrent      /v1/search, --search-clients connections (default 16): queries/s, p50
  promotion              single pairs, --clients connections; `production` moves to the second version mid-run:
                         failed requests (non-2xx or socket errors), answers by version
  predict                `qdup predict` on one pair, the whole process, --predict-runs times: median seconds

Beside each server phase: the same computation in this process (the version loaded by the server's own loader,
`load_served`, then `Predictor.similarity` plus the version's pair reranker as /v1/similarity does, or the
searcher's `search`) on the same request payloads, measured just before and just after the phase.

The model: with --store, that store's production version (copied into the temporary store, never modified;
the second version is the same files with the threshold + 0.01); otherwise `qdup run` on ../shared/data's real
10k sample in a temporary home (several minutes). Questions sent: the real shared duplicate pairs
(QDUP_SHARED overrides the folder), read at run time and written only to a temporary folder; generated ones
when absent (flagged in the report).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.harness.machine import machine_info
from bench.harness.procs import tree_status_bytes
from bench.harness.results import Run, write_results
from bench.harness.tables import MIB
from bench.load.feedback import feedback_phases, feedback_targets
from bench.load.model import build_store
from bench.load.reference import search_reference, similarity_reference
from bench.load.report import render_markdown, targets_table
from bench.load.server import HOST, Bench, free_port, measure_predict, promote_phase, start_server
from bench.load.wrk import find_wrk, pair_batches, search_body, search_queries, similarity_body, write_bodies, wrk_version
from bench.shared_data import REPO, distinct_questions, train_on_sample


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "serve"), help="folder for results.json and results.md")
    p.add_argument("--store", help="take the model from this store's production version (copied; never modified)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per phase (default %(default)s)")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="requests per phase at most (default %(default)s)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="unrecorded wrk run before each phase (0: none; default %(default)s)")
    p.add_argument("--reference-s", type=float, default=3.0,
                   help="seconds of the in-process model before and after each phase (default %(default)s)")
    p.add_argument("--clients", type=int, default=32, help="connections of the concurrent and promotion phases")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk threads of the multi-connection phases (default %(default)s)")
    p.add_argument("--batch-clients", default="2,4,8", help="connection counts of the batch phases (default %(default)s)")
    p.add_argument("--batch-pairs", type=int, default=1000)
    p.add_argument("--search-clients", type=int, default=16)
    p.add_argument("--feedback-clients", type=int, default=16, help="connections writing feedback (default %(default)s)")
    p.add_argument("--k", type=int, default=10, help="hits per /v1/search query (default %(default)s)")
    p.add_argument("--promote-at-s", type=float, default=3.0,
                   help="seconds into the promotion phase when production moves (default %(default)s)")
    p.add_argument("--after-switch-s", type=float, default=5.0,
                   help="seconds the promotion phase goes on once the server serves the new version (default %(default)s)")
    p.add_argument("--promotion-max-s", type=float, default=120.0,
                   help="the promotion phase's limit, should the server never switch (default %(default)s)")
    p.add_argument("--predict-runs", type=int, default=5, help="timed `qdup predict` processes (default %(default)s)")
    p.add_argument("--request-timeout-s", type=float, default=60.0, help="wrk's per-request timeout (default %(default)s)")
    p.add_argument("--poll-s", type=float, default=1.0, help="the server's alias poll (default %(default)s)")
    p.add_argument("--server-arg", action="append", default=[],
                   help="one more argument for `qdup serve-model` (repeat; e.g. --server-arg=--batch-wait-ms=2)")
    p.add_argument("--skip", action="append", default=[], choices=["similarity", "batch", "search", "promotion", "predict", "feedback"],
                   help="leave out a group of phases (repeat)")
    p.add_argument("--run-timeout-s", type=float, default=3600.0, help="limit of `qdup run` when no --store is given")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    try:
        args.batch_clients = [int(x) for x in str(args.batch_clients).split(",") if x.strip()]
    except ValueError:
        p.error(f"--batch-clients: comma-separated whole numbers, got {args.batch_clients!r}")
    if not 0 < args.duration <= 600 or not 0 < args.promotion_max_s <= 600 or args.max_requests < 1:
        p.error("--duration and --promotion-max-s must be in (0, 600] and --max-requests >= 1")
    if not 0 <= args.promote_at_s < args.promotion_max_s or args.after_switch_s < 0:
        p.error("--promote-at-s must be in [0, --promotion-max-s) and --after-switch-s >= 0")
    if min([args.clients, args.search_clients, args.wrk_threads, args.batch_pairs, args.k, args.predict_runs,
            *args.batch_clients] or [0]) < 1 or not args.batch_clients:
        p.error("client counts, --wrk-threads, --batch-pairs, --k and --predict-runs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    out = Path(args.out)
    (out / "wrk").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from qdup.runtime import apply_tf_thread_defaults

    threads = apply_tf_thread_defaults()
    run = Run("bench.load", argv, machine_info() | {"wrk": wrk_version(wrk), "bench_tf_threads": threads})
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qdup-load-") as tmp:
        work = Path(tmp)
        os.environ["QDUP_HOME"] = str(work / "home")
        if args.store:
            source_url, description = args.store, f"production of {args.store}"
        else:
            source_url = train_on_sample(work / "train-home", args.run_timeout_s, work / "qdup-run.log")
            description = f"`qdup run` on the real 10k sample (8,000 + 2,000 rows), project defaults, commit {run.record['commit']}"
        # A store of one's own run: its one version, whether or not the gate promoted it.
        store = build_store(work, source_url, "production" if args.store else "latest")
        from qdup.registry.store import ArtifactStore
        from qdup.serving.follower import load_served

        served = load_served(ArtifactStore(store["store"]), store["first"])
        searcher = served.searcher
        model = {"description": description, "first": store["first"], "second": store["second"],
                 "threshold": served.threshold, "reranker": served.predictor.reranker is not None,
                 "search_method": getattr(searcher, "default_method", None) if searcher else None,
                 "index_questions": len(searcher.index) if searcher is not None and hasattr(searcher, "index") else None}
        q = distinct_questions(args.seed)
        questions = q.pop("questions")
        print(f"[questions] {q['source']}: {q['pool']:,} distinct, median {q['median_chars']} characters", flush=True)

        bodies = work / "bodies"
        bodies.mkdir()
        # Each file goes once through the pool before any question repeats (the batch file, 80,000 questions, goes
        # past the real pool's ~49,000); the phases then go through each file in turn (Bench.sent).
        single = pair_batches(questions, 1, max(1000, len(questions) // 2), args.seed)
        single_file = write_bodies(bodies / "single.jsonl", [similarity_body(b) for b in single])
        # The model alone's 32-pair calls, on the same pairs the single-pair requests carry.
        in32 = [[p[0] for p in single[i:i + 32]] for i in range(0, len(single) - 31, 32)]
        batch = pair_batches(questions, args.batch_pairs, 40, args.seed + 1)
        batch_file = write_bodies(bodies / "batch.jsonl", [similarity_body(b) for b in batch])
        queries = search_queries(questions, max(1000, len(questions)), args.seed + 2)
        search_file = write_bodies(bodies / "search.jsonl", [search_body(s, args.k) for s in queries])
        body_files = {"single": single_file, "batch": batch_file, "search": search_file}
        for info, texts in ((single_file, [x for b in single for p in b for x in p]),
                            (batch_file, [x for b in batch for p in b for x in p]), (search_file, queries)):
            info |= {"questions": len(texts), "distinct_questions": len(set(texts))}

        port = free_port()
        url = f"http://{HOST}:{port}"
        server = start_server(store["store"], port, args, out / "server.log")
        ref_s = args.reference_s
        feedback = None
        try:
            b = Bench(args, wrk, url, server, served, work, out)
            single_path, batch_path, search_path = (Path(f["path"]) for f in (single_file, batch_file, search_file))
            if "similarity" not in args.skip:
                b.phase("similarity_single", "/v1/similarity", single_path, 1, 1, 1,
                        lambda: similarity_reference(served, single, ref_s))
                b.phase("similarity_concurrent", "/v1/similarity", single_path, args.clients, args.wrk_threads, 1,
                        lambda: similarity_reference(served, in32, ref_s))
            if "batch" not in args.skip:
                for n in args.batch_clients:
                    b.phase(f"similarity_batch_{n}", "/v1/similarity", batch_path, n, args.wrk_threads, args.batch_pairs,
                            lambda: similarity_reference(served, batch, ref_s))
            if "search" not in args.skip:
                if searcher is None:
                    notes.append("the version has no question index: the search phases did not run")
                else:
                    b.phase("search_single", "/v1/search", search_path, 1, 1, 1,
                            lambda: search_reference(served, queries, args.k, ref_s))
                    b.phase("search_concurrent", "/v1/search", search_path, args.search_clients, args.wrk_threads, 1,
                            lambda: search_reference(served, queries, args.k, ref_s))
            if "feedback" not in args.skip:  # before the promotion: the served version is still the first
                feedback = feedback_phases(b, store["store"], store["first"], questions, single_path)
            if "promotion" not in args.skip:
                promote_phase(b, store, single_path)
            import httpx

            facts = httpx.get(f"{url}/v1/model", timeout=30).json()
            server_peak = round(tree_status_bytes(server.pid, "VmHWM") / MIB, 1)
        finally:
            server.terminate()
            server.wait(timeout=60)
        predict = None
        if "predict" not in args.skip:
            print(f"[predict] {args.predict_runs} timed runs (after one untimed) ...", flush=True)
            predict = measure_predict(store["store"], single[0][0], args.predict_runs, dict(os.environ))
    results = run.finish({
        "model": model,
        "questions": q,
        "bodies": {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in body_files.items()},
        "settings": {k: getattr(args, k) for k in ("duration", "max_requests", "warmup_s", "reference_s", "clients", "wrk_threads",
                                                   "batch_clients", "batch_pairs", "search_clients", "k", "promote_at_s",
                                                   "after_switch_s", "promotion_max_s",
                                                   "predict_runs", "request_timeout_s", "poll_s", "server_arg", "skip")},
        "phases": b.phases,
        "predict": predict,
        "server_peak_rss_mib": server_peak,
        "server_model_facts": {k: facts.get(k) for k in ("version", "switches", "batching", "last_error", "refused")},
        "notes": notes,
        "feedback": feedback,
    })
    results["targets"] = targets_table(results) + (feedback_targets(results) if feedback else [])
    write_results(out, "results.json", results, "results.md", render_markdown(results))
    print((out / "results.md").read_text())
    return 0

