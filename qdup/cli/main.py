"""The `qdup` parser and the pipeline commands (demo-data, run, predict, versions, ...)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qdup.config import STAGES, RetrainConfig
from qdup.errors import ConfigError, QdupError
from qdup.runtime import VERBOSE, apply_tf_thread_defaults, import_tensorflow_quietly

# Commands that load a model: TensorFlow starts before them, without its start-up noise.
TENSORFLOW_COMMANDS = frozenset({"predict", "search", "index", "mine", "serve-model", "reproduce"})
# Modules with a `register(subparsers)` function adding their commands.
COMMAND_MODULES: tuple[str, ...] = ("qdup.cli.registry", "qdup.cli.serve", "qdup.cli.search", "qdup.cli.release")


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
    # 3: also TensorFlow's C++ ERROR lines about optional CPU paths; its real errors reach Python as exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    apply_tf_thread_defaults()
    # Without a Prefect server, `qdup run` starts a temporary one; its first start on a fresh
    # PREFECT_HOME creates the database, which on a busy 2-core machine exceeds Prefect's 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # Prefect creates PREFECT_HOME without its parents, then fails to open its database there.
    if os.environ.get("PREFECT_HOME"):
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from qdup.data.demo import write_demo_tsv

    info = write_demo_tsv(Path(args.out), rows=args.rows, seed=args.seed)
    print(f"wrote {info['rows']:,} pairs ({info['duplicates']:,} duplicates) to {info['path']} sha256={info['sha256']}")
    return 0


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The RetrainConfig fields in a JSON file, checked; QdupError naming the file and the problem otherwise."""
    from pydantic import ValidationError

    name = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read it ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a JSON object of RetrainConfig fields, got {type(data).__name__}")
    try:
        RetrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown field '{where}'")
            else:
                problems.append(f"{where}: {err['msg']}")
        raise ConfigError(f"{name}: {'; '.join(problems)}") from None
    return data


def build_config(args: argparse.Namespace) -> RetrainConfig:
    # Flags override the config file only when given; unset, the file's (or the default) value stands.
    overrides: dict[str, Any] = {k: v for k, v in (("seed", args.seed), ("until", args.until)) if v is not None}
    fetch: dict[str, Any] = {}
    if args.source:
        source = args.source
        if "://" not in source:
            source = str(Path(source).expanduser().resolve())
        fetch["source"] = source
    if args.sha256:
        fetch["sha256"] = args.sha256
    if args.refresh:
        fetch["refresh"] = True
    split: dict[str, Any] = {}
    if args.n_train is not None:
        split["n_train"] = args.n_train
    if args.n_test is not None:
        split["n_test"] = args.n_test
    train: dict[str, Any] = {}
    if args.epochs is not None:
        train["epochs"] = args.epochs
    base = load_config_file(args.config) if args.config else {}
    for section, values in (("fetch", fetch), ("split", split), ("train", train)):
        if values:
            base[section] = {**base.get(section, {}), **values}
    return RetrainConfig.model_validate({**base, **overrides})


def cmd_run(args: argparse.Namespace) -> int:
    config = build_config(args)  # before the slow imports: a bad config fails at once
    from flows.retrain import retrain

    outputs = retrain(config)
    print("outputs:")
    for name, path in outputs.items():
        print(f"  {name:<10} {path}")
    return 0


