"""Benchmark entry point: python -m bench.run --out bench/results [--quick] [--rows N] [--epochs N]."""

# Generates a full-scale data set with `qdup demo-data`, serves it from a local HTTP server, runs
# every pipeline stage in a fresh process (wall time and peak RSS each), trains a notebook-style
# baseline on the same data for the throughput and accuracy comparison, times a warm `qdup run`
# re-run and single-pair/batch inference, repeats the stages on ../shared/data's real 10k sample
# when it is present, and writes results.json and results.md to --out.

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.harness.results import Run, write_results
from bench.harness.stats import throughput
from bench.harness.steps import bench_env, qdup_command, run_measured, run_step, say
from bench.report import FULL_ROWS, evaluate_targets, render_markdown, split_counts
from bench.shared_data import SHARED
from bench.warm_rerun import RERUN_MODEL, warm_rerun

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = SHARED / "data" / "quora_duplicate_questions_first10k.tsv"
# Stages in pipeline order, and what each needs to have succeeded first.
PIPELINE = ("fetch", "validate", "splits", "vocab", "train", "evaluate", "export", "publish", "inference", "baseline")
NEEDS = {
    "validate": ("fetch",),
    "splits": ("validate",),
    "vocab": ("splits",),
    "train": ("vocab",),
    "evaluate": ("train",),
    "export": ("evaluate",),
    "publish": ("export",),
    "inference": ("export",),
    "baseline": ("vocab",),
}


