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

from qdup.cli.common import STORE_HELP, Parser, add_command, add_model_option, export_folder, open_store, require_extra, resolve_version, settle_model
from qdup.cli.sources import check_source
from qdup.config import STAGES, RetrainConfig, load_config_file
from qdup.errors import QdupError
from qdup.runtime import VERBOSE, apply_tf_thread_defaults

# Modules with a `register(subparsers)` function adding their commands.
COMMAND_MODULES: tuple[str, ...] = ("qdup.cli.registry", "qdup.cli.serve", "qdup.cli.search", "qdup.cli.release", "qdup.cli.feedback")


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
    # PREFECT_HOME creates the database, which on a busy small machine can outlast Prefect's default timeout.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # Prefect creates PREFECT_HOME without its parents, then fails to open its database there.
    if os.environ.get("PREFECT_HOME"):
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from qdup.data.demo import write_demo_tsv

    info = write_demo_tsv(Path(args.out), rows=args.rows, seed=args.seed)
    print(f"wrote {info['rows']:,} pairs ({info['duplicates']:,} duplicates) to {info['path']} sha256={info['sha256']}")
    return 0


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
    feedback = {"enabled": True} if getattr(args, "feedback", False) else {}
    for section, values in (("fetch", fetch), ("split", split), ("train", train), ("feedback", feedback)):
        if values:
            base[section] = {**base.get(section, {}), **values}
    return RetrainConfig.model_validate({**base, **overrides})


def cmd_run(args: argparse.Namespace) -> int:
    require_extra("pipeline", "run")
    config = build_config(args)  # before the slow imports: a bad config fails at once
    check_source(config.fetch.source)
    from qdup.cli.progress import run_with_progress

    outputs = run_with_progress(config, verbose=args.verbose, debug=args.debug, quiet=args.quiet)
    print("outputs:")
    for name, path in outputs.items():
        print(f"  {name:<10} {path}")
    from qdup.cli.progress import summary_line

    aliases = None
    if outputs.get("version") and outputs.get("published") != "true":  # an identical version: is it production?
        from qdup.registry.store import ArtifactStore

        aliases = ArtifactStore(config.publish.store_url, registry_url=config.publish.registry_url).aliases_of(outputs["version"])
    print(summary_line(outputs, aliases))
    return 0


def resolve_model_path(text: str, store_url: str | None = None) -> Path:
    """An export folder, a folder holding one (`model/`), or a version id or alias in the store."""
    path = Path(text).expanduser()
    if (folder := export_folder(text)) is not None:
        return folder
    if path.exists():
        return path
    if "/" not in text:
        from qdup.registry.store import ArtifactStore

        store = ArtifactStore(store_url)
        return store.open_version(resolve_version(store, text)) / "model"
    raise QdupError(f"--model {text}: no such export folder (or give a version id or alias; list them with: qdup versions)")


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
    settle_model(args)
    if args.pairs:
        if args.questions:
            raise QdupError("give either two questions or --pairs FILE, not both")
        if not args.out:
            raise QdupError("--pairs needs --out FILE.parquet")
        if not Path(args.pairs).is_file():
            raise QdupError(f"--pairs {args.pairs}: no such file (a TSV with columns question1, question2)")
    elif len(args.questions) != 2:
        raise QdupError(f'give exactly two questions (got {len(args.questions)}): qdup predict "Q1?" "Q2?", '
                        "or --pairs FILE.tsv --out FILE.parquet")
    else:
        for i, question in enumerate(args.questions, start=1):
            if not question.strip():
                raise QdupError(f'question {i} is empty; give two questions: qdup predict "How do I learn Python?" '
                                '"What is the best way to learn Python?"')
    # The pairs file is read, and the version found (its files checked), before the model loads: a bad file or a
    # wrong name answers at once.
    pairs = None
    if args.pairs:
        from qdup.serving.questions import read_pairs

        try:
            pairs = read_pairs(Path(args.pairs))
        except QdupError as exc:
            raise QdupError(f"{exc}; fix it, then: qdup predict --pairs {args.pairs} --out {args.out}") from None
    model_path = resolve_model_path(args.model, args.store)
    from qdup.serving.predictor import load_inference, score_file

    predictor = load_inference(model_path)
    if args.pairs:
        with progress_bar("scoring") as update:
            info = score_file(predictor, Path(args.pairs), Path(args.out), chunk_size=args.chunk_size, progress=update,
                              pairs=pairs)
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
        out |= {"reranker_score": float(got["reranker_score"][0]), "reranker_threshold": predictor.reranker.threshold}
    out["decided_by"] = predictor.decided_by
    if args.json:
        print(json.dumps(out))
    else:
        print(decision_line(out))
    return 0


