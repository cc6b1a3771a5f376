"""The `qdup` command line: demo-data, run, predict."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from qdup.config import STAGES, RetrainConfig
from qdup.errors import QdupError


def _count_or_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count nor a fraction") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _quiet_environment() -> None:
    # The closed network makes telemetry fail noisily; TensorFlow's C++ banner is noise too.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_demo_data(args: argparse.Namespace) -> int:
    from tasks.demo_data import write_demo_tsv

    info = write_demo_tsv(Path(args.out), rows=args.rows, seed=args.seed)
    print(f"wrote {info['rows']:,} pairs ({info['duplicates']:,} duplicates) to {info['path']} sha256={info['sha256']}")
    return 0


def build_config(args: argparse.Namespace) -> RetrainConfig:
    overrides: dict[str, Any] = {"seed": args.seed, "until": args.until}
    fetch: dict[str, Any] = {}
    if args.source:
        source = args.source
        if "://" not in source:
            source = str(Path(source).expanduser().resolve())
        fetch["source"] = source
    if args.sha256:
        fetch["sha256"] = args.sha256
    split: dict[str, Any] = {}
    if args.n_train is not None:
        split["n_train"] = args.n_train
    if args.n_test is not None:
        split["n_test"] = args.n_test
    train: dict[str, Any] = {}
    if args.epochs is not None:
        train["epochs"] = args.epochs
    if args.config:
        base = json.loads(Path(args.config).read_text())
    else:
        base = {}
    for section, values in (("fetch", fetch), ("split", split), ("train", train)):
        if values:
            base[section] = {**base.get(section, {}), **values}
    return RetrainConfig.model_validate({**base, **overrides})


def cmd_run(args: argparse.Namespace) -> int:
    from flows.retrain import retrain

    config = build_config(args)
    outputs = retrain(config)
    print("outputs:")
    for name, path in outputs.items():
        print(f"  {name:<10} {path}")
    return 0


def resolve_model_path(text: str) -> Path:
    """An export folder, or a stage folder holding one (`.../export/<key>` -> `.../model`)."""
    path = Path(text).expanduser()
    if (path / "model" / "inference.keras").is_file():
        return path / "model"
    if not path.exists():
        raise QdupError(f"--model {text}: no such export folder")
    return path


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    print(f"\rscoring [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}", end=end, file=sys.stderr, flush=True)


def cmd_predict(args: argparse.Namespace) -> int:
    from tasks.export import load_inference, score_file

    if args.pairs:
        if args.questions:
            raise QdupError("give either two questions or --pairs FILE, not both")
        if not args.out:
            raise QdupError("--pairs needs --out FILE.parquet")
    elif len(args.questions) != 2:
        raise QdupError(f"give exactly two questions (got {len(args.questions)}), or --pairs FILE.tsv --out FILE.parquet")
    predictor = load_inference(resolve_model_path(args.model))
    if args.pairs:
        info = score_file(predictor, Path(args.pairs), Path(args.out), batch_size=args.batch_size, progress=_progress_bar)
        if args.json:
            print(json.dumps(info, default=str))
        else:
            print(f"scored {info['rows']:,} pairs ({info['duplicates']:,} duplicates) -> {info['path']}")
        return 0
    q1, q2 = args.questions
    similarity = float(predictor.similarity([q1], [q2])[0])
    duplicate = similarity >= predictor.threshold
    if args.json:
        print(json.dumps({"similarity": similarity, "threshold": predictor.threshold, "duplicate": bool(duplicate)}))
    else:
        print(f"similarity={similarity:.4f} threshold={predictor.threshold:.4f} duplicate={str(duplicate).lower()}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qdup", description="Duplicate-question detection retraining pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write a synthetic dataset in the Quora TSV format")
    demo.add_argument("out", help="output TSV path")
    demo.add_argument("--rows", type=int, default=404_290)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo_data)

    run = sub.add_parser("run", help="run the retrain flow")
    run.add_argument("--source", help="http(s):// or file:// URL, or a local path (default: the canonical Quora URL)")
    run.add_argument("--sha256", help="expected sha256 of the source file")
    run.add_argument("--until", choices=STAGES, default="export", help="stop after this stage")
    run.add_argument("--n-train", type=_count_or_fraction, help="training-range rows: a count, or a fraction of all rows")
    run.add_argument("--n-test", type=_count_or_fraction, help="test rows: a count, or a fraction of all rows")
    run.add_argument("--epochs", type=int)
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--config", help="JSON file with RetrainConfig fields; flags override it")
    run.set_defaults(func=cmd_run)

    predict = sub.add_parser("predict", help="score a question pair, or a TSV of pairs, with an exported model")
    predict.add_argument("--model", required=True, help="export folder (the `model` folder printed by `qdup run`)")
    predict.add_argument("questions", nargs="*", help="two questions")
    predict.add_argument("--pairs", help="TSV with columns question1, question2 and optional id")
    predict.add_argument("--out", help="Parquet output for --pairs")
    predict.add_argument("--batch-size", type=int, default=4096)
    predict.add_argument("--json", action="store_true", help="machine-readable output")
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_environment()
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except QdupError as exc:
        print(f"qdup: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # pydantic.ValidationError and anything else: name it, exit non-zero
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            print(f"qdup: invalid configuration: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
