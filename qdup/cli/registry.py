"""Store-integrity commands: `qdup verify` checks published versions against their manifests' sha256."""

from __future__ import annotations

import argparse
import json

from qdup.cli.common import STORE_HELP, add_command, add_model_option, open_store, resolve_version, settle_model
from qdup.errors import QdupError


def cmd_verify(args: argparse.Namespace) -> int:
    if args.all and (args.model or args.ref):
        raise QdupError("give --model VERSION or --all, not both")
    store = open_store(args)
    versions = store.versions() if args.all else [resolve_version(store, settle_model(args))]
    aliases = store.aliases()
    report = [
        {"version": v, "aliases": sorted(a for a, t in aliases.items() if t == v), "problems": store.verify(v)}
        for v in versions
    ]
    damaged = [r for r in report if r["problems"]]
    if args.json:
        print(json.dumps({"store": store.url, "checked": len(report), "damaged": len(damaged), "versions": report}, indent=2))
    else:
        for r in damaged:
            named = f" ({', '.join(r['aliases'])})" if r["aliases"] else ""
            print(f"DAMAGED {r['version']}{named}: {'; '.join(r['problems'])}")
        print(f"{len(report)} version(s) checked, {len(damaged)} damaged" + ("" if damaged else ": every file matches its manifest"))
    return 2 if damaged else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "verify", "check versions' files against the sha256 in their manifests (exit 2 when any is damaged)",
                    ["qdup verify", "qdup verify -m latest", "qdup verify --all --json"], cmd_verify)
    add_model_option(p, positional=True)
    p.add_argument("--all", action="store_true", help="every published version")
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable report")