def decision_line(out: dict[str, Any]) -> str:
    """`duplicate=false (reranker 0.0300 < 0.4400) similarity=0.7953 threshold=0.7101`: the decision and the score that made it first."""
    score, threshold = ((out["reranker_score"], out["reranker_threshold"]) if out["decided_by"] == "reranker"
                        else (out["similarity"], out["threshold"]))
    name = "reranker" if out["decided_by"] == "reranker" else "encoder cosine"
    rest = " ".join(f"{k}={v:.4f}" for k, v in out.items() if k not in ("duplicate", "decided_by"))
    return f"duplicate={str(out['duplicate']).lower()} ({name} {score:.4f} {'>=' if out['duplicate'] else '<'} {threshold:.4f}) {rest}"


def _store(args: argparse.Namespace):
    return open_store(args)


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
    version = resolve_version(store, settle_model(args))
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
    if args.dataset and (args.model or args.ref):
        raise QdupError("give --model VERSION or --dataset SHA256_PREFIX, not both")
    if args.feedback and (args.model or args.ref or args.dataset):
        raise QdupError("give --model VERSION, --dataset SHA256_PREFIX or --feedback SHA256_PREFIX, one of them")
    # From data back to versions: a dataset, or a feedback snapshot, to every version built with it.
    for prefix, find, what in ((args.dataset, lineage.versions_from_dataset, "built from a dataset"),
                               (args.feedback, lineage.versions_from_feedback, "trained with a feedback snapshot")):
        if prefix:
            rows = find(store, prefix)
            if args.json:
                _print_json(rows)
            else:
                print(lineage.versions_table(rows) if rows else f"no version was {what} with sha256 {prefix}*")
            return 0
    version = resolve_version(store, settle_model(args))
    manifest = store.manifest(version) | {"aliases": store.aliases_of(version)}
    if args.json:
        _print_json(lineage.lineage_dict(manifest))
    else:
        print(lineage.lineage_text(manifest))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from qdup.registry.store import actor

    store = _store(args)
    version = resolve_version(store, settle_model(args))
    entry = store.promote(version, actor(), why=args.why)
    print(f"production: {entry['from']} -> {entry['to']}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from qdup.registry.store import actor

    entry = _store(args).rollback(actor())
    print(f"production rolled back: {entry['from']} -> {entry['to']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    require_extra("pipeline", "serve")
    # The file is checked before Prefect is imported, so that a typo fails in a moment.
    config = RetrainConfig.model_validate(load_config_file(args.config)) if args.config else None
    from deployments.retrain import serve

    serve(config, feedback=True if args.feedback else None)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="qdup",
        description="Duplicate-question detection: retrain, publish, predict, search and serve versioned models.",
        epilog="A version is named with --model/-m VERSION|ALIAS everywhere (default: production where that is safe).\n"
               "Every command has examples: qdup COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up messages, Prefect's log lines (qdup run) and search timings")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = add_command(sub, "demo-data", "write a generated data set in the Quora TSV format (for demos and tests)",
                       ["qdup demo-data demo.tsv --rows 20000"], cmd_demo_data)
    demo.add_argument("out", help="output TSV path")
    demo.add_argument("--rows", type=int, default=404_290, help="question pairs to write (default: %(default)s, the release's size)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generator (default: %(default)s)")

    run = add_command(sub, "run", "run the retrain flow: fetch, validate, train, evaluate, publish", [
        "qdup run --source demo.tsv --n-train 0.75 --n-test 0.25",
        "qdup run --source data.tsv --until evaluate --epochs 5",
        "qdup run --config my-config.json",
    ], cmd_run)
    run.add_argument("--source", help="http(s):// or file:// URL, or a local path (default: the canonical Quora URL)")
    run.add_argument("--sha256", help="expected sha256 of the source file")
    run.add_argument("--refresh", action="store_true", help="download the source even if the cache holds it")
    run.add_argument("--until", choices=STAGES, metavar="STAGE",
                     help=f"stop after this stage, one of: {', '.join(STAGES)} (default: publish)")
    run.add_argument("--n-train", type=_count_or_fraction, help="training-range rows: a count, or a fraction of all rows")
    run.add_argument("--n-test", type=_count_or_fraction, help="test rows: a count, or a fraction of all rows")
    run.add_argument("--epochs", type=int, help="most training epochs (early stopping may end sooner; default 50)")
    run.add_argument("--seed", type=int, help="seed of every random choice (default 42)")
    run.add_argument("--config", help="JSON file with RetrainConfig fields; flags override it")
    run.add_argument("--quiet", action="store_true",
                     help="the stage lines only, without the warnings shown under them (the run's log keeps them)")
    run.add_argument("--feedback", action="store_true",
                     help="train also with the store's feedback (POST /v1/feedback, the page's ✓ / ✗): a snapshot named by its "
                          "sha256 joins train and negatives, never test")

    predict = add_command(sub, "predict", "score a question pair, or a TSV of pairs, with a published version", [
        'qdup predict "How do I learn Python?" "What is the best way to learn Python?"',
        "qdup predict -m latest --pairs pairs.tsv --out scored.parquet",
    ], cmd_predict)
    add_model_option(predict, folder=True)
    predict.add_argument("--store", help=STORE_HELP)
    predict.add_argument("questions", nargs="*", help="two questions")
    predict.add_argument("--pairs", help="TSV with columns question1, question2 and optional id")
    predict.add_argument("--out", help="Parquet output for --pairs")
    predict.add_argument("--chunk-size", type=int, default=16384, help="pairs per scoring chunk (--pairs; default: %(default)s)")
    predict.add_argument("--json", action="store_true", help="machine-readable output")

    def store_command(name: str, summary: str, examples: list[str], func) -> argparse.ArgumentParser:
        p = add_command(sub, name, summary, examples, func)
        p.add_argument("--store", help=STORE_HELP)
        return p

    versions = store_command("versions", "list published versions", ["qdup versions", "qdup versions --json"], cmd_versions)
    versions.add_argument("--json", action="store_true", help="machine-readable output")
    show = store_command("show", "show one version's manifest", ["qdup show", "qdup show -m latest --json"], cmd_show)
    add_model_option(show, positional=True)
    show.add_argument("--json", action="store_true", help="the manifest as JSON")
    lineage = store_command("lineage", "trace a version to its data, or a dataset to its versions",
                            ["qdup lineage", "qdup lineage -m latest", "qdup lineage --dataset ca37e336"], cmd_lineage)
    add_model_option(lineage, positional=True)
    lineage.add_argument("--dataset", metavar="SHA256_PREFIX", help="every version built from this dataset")
    lineage.add_argument("--feedback", metavar="SHA256_PREFIX", help="every version trained with this feedback snapshot")
    lineage.add_argument("--json", action="store_true", help="machine-readable output")
    promote = store_command("promote", "point production at a version",
                            ['qdup promote -m 20261123T010203456Z-a1b2c3 --why "better on the new data"'], cmd_promote)
    add_model_option(promote, default=None, positional=True)
    promote.add_argument("--why", default="manual promotion", help="reason kept in the alias history (default: %(default)s)")
    store_command("rollback", "point production back at the previous production", ["qdup rollback"], cmd_rollback)
    serve = add_command(sub, "serve", "serve the retrain flow with its weekly schedule (no work pool needed)",
                        ["qdup serve", "qdup serve --config my-config.json"], cmd_serve)
    serve.add_argument("--config", help="JSON file with the RetrainConfig fields the schedule sets; the rest stay code defaults")
    serve.add_argument("--feedback", action="store_true", help="every scheduled run trains with the store's feedback too")
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
        # No TensorFlow here: each command checks its arguments and finds its version first, then starts it.
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
