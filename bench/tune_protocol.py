"""Tune the Siamese LSTM on a fixed split protocol with qdup's plain functions (no Prefect).

For each configuration (JSON overrides of ModelConfig / TrainConfig / VocabConfig) and seed:
read and split the sample TSV, fit the vocabulary on train, train in a fresh temporary work
dir, evaluate (threshold chosen on calibration, metrics on test) and print one JSON line with
calibration ROC-AUC, best val loss, test ROC-AUC, test accuracy at the reference threshold and
at the calibration-chosen one, epochs, seconds, and the command and commit that measured them.
Lines are appended to --out when given.

Choose configurations by calibration ROC-AUC (never by test); test numbers are for reporting.

Examples:
    python -m bench.tune_protocol                                   # the current defaults, seed 42
    python -m bench.tune_protocol --seeds 42 43 44 \\
        --config 'bidir={"model": {"bidirectional": true}}' \\
        --config 'course={"model": {"mask_padding": false, "dropout": 0.0}, "train": {"learning_rate": 0.01}}'
    python -m bench.tune_protocol --grid configs.json --out results.jsonl   # [{"name": ..., "overrides": {...}}, ...]
    python -m bench.tune_protocol --summarise results.jsonl

The data file is read at run time only; the script exits 0 with a message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.harness.machine import provenance

DEFAULT_DATA = Path("/work/shared/data/quora_duplicate_questions_first10k.tsv")
SECTIONS = ("model", "train", "vocab")


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    """'NAME=JSON' (or bare JSON, named by its content) -> (name, overrides)."""
    name, sep, body = text.partition("=")
    if not sep or name.strip().startswith("{"):
        name, body = "", text
    overrides = json.loads(body) if body.strip() else {}
    if not isinstance(overrides, dict) or set(overrides) - set(SECTIONS):
        raise SystemExit(f"overrides must be a JSON object with keys among {SECTIONS}: {text!r}")
    return name.strip() or json.dumps(overrides, sort_keys=True, separators=(",", ":")), overrides


def load_configs(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    configs = [parse_config(c) for c in args.config]
    if args.grid:
        for item in json.loads(Path(args.grid).read_text()):
            configs.append((item["name"], item.get("overrides", {})))
    return configs or [("defaults", {})]


def prepare(data_path: Path, n_train: int, n_test: int):
    """Read the TSV and split it as the flow does (typed frame, positional splits)."""
    from qdup.config import SplitConfig
    from qdup.data import contracts, splits

    _, typed = contracts.read_tsv(data_path)
    frame = contracts.to_int_frame(typed)
    parts, _ = splits.make_splits(frame, SplitConfig(n_train=n_train, n_test=n_test))
    return parts


def run_one(parts, name: str, overrides: dict[str, Any], seed: int, ref_threshold: float) -> dict[str, Any]:
    from qdup.config import EvalConfig, ModelConfig, TrainConfig, VocabConfig
    from qdup.evaluation.pairs import evaluate_model
    from qdup.model import train, vocab

    model_cfg = ModelConfig(**overrides.get("model", {}))
    train_cfg = TrainConfig(**overrides.get("train", {}))
    vocab_cfg = VocabConfig(**overrides.get("vocab", {}))
    t0 = time.perf_counter()
    tr = parts["train"]
    vectorizer = vocab.fit_vectorizer(list(tr["question1"]) + list(tr["question2"]), vocab_cfg)
    with tempfile.TemporaryDirectory(prefix="qdup-tune-") as tmp:
        work = Path(tmp)
        result = train.train_model(
            parts["train"], parts["val"], vectorizer, model_cfg, train_cfg, seed, work / "train", log=lambda _m: None
        )
        import keras

        encoder = keras.saving.load_model(result.encoder_path, safe_mode=True)
        (work / "eval").mkdir()
        metrics = evaluate_model(
            encoder, vectorizer, parts["calibration"], parts["test"], model_cfg,
            EvalConfig(reference_threshold=ref_threshold), work / "eval",
        )
    seconds = time.perf_counter() - t0
    test = metrics["test"]
    return {
        "name": name,
        "seed": seed,
        "overrides": overrides,
        "vocab_size": vectorizer.vocabulary_size(),
        "calibration_roc_auc": round(metrics["calibration"]["ranking"]["roc_auc"], 5),
        "val_loss": round(result.best_val_loss, 5),
        "test_roc_auc": round(test["ranking"]["roc_auc"], 5),
        "test_accuracy_at_reference": round(test["at_reference_threshold"]["accuracy"], 5),
        "reference_threshold": ref_threshold,
        "test_accuracy_at_chosen": round(test["at_threshold"]["accuracy"], 5),
        "chosen_threshold": round(metrics["threshold"]["value"], 5),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": round(seconds, 1),
    }


def summarise(rows: list[dict[str, Any]]) -> str:
    """Markdown table, one row per configuration: mean ± sd over its seeds, best calibration first."""
    import numpy as np

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["name"]].append(r)

    def ms(vals: list[float]) -> str:
        a = np.asarray(vals, dtype=float)
        return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.4f}"

    order = sorted(groups, key=lambda n: -np.mean([r["calibration_roc_auc"] for r in groups[n]]))
    lines = [
        "| config | seeds | calibration ROC-AUC | test ROC-AUC | test acc @ref | test acc @chosen | best epoch | s/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in order:
        g = groups[n]
        lines.append(
            f"| {n} | {len(g)} | {ms([r['calibration_roc_auc'] for r in g])} | {ms([r['test_roc_auc'] for r in g])} "
            f"| {np.mean([r['test_accuracy_at_reference'] for r in g]):.4f} "
            f"| {np.mean([r['test_accuracy_at_chosen'] for r in g]):.4f} "
            f"| {np.mean([r['best_epoch'] for r in g]):.1f} | {np.mean([r['seconds'] for r in g]):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Quora TSV (read at run time only)")
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--config", action="append", default=[], help="NAME=JSON overrides, e.g. 'x={\"model\": {\"dropout\": 0.2}}'")
    ap.add_argument("--grid", help="JSON file: a list of {name, overrides}")
    ap.add_argument("--reference-threshold", type=float, default=0.7)
    ap.add_argument("--out", type=Path, help="append one JSON line per run to this file")
    ap.add_argument("--summarise", type=Path, metavar="JSONL", help="print a markdown summary of a results file and exit")
    args = ap.parse_args(argv)

    if args.summarise:
        rows = [json.loads(line) for line in args.summarise.read_text().splitlines() if line.strip()]
        print(summarise(rows))
        return 0
    if not args.data.is_file():
        print(f"skipping: the sample file {args.data} is absent")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configs = load_configs(args)
    run = provenance("bench.tune_protocol", argv, machine={})
    parts = prepare(args.data, args.n_train, args.n_test)
    rows = []
    for name, overrides in configs:
        for seed in args.seeds:
            # Each line names the command and commit that measured it, as every results file does.
            row = run_one(parts, name, overrides, seed, args.reference_threshold) | {"command": run["command"],
                                                                                    "commit": run["commit"]}
            rows.append(row)
            line = json.dumps(row, sort_keys=False)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")
    if len(rows) > 1:
        print(summarise(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
