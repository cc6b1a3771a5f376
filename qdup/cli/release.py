"""Release commands: `qdup card` prints a version's model card, `qdup reproduce` re-runs a version and compares."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from qdup.cli.common import STORE_HELP, add_command, add_model_option, open_store, require_extra, resolve_version, settle_model
from qdup.errors import QdupError

# The stages a reproduction re-runs (publishing is left out: it would only find the version itself).
REPRODUCED_STAGES = ("validate", "drift", "splits", "vocab", "train", "evaluate", "export")


def cmd_card(args: argparse.Namespace) -> int:
    store = open_store(args)
    version = resolve_version(store, settle_model(args))
    from qdup.registry.card import model_card
    from qdup.registry.publish import CARD_FILE

    manifest = store.manifest(version)
    if CARD_FILE in (manifest.get("files") or {}):
        print((store.open_version(version) / CARD_FILE).read_text(), end="")
    else:
        # A version from before cards were kept: made now from its manifest.
        print(model_card(manifest), end="")
    return 0


def reproduced_manifest(cfg: Any, outputs: dict[str, str], original: dict[str, Any]) -> dict[str, Any]:
    """The lineage manifest the re-run stages would publish (fetch facts from the original: the dataset is pinned by sha256)."""
    from qdup.fileio import read_json
    from qdup.registry.publish import GateDecision, lineage_manifest
    from qdup.stagecache import MANIFEST, StageResult

    stages: dict[str, StageResult] = {}
    # The reranker runs (and is compared) when the recorded configuration enabled it.
    for name in REPRODUCED_STAGES + (("rerank",) if "rerank" in outputs else ()):
        if name not in outputs:
            raise QdupError(f"the reproduction stopped before stage {name!r}")
        record = read_json(Path(outputs[name]) / MANIFEST)
        stages[name] = StageResult(
            stage=name, key=record["key"], path=Path(outputs[name]), cached=False, manifest=record["manifest"], seconds=record.get("seconds")
        )
    ds = original["dataset"]
    fetch = {"source": ds["source"], "sha256": ds["sha256"], "md5": ds.get("md5"), "size": ds.get("bytes")}
    stages["fetch"] = StageResult(stage="fetch", key=ds["sha256"], path=Path(outputs["fetch"]), cached=True, manifest=fetch)
    decision = GateDecision(False, "reproduction: never promoted", None, 0.0, None, None)
    return {"id": "reproduction", **lineage_manifest(cfg, stages, {}, decision)}


def cmd_reproduce(args: argparse.Namespace) -> int:
    require_extra("pipeline", "reproduce")
    store = open_store(args)
    version = resolve_version(store, settle_model(args))
    from qdup.registry.reproduce import compare_reproduction, reproduction_config, reproduction_text

    original = store.manifest(version)
    cfg = reproduction_config(original)
    cfg = cfg.model_copy(update={"until": "export"})
    if not cfg.train.deterministic:
        print(f"note: {version} was trained with train.deterministic=false; its metrics may differ in the last digits")
    # Stage outputs are cached by key: re-using them would "reproduce" anything. A fresh stage root
    # makes every stage run again; the dataset cache (content-addressed, sha256-checked) is still read.
    runs = Path(tempfile.mkdtemp(prefix="qdup-reproduce-"))
    previous = os.environ.get("QDUP_RUNS_DIR")
    os.environ["QDUP_RUNS_DIR"] = str(runs)
    try:
        from qdup.cli.progress import run_with_progress

        outputs = run_with_progress(cfg, verbose=getattr(args, "verbose", False), debug=getattr(args, "debug", False))
        result = compare_reproduction(original, reproduced_manifest(cfg, outputs, original))
    finally:
        if previous is None:
            os.environ.pop("QDUP_RUNS_DIR", None)
        else:
            os.environ["QDUP_RUNS_DIR"] = previous
        if args.keep:
            print(f"reproduction stages kept in {runs}")
        else:
            shutil.rmtree(runs, ignore_errors=True)
    result["original"] = version
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"reproduction of {version} (dataset {original['dataset']['sha256'][:16]}, from the recorded configuration)")
        print(reproduction_text(result))
    return 0 if result["reproduced"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "card", "print a version's model card (Markdown)", ["qdup card", "qdup card -m latest > card.md"],
                    cmd_card)
    add_model_option(p, positional=True)
    p.add_argument("--store", help=STORE_HELP)

    p = add_command(
        subparsers, "reproduce",
        "re-run a version from its recorded configuration and dataset in a fresh stage folder; "
        "exit 0 when splits, training and metrics match exactly, 1 when not",
        ["qdup reproduce", "qdup reproduce -m 20261123T010203456Z-a1b2c3 --json"], cmd_reproduce,
    )
    add_model_option(p, positional=True)
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable comparison")
    p.add_argument("--keep", action="store_true", help="keep the re-run's stage folder (printed)")