def resolve_model_path(text: str, store_url: str | None = None) -> Path:
    """An export folder, a folder holding one (`model/`), or a version id or alias in the store."""
    path = Path(text).expanduser()
    if (path / "model" / "inference.keras").is_file():
        return path / "model"
    if path.exists():
        return path
    if "/" not in text:
        from qdup.registry.store import ArtifactStore

        return ArtifactStore(store_url).open_version(text) / "model"
    raise QdupError(f"--model {text}: no such export folder")


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields `update(done, total)`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def cmd_predict(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    from qdup.serving.predictor import load_inference, score_file

    if args.pairs:
        if args.questions:
            raise QdupError("give either two questions or --pairs FILE, not both")
        if not args.out:
            raise QdupError("--pairs needs --out FILE.parquet")
    elif len(args.questions) != 2:
        raise QdupError(f"give exactly two questions (got {len(args.questions)}), or --pairs FILE.tsv --out FILE.parquet")
    predictor = load_inference(resolve_model_path(args.model, args.store))
    if args.pairs:
        with progress_bar("scoring") as update:
            info = score_file(predictor, Path(args.pairs), Path(args.out), chunk_size=args.chunk_size, progress=update)
        if args.json:
            print(json.dumps(info, default=str))
        else:
            print(f"scored {info['rows']:,} pairs ({info['duplicates']:,} duplicates) -> {info['path']}")
        return 0
    q1, q2 = args.questions
    got = predictor.decide([q1], [q2])
    similarity, duplicate = float(got["similarity"][0]), bool(got["duplicate"][0])
    out = {"similarity": similarity, "threshold": predictor.threshold, "duplicate": duplicate}
    if got["reranker_score"] is not None:
        out |= {"reranker_score": float(got["reranker_score"][0]), "reranker_threshold": predictor.decision_threshold}
    if args.json:
        print(json.dumps(out))
    else:
        print(" ".join(f"{k}={str(v).lower() if isinstance(v, bool) else f'{v:.4f}'}" for k, v in out.items()))
    return 0


def _store(args: argparse.Namespace):
    from qdup.registry.store import ArtifactStore

    return ArtifactStore(args.store)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def cmd_versions(args: argparse.Namespace) -> int:
    from qdup.registry import lineage

    rows = lineage.version_rows(_store(args))
    if args.json:
        _print_json(rows)
    else:
        print(lineage.versions_table(rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args)
    version = store.resolve(args.ref)
    manifest = store.manifest(version) | {"aliases": store.aliases_of(version)}
    if args.json:
        _print_json(manifest)
    else:
        from qdup.registry import lineage

        print(lineage.show_text(manifest))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from qdup.registry import lineage

    store = _store(args)
    if args.dataset:
        rows = lineage.versions_from_dataset(store, args.dataset)
        if args.json:
            _print_json(rows)
        else:
            print(lineage.versions_table(rows) if rows else f"no version was built from a dataset with sha256 {args.dataset}*")
        return 0
    if not args.ref:
        raise QdupError("give a VERSION or ALIAS, or --dataset SHA256_PREFIX")
    version = store.resolve(args.ref)
    manifest = store.manifest(version) | {"aliases": store.aliases_of(version)}
    if args.json:
        _print_json(lineage.lineage_dict(manifest))
    else:
        print(lineage.lineage_text(manifest))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from qdup.registry.store import actor

    entry = _store(args).promote(args.ref, actor(), why=args.why)
    print(f"production: {entry['from']} -> {entry['to']}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from qdup.registry.store import actor

    entry = _store(args).rollback(actor())
    print(f"production rolled back: {entry['from']} -> {entry['to']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # The file is checked before Prefect is imported, so that a typo fails in a moment.
    config = RetrainConfig.model_validate(load_config_file(args.config)) if args.config else None
    from deployments.retrain import serve

    serve(config)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qdup", description="Duplicate-question detection retraining pipeline.")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up messages too")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write a synthetic dataset in the Quora TSV format")
    demo.add_argument("out", help="output TSV path")
    demo.add_argument("--rows", type=int, default=404_290)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo_data)

    run = sub.add_parser("run", help="run the retrain flow")
    run.add_argument("--source", help="http(s):// or file:// URL, or a local path (default: the canonical Quora URL)")
    run.add_argument("--sha256", help="expected sha256 of the source file")
    run.add_argument("--refresh", action="store_true", help="download the source even if the cache holds it")
    run.add_argument("--until", choices=STAGES, help="stop after this stage (default: publish)")
    run.add_argument("--n-train", type=_count_or_fraction, help="training-range rows: a count, or a fraction of all rows")
    run.add_argument("--n-test", type=_count_or_fraction, help="test rows: a count, or a fraction of all rows")
    run.add_argument("--epochs", type=int)
    run.add_argument("--seed", type=int, help="seed of every random choice (default 42)")
    run.add_argument("--config", help="JSON file with RetrainConfig fields; flags override it")
    run.set_defaults(func=cmd_run)

    predict = sub.add_parser("predict", help="score a question pair, or a TSV of pairs, with an exported model")
    predict.add_argument("--model", required=True, help="a version id or alias (e.g. production), or an export folder")
    predict.add_argument("--store", help="store URL (default $QDUP_HOME/store)")
    predict.add_argument("questions", nargs="*", help="two questions")
    predict.add_argument("--pairs", help="TSV with columns question1, question2 and optional id")
    predict.add_argument("--out", help="Parquet output for --pairs")
    predict.add_argument("--chunk-size", type=int, default=16384, help="pairs per scoring chunk (--pairs)")
    predict.add_argument("--json", action="store_true", help="machine-readable output")
    predict.set_defaults(func=cmd_predict)

    def store_command(name: str, help_: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--store", help="store URL (default $QDUP_HOME/store)")
        p.set_defaults(func=func)
        return p

    versions = store_command("versions", "list published versions", cmd_versions)
    versions.add_argument("--json", action="store_true")
    show = store_command("show", "show one version's manifest", cmd_show)
    show.add_argument("ref", metavar="VERSION|ALIAS")
    show.add_argument("--json", action="store_true")
    lineage = store_command("lineage", "trace a version to its data, or a dataset to its versions", cmd_lineage)
    lineage.add_argument("ref", nargs="?", metavar="VERSION|ALIAS")
    lineage.add_argument("--dataset", metavar="SHA256_PREFIX", help="every version built from this dataset")
    lineage.add_argument("--json", action="store_true")
    promote = store_command("promote", "point production at a version", cmd_promote)
    promote.add_argument("ref", metavar="VERSION|ALIAS")
    promote.add_argument("--why", default="manual promotion")
    store_command("rollback", "point production back at the previous production", cmd_rollback)
    serve = sub.add_parser("serve", help="serve the retrain flow with its weekly schedule (no work pool needed)")
    serve.add_argument("--config", help="JSON file with the RetrainConfig fields the schedule sets; the rest stay code defaults")
    serve.set_defaults(func=cmd_serve)
    # Each area's commands live in their own module and add themselves here.
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def validation_message(exc: Exception) -> str:
    """A pydantic ValidationError as one line naming each field and its problem."""
    errors = exc.errors()  # type: ignore[attr-defined]
    parts = [f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in errors]
    return f"invalid configuration: {'; '.join(parts)}"


def main(argv: list[str] | None = None) -> int:
    _quiet_environment()
    args = make_parser().parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    try:
        if args.command in TENSORFLOW_COMMANDS:
            import_tensorflow_quietly()  # before any command module imports TensorFlow
        return args.func(args)
    except Exception as exc:
        from pydantic import ValidationError

        if args.debug:
            raise
        if isinstance(exc, QdupError):
            message, status = str(exc), 2
        elif isinstance(exc, ValidationError):
            message, status = validation_message(exc), 2
        else:  # a bug or an environment failure: name it; --debug shows where
            message, status = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1
        print(f"qdup: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
