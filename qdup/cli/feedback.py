"""`qdup feedback stats` and `qdup feedback export`: the judgements people made of served answers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from qdup.cli.common import STORE_HELP, add_command, open_store, resolve_version
from qdup.errors import QdupError


def version_stats(store: Any, log: Any, version: str, counts: dict[str, int], resamples: int, seed: int) -> dict[str, Any]:
    """One version's counts, and its served decision's agreement with the labels received since it was promoted
    (all of its labels when it never was), scored by the version's own predictor."""
    from qdup.registry.feedback import agreement, promoted_at

    since = promoted_at(store, version)
    frame = log.frame(since=since, version=version)
    row: dict[str, Any] = {"version": version, "counts": counts, "since": since, "aliases": store.aliases_of(version)}
    if not len(frame):
        row["agreement"] = agreement(frame, [])
        return row
    from qdup.serving.predictor import load_inference

    predictor = load_inference(store.open_version(version) / "model")
    decided = predictor.decide(frame["question1"].tolist(), frame["question2"].tolist())["duplicate"]
    row["agreement"] = agreement(frame, decided, resamples=resamples, seed=seed)
    return row


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def cmd_stats(args: argparse.Namespace) -> int:
    from qdup.registry.feedback import FeedbackLog
    from qdup.registry.lineage import render_table

    store = open_store(args)
    log = FeedbackLog(store)
    counts = log.counts()
    if args.model:
        version = resolve_version(store, args.model)
        counts = {version: counts.get(version, {"duplicate": 0, "not_duplicate": 0})}
    rows = [version_stats(store, log, v, c, args.resamples, args.seed) for v, c in counts.items()]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no feedback yet: people record it on the page (✓ / ✗) or with POST /v1/feedback")
        return 0
    table = []
    for r in rows:
        a = r["agreement"]
        interval = f"[{_pct(a['low'])}, {_pct(a['high'])}]" if a.get("low") is not None else "-"
        table.append([r["version"], ",".join(r["aliases"]) or "-", str(r["counts"]["duplicate"]), str(r["counts"]["not_duplicate"]),
                      (r["since"] or "-")[:19], str(a["n"]), _pct(a["agreement"]), interval])
    print(render_table(["version", "aliases", "duplicate", "not_duplicate", "promoted", "scored", "agreement", "95% interval"], table))
    print("agreement: the share of labels received since the version's promotion (all of its labels if never promoted) that its "
          f"served decision matches; cluster bootstrap over pairs sharing a question ({args.resamples} resamples, seed {args.seed})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from qdup.data.feedback import write_feedback
    from qdup.registry.feedback import FeedbackLog, parse_since

    out = Path(args.out)
    if out.suffix != ".parquet":
        raise QdupError(f"--out {args.out}: give a .parquet file name")
    if not out.parent.is_dir():
        raise QdupError(f"--out {args.out}: no folder {out.parent}")
    store = open_store(args)
    since = parse_since(args.since) if args.since else None
    version = resolve_version(store, args.model) if args.model else None
    frame = FeedbackLog(store).frame(since=since, version=version)
    info = write_feedback(frame, out)
    print(f"wrote {info['rows']:,} feedback rows ({info['labels']['duplicate']:,} duplicate, {info['labels']['not_duplicate']:,} "
          f"not) to {out} sha256={info['sha256']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "feedback", "people's judgements of served answers (see: qdup feedback stats --help)",
                    ["qdup feedback stats", "qdup feedback export --since 2026-12-01 --out feedback.parquet"])
    sub = p.add_subparsers(dest="feedback_command", required=True, metavar="SUBCOMMAND",
                           help="stats: counts and agreement by version; export: rows to a Parquet file")
    stats = add_command(sub, "stats", "feedback counts by version and label, and each version's agreement with them",
                        ["qdup feedback stats", "qdup feedback stats -m production --json"], cmd_stats)
    stats.add_argument("-m", "--model", metavar="VERSION", help="one version id or alias (default: every version with feedback)")
    stats.add_argument("--store", help=STORE_HELP)
    stats.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the interval (default: %(default)s)")
    stats.add_argument("--seed", type=int, default=0, help="seed of the resamples (default: %(default)s)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    export = add_command(sub, "export", "write feedback rows to a Parquet file",
                         ["qdup feedback export --out feedback.parquet", "qdup feedback export --since 2026-12-01 --out new.parquet"],
                         cmd_export)
    export.add_argument("--out", required=True, help="the .parquet file to write")
    export.add_argument("--since", help="only rows at or after this ISO date/time (UTC)")
    export.add_argument("-m", "--model", metavar="VERSION", help="only rows judging this version's answers")
    export.add_argument("--store", help=STORE_HELP)
