"""Comparing a reproduction with the version it reproduces: split hashes, vocabulary, training and metrics, exactly.

Pure comparison of two manifests (`qdup.registry.publish.lineage_manifest` shape); re-running the
flow is the caller's job. Exact means equal floats: on the same machine, with op determinism on,
a re-run from the recorded configuration and dataset gives bit-identical metrics, so any
difference is listed, however small.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from qdup.config import RetrainConfig
from qdup.errors import ConfigError

# Per-epoch wall time differs between any two runs; it is not a result.
TIMING_KEYS = frozenset({"seconds"})


def reproduction_config(manifest: dict[str, Any]) -> RetrainConfig:
    """The version's recorded configuration, pinned to its dataset (sha256) and never promoting.

    Re-running it must not be served from the stage cache (every stage would trivially "match"):
    run it in a fresh QDUP_HOME or with caching off.
    """
    version = manifest.get("id", "the version")
    params = manifest.get("parameters")
    if not isinstance(params, dict):
        raise ConfigError(f"{version}: the manifest records no parameters; it cannot be reproduced")
    sha = (manifest.get("dataset") or {}).get("sha256")
    if not sha:
        raise ConfigError(f"{version}: the manifest records no dataset sha256; it cannot be reproduced")
    try:
        cfg = RetrainConfig.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{version}: recorded parameter {where}: {first['msg']} (recorded by another qdup version?)") from None
    fetch = cfg.fetch.model_copy(update={"sha256": sha})
    publish = cfg.publish.model_copy(update={"promote": False})
    update: dict[str, Any] = {"fetch": fetch, "publish": publish}
    snapshot = (manifest.get("feedback") or {}).get("snapshot_sha256")
    if snapshot:  # the feedback it trained with, not the store's feedback at reproduction time
        update["feedback"] = cfg.feedback.model_copy(update={"snapshot": snapshot})
    return cfg.model_copy(update=update)


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/lists to {"a.b[0].c": value}, skipping timing keys."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k in sorted(obj):
            if k in TIMING_KEYS:
                continue
            out.update(_leaves(obj[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, x in enumerate(obj):
            out.update(_leaves(x, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) != isinstance(b, bool):  # True == 1 in Python, but not in a manifest
        return False
    return a == b


def _diff(original: Any, new: Any) -> dict[str, Any]:
    """{match, compared, differences: [{path, original, new, difference}]} over every leaf of both."""
    a, b = _leaves(original), _leaves(new)
    differences = []
    for path in sorted(set(a) | set(b)):
        x, y = a.get(path, "<absent>"), b.get(path, "<absent>")
        if _same(x, y):
            continue
        entry: dict[str, Any] = {"path": path, "original": x, "new": y}
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool) and not isinstance(y, bool):
            entry["difference"] = y - x
        differences.append(entry)
    return {"match": not differences, "compared": len(set(a) | set(b)), "differences": differences}


def _pick(manifest: dict[str, Any], *keys: str) -> Any:
    cur: Any = manifest
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def _split_hashes(manifest: dict[str, Any]) -> dict[str, Any]:
    splits = manifest.get("splits") or {}
    return {name: {"content_sha256": s.get("content_sha256"), "rows": s.get("rows")}
            for name, s in splits.items() if not name.startswith("_")}


def _training(manifest: dict[str, Any]) -> dict[str, Any]:
    m = manifest.get("model") or {}
    return {k: m.get(k) for k in ("best_epoch", "best_val_loss", "epochs_run", "history")}


def compare_reproduction(original: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What a reproduction matched and what it did not.

    Required to match exactly (`reproduced` is True only if all do): dataset sha256, split
    hashes and rows, vocabulary sha256 and size, training (best epoch, best val_loss, epochs
    run, per-epoch losses), threshold, metrics (every number under "metrics", intervals and
    baseline included). Reported but not required: the encoder file's sha256 (a .keras file
    records when it was saved, so identical weights give another file hash), parameters, code
    and library versions (the usual causes when something does not match).
    """
    checks = {
        "dataset": _diff(_pick(original, "dataset", "sha256"), _pick(new, "dataset", "sha256")),
        "splits": _diff(_split_hashes(original), _split_hashes(new)),
        "vocabulary": _diff(
            {k: _pick(original, "vocabulary", k) for k in ("sha256", "size")},
            {k: _pick(new, "vocabulary", k) for k in ("sha256", "size")},
        ),
        "training": _diff(_training(original), _training(new)),
        "threshold": _diff(original.get("threshold"), new.get("threshold")),
        "metrics": _diff(original.get("metrics"), new.get("metrics")),
    }
    informational = {
        "encoder_sha256": _diff(_pick(original, "model", "encoder_sha256"), _pick(new, "model", "encoder_sha256")),
        "parameters": _diff(original.get("parameters"), new.get("parameters")),
        "code": _diff(
            {k: _pick(original, "code", k) for k in ("version", "git_commit", "git_dirty")},
            {k: _pick(new, "code", k) for k in ("version", "git_commit", "git_dirty")},
        ),
        "libraries": _diff(original.get("libraries"), new.get("libraries")),
    }
    failed = [name for name, c in checks.items() if not c["match"]]
    if not failed:
        summary = "reproduced: dataset, splits, vocabulary, training, threshold and metrics match exactly"
    else:
        causes = [name for name, c in informational.items() if not c["match"] and name != "encoder_sha256"]
        summary = f"NOT reproduced: {', '.join(failed)} differ" + (f" (also differ: {', '.join(causes)})" if causes else "")
    return {
        "original": original.get("id"),
        "reproduction": new.get("id"),
        "reproduced": not failed,
        "summary": summary,
        "checks": checks,
        "informational": informational,
    }


def reproduction_text(result: dict[str, Any], shown: int = 10) -> str:
    """The comparison as lines for the terminal: one per check, then the first differences of each."""
    lines = [result["summary"]]
    for group in ("checks", "informational"):
        for name, c in result[group].items():
            mark = "same" if c["match"] else f"{len(c['differences'])} difference(s)"
            lines.append(f"  {name:<14} {mark}")
            for d in c["differences"][:shown]:
                delta = f" (difference {d['difference']:+.3g})" if "difference" in d else ""
                lines.append(f"      {d['path'] or name}: {d['original']!r} -> {d['new']!r}{delta}")
            if len(c["differences"]) > shown:
                lines.append(f"      ... and {len(c['differences']) - shown} more")
    return "\n".join(lines)
