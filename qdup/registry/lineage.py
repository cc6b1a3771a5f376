"""Lineage queries over the store: version tables, one version's ancestry, a dataset's descendants."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from qdup.errors import ConfigError
from qdup.registry.store import ArtifactStore

_HEX = re.compile(r"^[0-9a-f]{4,64}$")


def version_row(manifest: dict[str, Any], aliases: list[str]) -> dict[str, Any]:
    return {
        "id": manifest["id"],
        "created": manifest["created"],
        "dataset_sha256": manifest["dataset"]["sha256"],
        "source": manifest["dataset"]["source"],
        "metrics": manifest["metrics"]["test"],
        "threshold": manifest["threshold"]["value"],
        "aliases": aliases,
        "flow_run_id": manifest.get("prefect", {}).get("flow_run_id"),
    }


def version_rows(store: ArtifactStore) -> list[dict[str, Any]]:
    """Every visible version, oldest first, as JSON-ready rows."""
    aliases = store.aliases()
    return [
        version_row(store.manifest(v), sorted(a for a, t in aliases.items() if t == v)) for v in store.versions()
    ]


def versions_from_dataset(store: ArtifactStore, sha256_prefix: str) -> list[dict[str, Any]]:
    prefix = sha256_prefix.lower()
    if not _HEX.fullmatch(prefix):
        raise ConfigError(f"invalid dataset sha256 prefix {sha256_prefix!r}: give 4 to 64 hex digits")
    return [row for row in version_rows(store) if row["dataset_sha256"].startswith(prefix)]


def versions_from_feedback(store: ArtifactStore, sha256_prefix: str) -> list[dict[str, Any]]:
    """Every version trained with the feedback snapshot whose sha256 starts with `sha256_prefix`."""
    prefix = sha256_prefix.lower()
    if not _HEX.fullmatch(prefix):
        raise ConfigError(f"invalid feedback snapshot sha256 prefix {sha256_prefix!r}: give 4 to 64 hex digits")
    aliases = store.aliases()
    rows = []
    for v in store.versions():
        manifest = store.manifest(v)
        if ((manifest.get("feedback") or {}).get("snapshot_sha256") or "").startswith(prefix):
            rows.append(version_row(manifest, sorted(a for a, t in aliases.items() if t == v)))
    return rows


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def versions_table(rows: list[dict[str, Any]]) -> str:
    header = ["id", "created", "dataset", "roc_auc", "accuracy", "f1", "aliases"]
    lines = [header]
    for r in rows:
        m = r["metrics"]
        lines.append(
            [r["id"], r["created"][:19], r["dataset_sha256"][:12], _fmt(m["roc_auc"]), _fmt(m["accuracy"]), _fmt(m["f1"]), ",".join(r["aliases"])]
        )
    return render_table(lines[0], lines[1:])


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table drawn by rich (no colour codes, so it pipes and greps cleanly)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, box=None, pad_edge=False, show_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*row)
    console = Console(width=400, no_color=True, color_system=None, force_terminal=False, record=True, file=io.StringIO())
    console.print(table)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def lineage_dict(manifest: dict[str, Any]) -> dict[str, Any]:
    """The chain source -> dataset -> validation -> splits -> vocabulary -> model -> evaluation -> aliases."""
    return {
        "version": manifest["id"],
        "created": manifest["created"],
        "source": manifest["dataset"]["source"],
        "dataset": manifest["dataset"],
        "validation": manifest["validation"],
        "splits": {k: v for k, v in manifest["splits"].items() if not k.startswith("_")},
        "split_plan": manifest["splits"].get("_plan"),
        "vocabulary": manifest["vocabulary"],
        "model": {k: v for k, v in manifest["model"].items() if k != "history"},
        "evaluation": {"threshold": manifest["threshold"], "metrics": manifest["metrics"]},
        "aliases": manifest.get("aliases", []),
        "feedback": manifest.get("feedback"),
        "compared_against": manifest.get("compared_against"),
        "code": manifest["code"],
        "libraries": manifest["libraries"],
        "parameters": manifest["parameters"],
        "prefect": manifest.get("prefect"),
        "files": manifest["files"],
    }


def lineage_text(manifest: dict[str, Any]) -> str:
    d = lineage_dict(manifest)
    code = d["code"]
    t = d["evaluation"]["metrics"]["test"]
    lines = [
        f"version      {d['version']}  (created {d['created'][:19]}, aliases: {', '.join(d['aliases']) or '-'})",
        f"source       {d['source']}",
        f"  dataset    sha256 {d['dataset']['sha256']}  ({d['dataset']['bytes']:,} bytes)",
        f"  validation {d['validation']['suite']}: passed on {d['validation']['rows']:,} rows",
    ]
    for name, s in d["splits"].items():
        lines.append(f"  split      {name:<12} {s['rows']:>8,} rows  sha256 {s['content_sha256']}")
    if d["feedback"]:
        fb = d["feedback"]
        lines.append(f"  feedback   snapshot sha256 {fb['snapshot_sha256']}  ({fb['rows']:,} rows, {fb['labels']['duplicate']:,} "
                     f"duplicate, {fb['labels']['not_duplicate']:,} not; {fb['conflicting_pairs']:,} conflicting pairs; "
                     f"+{fb['added']['train']:,} train, +{fb['added']['negatives']:,} negatives, "
                     f"{fb['held_out_test_question']:,} held out: a question test holds)")
    lines += [
        f"  vocabulary {d['vocabulary']['size']:,} tokens  sha256 {d['vocabulary']['sha256']}",
        f"  model      encoder sha256 {d['model']['encoder_sha256']}  best epoch {d['model']['best_epoch']}",
        f"  evaluation threshold {d['evaluation']['threshold']['value']:.4f} (chosen on {d['evaluation']['threshold']['chosen_on']}); "
        f"test roc_auc {_fmt(t['roc_auc'])} accuracy {_fmt(t['accuracy'])} f1 {_fmt(t['f1'])}",
        f"code         qdup {code['version']} commit {code['git_commit'] or '-'} dirty={code['git_dirty']}",
        f"prefect      flow run {d['prefect'].get('flow_run_name')} ({d['prefect'].get('flow_run_id')}) deployment {d['prefect'].get('deployment')}",
        "parameters   " + json.dumps(d["parameters"], sort_keys=True),
    ]
    return "\n".join(lines)


def show_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, default=str)
