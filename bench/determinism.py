"""Experiment: is training bit-reproducible, with and without TensorFlow op determinism, and at what speed cost?

python -m bench.determinism --out /tmp/qdup-determinism [--rows 12000] [--epochs 3] [--repeats 2] [--intra N --inter N]

Each configuration runs in fresh processes (op determinism is process-wide and cannot be undone);
every process trains the same model twice with `qdup.model.train.train_model` (same seed, data and
configuration) so both "same process" and "new process" reproducibility are observed. Reported per
mode: whether encoder weights, loss histories and test similarities are bit-identical, and the
median training seconds per epoch. Writes determinism.json and prints a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness.results import Run, write_results
from bench.harness.steps import bench_env, run_step, write_step


def _child(mode: str, rows: int, epochs: int, dims: int, out: Path) -> None:
    from qdup.runtime import apply_tf_thread_defaults

    threads = apply_tf_thread_defaults()
    import keras
    import numpy as np
    import tensorflow as tf

    if mode == "on":
        tf.config.experimental.enable_op_determinism()

    from qdup.config import ModelConfig, SplitConfig, TrainConfig, VocabConfig
    from qdup.data.demo import generate_pairs
    from qdup.data.splits import make_splits
    from qdup.evaluation.metrics import ranking_metrics
    from qdup.model.encode import similarities
    from qdup.model.train import train_model
    from qdup.model.vocab import fit_vectorizer

    splits, _ = make_splits(generate_pairs(rows, seed=3), SplitConfig(n_train=0.8, n_test=0.2))
    train, val, test = splits["train"], splits["val"], splits["test"]
    vec = fit_vectorizer(train["question1"].tolist() + train["question2"].tolist(), VocabConfig())
    # Default architecture (BiLSTM, all dropouts on) at `dims` units; patience above epochs: no early stop.
    model_cfg = ModelConfig(embedding_dim=dims, lstm_units=dims)
    train_cfg = TrainConfig(epochs=epochs, batch_size=256, early_stopping_patience=epochs + 1)
    runs = []
    with tempfile.TemporaryDirectory(prefix="qdup-det-") as tmp:
        for run in (1, 2):
            t0 = time.perf_counter()
            res = train_model(train, val, vec, model_cfg, train_cfg, seed=42, work_dir=Path(tmp) / f"run{run}", log=lambda m: None)
            wall = time.perf_counter() - t0
            enc = keras.saving.load_model(res.encoder_path, safe_mode=True)
            h = hashlib.sha256()
            for w in enc.get_weights():
                h.update(np.ascontiguousarray(w).tobytes())
            sim = similarities(enc, vec, test["question1"].tolist(), test["question2"].tolist(), model_cfg.max_length)
            runs.append({
                "weights_sha256": h.hexdigest(),
                "similarities_sha256": hashlib.sha256(sim.tobytes()).hexdigest(),
                "losses": [[e["loss"], e["val_loss"]] for e in res.history],
                "epoch_seconds": [e["seconds"] for e in res.history],
                "train_wall_s": round(wall, 3),
                "test_roc_auc": ranking_metrics(test["is_duplicate"].to_numpy(), sim)["roc_auc"],
            })
    write_step(out, {
        "mode": mode, "threads": threads, "train_pairs": len(train), "test_pairs": len(test),
        "tensorflow": tf.__version__, "keras": keras.__version__, "runs": runs,
    })


def _summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("off", "on"):
        procs = [r for r in results if r["mode"] == mode]
        runs = [run for p in procs for run in p["runs"]]
        same_process = all(p["runs"][0]["weights_sha256"] == p["runs"][1]["weights_sha256"] for p in procs)
        first = [p["runs"][0] for p in procs]
        across = len({r["weights_sha256"] for r in first}) == 1
        out[mode] = {
            "processes": len(procs),
            "weights_identical_same_process": same_process,
            "weights_identical_across_processes": across,
            "losses_identical_all_runs": len({json.dumps(r["losses"]) for r in runs}) == 1,
            "similarities_identical_all_runs": len({r["similarities_sha256"] for r in runs}) == 1,
            "distinct_weight_hashes": len({r["weights_sha256"] for r in runs}),
            "test_roc_auc": sorted({r["test_roc_auc"] for r in runs}),
            # Epoch 1 includes tracing; later epochs are the steady state.
            "median_epoch_s_after_first": statistics.median(s for r in runs for s in r["epoch_seconds"][1:]),
            "median_train_wall_s": statistics.median(r["train_wall_s"] for r in runs),
        }
    modes = {m: {run["weights_sha256"] for r in results if r["mode"] == m for run in r["runs"]} for m in ("off", "on")}
    out["same_weights_with_and_without"] = modes["off"] == modes["on"]
    off, on = out["off"]["median_epoch_s_after_first"], out["on"]["median_epoch_s_after_first"]
    out["determinism_cost"] = {"epoch_seconds_ratio_on_over_off": round(on / off, 4) if off else None}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=12_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--dims", type=int, default=64, help="embedding_dim = lstm_units")
    ap.add_argument("--repeats", type=int, default=2, help="processes per mode")
    ap.add_argument("--intra", type=int, default=None, help="TF_NUM_INTRAOP_THREADS (default: qdup's, half the CPUs)")
    ap.add_argument("--inter", type=int, default=None, help="TF_NUM_INTEROP_THREADS (default: qdup's, 2)")
    ap.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.rows, args.epochs, args.dims, args.child_out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run("bench.determinism", argv)
    results = []
    # Interleaved so that a change in machine load hits both modes alike.
    for i in range(args.repeats):
        for mode in ("off", "on"):
            part = args.out / f"{mode}-{i}.json"
            cmd = [sys.executable, "-m", "bench.determinism", "--out", str(args.out), "--rows", str(args.rows),
                   "--epochs", str(args.epochs), "--dims", str(args.dims), "--child", mode, "--child-out", str(part)]
            env = bench_env({key: str(value) for key, value in (("TF_NUM_INTRAOP_THREADS", args.intra),
                                                               ("TF_NUM_INTEROP_THREADS", args.inter)) if value is not None})
            step = run_step(cmd, part, args.out / f"{mode}-{i}.log", env, timeout_s=24 * 3600)
            if "error" in step:
                raise SystemExit(f"bench.determinism: the {mode} process failed: {step['error']}")
            results.append(step["result"] | {"process": {k: step[k] for k in ("wall_seconds", "cpu_seconds", "ru_maxrss_bytes")}})
    report = run.finish({"rows": args.rows, "epochs": args.epochs, "dims": args.dims,
                         "summary": _summarise(results), "processes": results})
    write_results(args.out, "determinism.json", report)
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