# ---------------------------------------------------------------- http


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def start_http_server(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve `directory` on 127.0.0.1 (a free port) from a daemon thread; return (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="bench-http", daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


# ---------------------------------------------------------------- subprocesses


def run_stage(stage: str, work: Path, timeout_s: float) -> dict[str, Any]:
    """One stage in a fresh `python -m bench.stage` process: its own record, with the process's figures beside it."""
    out = work / "bench" / f"{stage}.json"
    log = work / "logs" / f"{stage}.log"
    cmd = [sys.executable, "-m", "bench.stage", stage, "--work", str(work), "--out", str(out)]
    proc = run_step(cmd, out, log, bench_env({"QDUP_HOME": str(work / "qdup-home")}), timeout_s)
    rec = proc["result"] or {"ok": False, "error": proc["error"]}
    rec.update(wall_seconds=proc["wall_seconds"], rc=proc["rc"], ru_maxrss_bytes=proc["ru_maxrss_bytes"], log=str(log),
               cpu_seconds=proc["cpu_seconds"], loadavg_1min_before=proc["loadavg_1min_before"],
               loadavg_1min_after=proc["loadavg_1min_after"])
    peaks = [v for v in (rec.get("vmhwm_bytes"), proc["ru_maxrss_bytes"]) if v]
    rec["peak_rss_bytes"] = max(peaks) if peaks else None
    rec.pop("traceback", None)
    return rec


# ---------------------------------------------------------------- one data set


def bench_config(source: str, rows: int, epochs: int, seed: int) -> dict[str, Any]:
    """The RetrainConfig (as JSON) of a bench run: project defaults, the bench's source, split and epochs."""
    from qdup.config import RetrainConfig

    n_train, n_test = split_counts(rows)
    cfg = RetrainConfig.model_validate(
        {
            "seed": seed,
            "fetch": {"source": source},
            "split": {"n_train": n_train, "n_test": n_test},
            "train": {"epochs": epochs},
            "evaluate": {"reference_threshold": 0.7},
        }
    )
    return cfg.model_dump(mode="json", by_alias=True)


def run_dataset(name: str, work: Path, params: dict[str, Any], skip: set[str], timeout_s: float) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.json").write_text(json.dumps(params, indent=2))
    stages: dict[str, Any] = {}
    for stage in PIPELINE:
        if stage in skip:
            stages[stage] = {"ok": False, "status": "skipped (--skip)"}
            continue
        missing = [d for d in NEEDS.get(stage, ()) if not (stages.get(d) or {}).get("ok")]
        if missing:
            stages[stage] = {"ok": False, "status": f"not run: {', '.join(missing)} did not succeed"}
            continue
        say(f"{name}: {stage} ...")
        rec = run_stage(stage, work, timeout_s)
        stages[stage] = rec
        if rec.get("ok"):
            say(f"{name}: {stage} done: work {rec['seconds']:.1f}s, process {rec['wall_seconds']:.1f}s, peak RSS {rec['peak_rss_bytes'] / 2**20:,.0f} MiB")
        else:
            say(f"{name}: {stage}: {rec.get('status') or rec.get('error', '')[:300]}")
    baseline = stages.pop("baseline")
    return {"stages": stages, "baseline_stage": baseline, "training": training_comparison(stages, baseline)}


def _epoch_stats(history: list[dict[str, Any]], pairs: int) -> dict[str, Any]:
    secs = [float(h["seconds"]) for h in history]
    return {
        "epoch_seconds": secs,
        "pairs_per_s": throughput(pairs * len(secs), sum(secs)) if secs else None,
        "pairs_per_s_last_epoch": throughput(pairs, secs[-1]) if secs else None,
        "val_loss": float(history[-1]["val_loss"]) if history else None,
    }


def training_comparison(stages: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    tr, ev = stages.get("train") or {}, stages.get("evaluate") or {}
    out: dict[str, Any] = {}
    if tr.get("ok"):
        info = tr["info"]
        q = {"train_pairs": info["train_pairs"], "steps_per_epoch": info["steps_per_epoch"], "epochs": info["epochs"]}
        q |= _epoch_stats(info["history"], info["train_pairs"])
        cpu = info.get("epoch_cpu_seconds") or []
        if cpu:
            q["cpu_seconds_last_epoch"] = cpu[-1]
            q["pairs_per_cpu_s_last_epoch"] = throughput(info["train_pairs"], cpu[-1])
        q["total_seconds"] = tr["seconds"] - tr["parts"].get("batch_widths (bench only)", 0.0)
        q["tf_threads"] = tr.get("tf_threads")
        widths = info.get("mean_batch_width") or {}
        if "question1" in widths:
            q["mean_batch_width"] = (widths["question1"] + widths["question2"]) / 2
        if ev.get("ok"):
            e = ev["info"]
            q |= {"threshold": e["threshold"], "test_accuracy": e["test_accuracy"], "test_roc_auc": e["test_roc_auc"]}
            if abs(e["reference_threshold"] - 0.7) < 1e-9:
                q["test_accuracy_at_0.7"] = e["test_accuracy_at_reference"]
        if base.get("ok"):
            q["common_val_loss"] = base["info"].get("qdup_common_val_loss")
        out["qdup"] = q
    if base.get("ok"):
        info = base["info"]
        b = {k: info.get(k) for k in ("train_pairs", "steps_per_epoch", "epochs", "common_val_loss", "threshold",
                                      "test_accuracy", "test_accuracy_at_0.7", "test_roc_auc")}
        b |= _epoch_stats(info["history"], info["train_pairs"])
        if info["history"] and info["history"][-1].get("cpu_seconds"):
            b["cpu_seconds_last_epoch"] = info["history"][-1]["cpu_seconds"]
            b["pairs_per_cpu_s_last_epoch"] = throughput(info["train_pairs"], b["cpu_seconds_last_epoch"])
        b["total_seconds"] = base["parts"].get("fit")
        b["tf_threads"] = base.get("tf_threads")
        b["mean_batch_width"] = info.get("mean_padded_width_first_batches")
        out["baseline"] = b
    elif base:
        out["baseline"] = {"error": base.get("status") or base.get("error")}
    q, b = out.get("qdup") or {}, out.get("baseline") or {}
    if q.get("pairs_per_s") and b.get("pairs_per_s"):
        out["comparison"] = {
            "speedup": q["pairs_per_s"] / b["pairs_per_s"],
            "speedup_last_epoch": q["pairs_per_s_last_epoch"] / b["pairs_per_s_last_epoch"],
            "speedup_end_to_end": (b["total_seconds"] / b["train_pairs"]) / (q["total_seconds"] / q["train_pairs"])
            if b.get("total_seconds") and q.get("total_seconds") else None,
            "speedup_cpu_last_epoch": q["pairs_per_cpu_s_last_epoch"] / b["pairs_per_cpu_s_last_epoch"]
            if q.get("pairs_per_cpu_s_last_epoch") and b.get("pairs_per_cpu_s_last_epoch") else None,
            "qdup_test_accuracy": q.get("test_accuracy"),
            "baseline_test_accuracy": b.get("test_accuracy"),
        }
    return out


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where results.json and results.md go")
    p.add_argument("--rows", type=int, default=None, help=f"rows of the generated data set (default {FULL_ROWS:,}; --quick: 20,000)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of qdup and the baseline (default 2; --quick: 1)")
    p.add_argument("--max-train-batches", type=int, default=None,
                   help="train both trainers on the first N*batch_size training pairs only (default: all)")
    p.add_argument("--inference-pairs", type=int, default=None, help="pairs for batch scoring (default 50,000; --quick: 5,000)")
    p.add_argument("--latency-calls", type=int, default=300, help="timed single-pair calls after warm-up")
    p.add_argument("--quick", action="store_true", help="smoke run: 20,000 rows, 1 epoch, 5,000 scoring pairs")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip", action="append", default=[], choices=["real", "warm", "baseline", "generated", *PIPELINE[7:9]],
                   help="leave out a part (repeatable)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one, removed unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--baseline-threads", choices=["tensorflow", "qdup"], default="tensorflow",
                   help="TensorFlow threads of the baseline: TensorFlow's defaults, as a notebook runs (default), "
                   "or qdup's (like for like)")
    p.add_argument("--stage-timeout", type=float, default=3600.0, help="seconds before a stage process is killed")
    args = p.parse_args(argv)
    if args.rows is None:
        args.rows = 20_000 if args.quick else FULL_ROWS
    if args.epochs is None:
        args.epochs = 1 if args.quick else 2
    if args.inference_pairs is None:
        args.inference_pairs = 5_000 if args.quick else 50_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("bench.run", argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="qdup-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    www = work / "www"
    www.mkdir(exist_ok=True)
    say(f"scratch folder {work}")
    results: dict[str, Any] = {
        "quick": args.quick,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "datasets": {},
        "notes": [],
    }
    if args.baseline_threads == "qdup":
        os.environ["QDUP_BENCH_BASELINE_THREADS"] = "qdup"
    server, base_url = start_http_server(www)
    skip = set(args.skip)
    stage_skip = {s for s in skip if s in PIPELINE}
    if "baseline" in skip:
        stage_skip.add("baseline")
    common = {"max_train_batches": args.max_train_batches, "inference_pairs": args.inference_pairs, "latency_calls": args.latency_calls}
    try:
        # -- the generated full-scale data set
        gen_path = www / "generated.tsv"
        gen_url = f"{base_url}/generated.tsv"
        if "generated" not in skip:
            say(f"generating {args.rows:,} rows with qdup demo-data ...")
            gen = run_measured(qdup_command() + ["demo-data", str(gen_path), "--rows", str(args.rows)],
                               work / "logs" / "demo-data.log", bench_env(), args.stage_timeout)
            if gen["rc"] != 0:
                raise SystemExit(f"qdup demo-data failed: see {work / 'logs' / 'demo-data.log'}")
            params = {"config": bench_config(gen_url, args.rows, args.epochs, args.seed), **common}
            data = run_dataset("generated", work / "generated", params, stage_skip, args.stage_timeout)
            data |= {"rows": args.rows, "bytes": gen_path.stat().st_size, "generate_seconds": gen["wall_seconds"],
                     "source_note": f"qdup demo-data --rows {args.rows}, served at {gen_url}"}
            data["split_rows"] = ((data["stages"].get("splits") or {}).get("info") or {}).get("rows")
            if args.max_train_batches:
                data["train_cap_note"] = (
                    f"Training capped to the first {args.max_train_batches} batches "
                    f"({args.max_train_batches} x batch size pairs) of the train split, for both trainers."
                )
            results["datasets"]["generated"] = data
        # -- the real 10k sample, when it is beside the checkout (served from a link, never copied)
        if "real" in skip:
            results["datasets"]["real_10k"] = {"skipped": "--skip real"}
        elif not SHARED_SAMPLE.is_file():
            results["datasets"]["real_10k"] = {"skipped": f"{SHARED_SAMPLE} not found"}
        else:
            link = www / "real10k.tsv"
            link.unlink(missing_ok=True)
            link.symlink_to(SHARED_SAMPLE)
            url = f"{base_url}/real10k.tsv"
            rows = sum(1 for _ in open(SHARED_SAMPLE, "rb")) - 1
            params = {"config": bench_config(url, rows, args.epochs, args.seed), **common,
                      "inference_pairs": min(args.inference_pairs, rows)}
            data = run_dataset("real_10k", work / "real_10k", params, stage_skip, args.stage_timeout)
            data |= {"rows": rows, "bytes": SHARED_SAMPLE.stat().st_size, "source_note": f"{SHARED_SAMPLE} via {url}"}
            data["split_rows"] = ((data["stages"].get("splits") or {}).get("info") or {}).get("rows")
            results["datasets"]["real_10k"] = data
        # -- the warm re-run of the real command
        if "warm" in skip or "generated" in skip:
            results["warm_rerun"] = {"skipped": "--skip"}
        else:
            results["warm_rerun"] = warm_rerun(work / "rerun", gen_url, args.rows, args.seed, args.stage_timeout)
    finally:
        server.shutdown()
        results = run.finish(results)
        results["targets"] = evaluate_targets(results)
        results["notes"] += notes(results, args)
        write_results(args.out, "results.json", results, "results.md", render_markdown(results))
        say(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'} ({results['total_seconds']:.0f}s in all)")
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept scratch folder {work}")
    return 0


def notes(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out = [
        "Each stage runs in its own `python -m bench.stage` process calling the plain functions of tasks/*.py "
        "(no Prefect, no stage cache); `work s` excludes interpreter start-up and imports, which a `qdup run` pays once.",
        "Peak RSS = max(VmHWM read by the stage process at its end, ru_maxrss from wait4).",
        "Training throughput = training pairs / epoch seconds, an epoch timed from Keras's on_epoch_begin to on_epoch_end "
        "(the validation pass included) for both trainers; qdup's comes from train_model's history.",
        "Baseline: keras TextVectorization inside the model on raw strings, tf.data shuffled and batched at the same batch "
        "size (partial last batch dropped), each batch padded to its longest question, no masking, no truncation; "
        "Embedding -> LSTM -> GlobalAveragePooling1D -> UnitNormalization; qdup.model.losses.TripletLoss; Adam; same vocabulary, "
        "epochs, learning rate and seed. Its threshold is chosen on the calibration split with qdup.evaluation.metrics.choose_threshold.",
        "`val loss, same file-order batches for both`: both encoders' val encodings cut into the same consecutive batches "
        "and scored with qdup.model.losses.TripletLoss, since each trainer's own val_loss uses different batch compositions.",
        f"Warm re-run: `qdup run` with a small model ({RERUN_MODEL}, 1 epoch), PREFECT_API_URL unset (Prefect starts "
        "its temporary server, as on a machine without a Prefect server), source = the bench's local HTTP URL.",
    ]
    loads = [
        st.get("loadavg_1min_before")
        for data in (results.get("datasets") or {}).values()
        for st in ((data.get("stages") or {}) | {"baseline": data.get("baseline_stage") or {}}).values()
        if isinstance(st, dict) and st.get("loadavg_1min_before") is not None
    ]
    cores = (results.get("machine") or {}).get("usable_cores") or 1
    if loads and max(loads) > 0.75 * cores:
        out.append(
            f"The machine was shared during this run: the 1-minute load average before a stage reached {max(loads):.1f} "
            f"on {cores} usable cores (see `CPU s / load` per stage), so wall times are pessimistic."
        )
    if args.max_train_batches:
        out.append(f"Training was capped at {args.max_train_batches} batches per epoch for both trainers.")
    return out


if __name__ == "__main__":
    sys.exit(main())
