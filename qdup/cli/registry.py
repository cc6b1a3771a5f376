"""Store-integrity commands: `qdup verify` checks published versions against their manifests' sha256."""

from __future__ import annotations

import argparse
import json

from qdup.errors import QdupError


def cmd_verify(args: argparse.Namespace) -> int:
    from qdup.registry.store import ArtifactStore

    if bool(args.ref) == bool(args.all):
        raise QdupError("give a VERSION or ALIAS, or --all (not both)")
    store = ArtifactStore(args.store)
    versions = store.versions() if args.all else [store.resolve(args.ref)]
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
    p = subparsers.add_parser(
        "verify", help="check versions' files against the sha256 in their manifests (exit 2 when any is damaged)"
    )
    p.add_argument("ref", nargs="?", metavar="VERSION|ALIAS")
    p.add_argument("--all", action="store_true", help="every published version")
    p.add_argument("--store", help="store URL (default $QDUP_HOME/store)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=cmd_verify)
