"""Publishing: the lineage manifest of a run and the files of a version, registered with the gate stage's decision record."""

from __future__ import annotations

import platform
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from qdup import __version__
from qdup.config import RetrainConfig
from qdup.data.generated import generated_record
from qdup.evaluation.scores import CALIBRATION_SCORES_FILE, TEST_SCORES_FILE
from qdup.fileio import atomic_write_text, sha256_json
from qdup.log import LogFn, stderr_log
from qdup.registry.feedback import feedback_files, feedback_lineage
from qdup.registry.gate import GateDecision
from qdup.registry.store import ArtifactStore, StoreError
from qdup.stagecache import StageResult, params

# The model card's name in a version.
CARD_FILE = "card.md"
LIBRARIES = ("tensorflow", "keras", "prefect", "great-expectations", "pandas", "pyarrow", "numpy", "pydantic", "fsspec")


def code_version() -> dict[str, Any]:
    """Package version, and the git commit and dirty flag when running from a checkout."""
    root = Path(__file__).resolve().parents[1]
    info: dict[str, Any] = {"package": "qdup", "version": __version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10,
            )
            info["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass  # not a checkout, or no git: the package version still identifies the code
    return info


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def version_files(stages: dict[str, StageResult]) -> dict[str, Path]:
    """Which stage outputs go into a version, under which names."""
    files: dict[str, Path] = {}
    model_dir = stages["export"].file("model")
    for p in sorted(model_dir.iterdir()):
        files[f"model/{p.name}"] = p
    files["vocabulary.txt"] = stages["vocab"].file("vocabulary.txt")
    for name in ("metrics.json", "threshold_sweep.json", "threshold_sweep.md", "roc_curve.png"):
        files[f"evaluation/{name}"] = stages["evaluate"].file(name)
    for p in sorted(stages["validate"].path.glob("validation*")):
        files[f"validation/raw-{p.name}"] = p
    for name in ("splits", "silver"):
        for p in sorted(stages[name].path.glob("validation-*")) if name in stages else ():
            files[f"validation/{p.name}"] = p
    files["splits/stage.json"] = stages["splits"].file("stage.json")
    for name in (TEST_SCORES_FILE, CALIBRATION_SCORES_FILE):
        if stages["evaluate"].file(name).is_file():
            files[f"evaluation/{name}"] = stages["evaluate"].file(name)
    if "drift" in stages:
        for name in ("drift.json", "drift.md"):
            files[f"drift/{name}"] = stages["drift"].file(name)
    if "retrieval" in stages:
        files["evaluation/retrieval.json"] = stages["retrieval"].file("retrieval.json")
    if "feedback" in stages:  # the snapshot trained with travels with the version: its lineage can be checked byte for byte
        files |= feedback_files(stages["feedback"])
    return files


def relabelled_index(stages: dict[str, StageResult], version: str, tmp: Path) -> dict[str, Path]:
    """The index stage's index, its manifest naming `version` (fixed only now), as version files under `index/`."""
    from qdup.search.index import load_index

    index = load_index(stages["index"].file(stages["index"].manifest["index_dir"]))
    index.model_version = version
    index.save(tmp / "index")
    return {f"index/{p.relative_to(tmp / 'index')}": p for p in sorted((tmp / "index").rglob("*")) if p.is_file()}


def lineage_manifest(
    cfg: RetrainConfig,
    stages: dict[str, StageResult],
    prefect_info: dict[str, Any],
    decision: GateDecision,
    gate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to answer "what produced this model?" without any other system."""
    fetch, validate, splits, vocab = (stages[s].manifest for s in ("fetch", "validate", "splits", "vocab"))
    train, evaluate = stages["train"].manifest, stages["evaluate"].manifest
    silver = stages["silver"].manifest["silver"] if "silver" in stages else None
    metrics = evaluate["metrics"]
    return {
        "dataset": {
            "source": fetch["source"],
            "sha256": fetch["sha256"],
            "md5": fetch["md5"],
            "bytes": fetch["size"],
            # Present only for a file `qdup demo-data` wrote: the card, the run summary and /v1/model say so.
            **({"generated": generated} if (generated := generated_record(fetch["sha256"])) else {}),
        },
        "validation": {
            "suite": validate["suite"],
            "success": True,
            "rows": validate["rows"],
            "duplicate_share": validate["duplicate_share"],
            "missing_questions": validate["missing_questions"],
            "result": "validation/raw-validation.json",
            "split_suites": {name: e["suite"] for name, e in splits["splits"].items()}
            | ({"silver": silver["suite"]} if silver else {}),
        },
        "splits": {
            name: {"content_sha256": e["content_sha256"], "rows": e["rows"], "duplicates": e["duplicates"]}
            for name, e in splits["splits"].items()
        }
        # The silver stage's split (search negatives the encoder trained with), when training used one.
        | ({"silver": {"content_sha256": silver["content_sha256"], "rows": silver["rows"], "duplicates": 0,
                       "kinds": silver["kinds"], "stage_key": stages["silver"].key}} if silver else {})
        | {"_plan": {k: splits[k] for k in ("mode", "n_rows", "n_train", "n_test", "val_start_row", "calibration_start_row",
                                             "regions", "test_questions_seen", "dropped_missing_question")}},
        "vocabulary": {"sha256": vocab["sha256"], "size": vocab["size"], "oov_rate": vocab["oov_rate"]},
        "model": {
            "encoder_sha256": train["encoder_sha256"],
            "best_epoch": train["best_epoch"],
            "best_val_loss": train["best_val_loss"],
            "epochs_run": train["epochs_run"],
            "history": train["history"],
        },
        "threshold": metrics["threshold"],
        "metrics": {
            "test": {
                "roc_auc": metrics["test"]["ranking"]["roc_auc"],
                "pr_auc": metrics["test"]["ranking"]["pr_auc"],
                **{k: metrics["test"]["at_threshold"][k] for k in ("accuracy", "precision", "recall", "f1")},
                "at_reference_threshold": metrics["test"]["at_reference_threshold"],
                "confusion_matrix": metrics["test"]["at_threshold"]["confusion_matrix"],
            },
            # The gate's split: its ranking figures and those at the calibration-chosen threshold.
            "calibration": metrics["calibration"]["ranking"]
            | {k: v for k, v in (metrics["calibration"].get("at_threshold") or {}).items()
               if k in ("accuracy", "precision", "recall", "f1")},
            **{k: metrics[k] for k in ("intervals", "baseline", "lift_over_baseline") if k in metrics},
            # The pair reranker beside the encoder alone and the baseline, each at its own calibration-chosen threshold.
            **({"reranker": stages["rerank"].manifest["metrics"]} if "rerank" in stages else {}),
        },
        "served": served_block(stages),
        "parameters": params(cfg),
        "code": code_version(),
        "libraries": library_versions(),
        "prefect": prefect_info,
        "compared_against": decision.as_dict() if gate is None else gate,
        **({"drift": stages["drift"].manifest} if "drift" in stages else {}),
        **({"feedback": feedback_lineage(stages["feedback"].manifest, splits.get("feedback") or {})} if "feedback" in stages else {}),
        **({"retrieval": {k: v for k, v in stages["retrieval"].manifest.items() if k not in ("result", "pairs", "search")}
                           | {"result": "evaluation/retrieval.json"}} if "retrieval" in stages else {}),
        **({"index": {"dir": "index", "count": stages["index"].manifest["count"], "backend": stages["index"].manifest["backend"],
                      "corpus": {"dataset_sha256": stages["fetch"].manifest["sha256"]},
                      "search_defaults": stages["index"].manifest["search_defaults"]}} if "index" in stages else {}),
        "stages": {
            name: {"key": r.key, "cached": r.cached, "seconds": r.seconds}
            for name, r in stages.items()
        },
    }


def served_block(stages: dict[str, StageResult]) -> dict[str, Any]:
    """What this version serves, for everything that shows it: which score decides (and why), at which threshold, its
    test figures (the encoder's and the lexical baseline's beside them), and the default search method."""
    metrics = stages["evaluate"].manifest["metrics"]
    encoder = {"threshold": metrics["threshold"]["value"], "roc_auc": metrics["test"]["ranking"]["roc_auc"],
               "accuracy": metrics["test"]["at_threshold"]["accuracy"], "f1": metrics["test"]["at_threshold"]["f1"]}
    base = metrics.get("baseline") or {}
    baseline = {"name": base.get("name"), "threshold": (base.get("threshold") or {}).get("value"),
                "roc_auc": ((base.get("test") or {}).get("ranking") or {}).get("roc_auc"),
                "accuracy": ((base.get("test") or {}).get("at_threshold") or {}).get("accuracy")} if base else None
    out: dict[str, Any] = {"decided_by": "encoder", "threshold": encoder["threshold"], "test": encoder,
                           "why": "no reranker: the encoder cosine decides", "encoder": encoder, "baseline": baseline}
    if "rerank" in stages:
        rerank = stages["rerank"].manifest
        serves = rerank.get("serves") or {"serves": True, "why": "fitted before the choice existed"}
        summary = rerank["metrics"]["reranker"]
        reranker = {k: summary[k] for k in ("threshold", "roc_auc", "accuracy", "f1")}
        out |= {"reranker": reranker, "why": serves["why"]}
        if serves["serves"]:
            out |= {"decided_by": "reranker", "threshold": reranker["threshold"], "test": reranker}
    defaults = (stages["index"].manifest.get("search_defaults") if "index" in stages else None) or (
        {"method": stages["retrieval"].manifest["best"], "hybrid": stages["retrieval"].manifest["hybrid"]}
        if "retrieval" in stages else None)
    if defaults:
        out["search"] = {"method": defaults["method"], "hybrid": defaults.get("hybrid"),
                         "chosen_on": "the selection split (retrieval selection part)"}
        by = stages["retrieval"].manifest.get("reranked_by") if "retrieval" in stages else None
        if defaults["method"] == "reranked":
            out["search"]["reranked_by"] = (
                f"a search reranker fitted on the selection queries' hybrid top {by['depth']} (its selection figures out-of-fold)"
                if by else "the pair reranker")
    return out


@dataclass(frozen=True)
class PublishOutcome:
    """What `publish_version` did: the version handed in (or the identical one), and whether production moved."""

    version: str
    store: str
    published: bool
    promoted: bool
    reason: str
    decision: GateDecision | None

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "store": self.store, "published": self.published,
                "promoted": self.promoted, "reason": self.reason}


def content_key(stages: dict[str, StageResult]) -> str:
    """Stage keys hash inputs, parameters and code, so equal keys mean an identical model.

    The drift report and the gate's record are left out: their keys name the production version compared with,
    which does not change the model.
    """
    return sha256_json({name: r.key for name, r in sorted(stages.items()) if name not in ("drift", "gate")})


def find_identical(store: ArtifactStore, key: str, versions: list[str]) -> str | None:
    """The newest of `versions` published from the same stage outputs (`content_key`), if any."""
    for existing in reversed(versions):
        if store.manifest(existing).get("content_key") == key:
            return existing
    return None


def gate_decision(gate: dict[str, Any]) -> GateDecision:
    """The gate stage's record as the decision `PublishOutcome` carries (headline: the configured gate metric)."""
    record = gate["record"]
    metric = next(iter(record.get("comparisons") or {}), None)
    comparison = (record.get("comparisons") or {}).get(metric) or {}
    return GateDecision(bool(record["promote"]), record["reason"], record.get("version"), comparison.get("challenger"),
                        comparison.get("production"), f"re-scored on the {record['split']} split" if record.get("version") else None,
                        record["rows"]["where"])


def gate_files(stages: dict[str, StageResult]) -> dict[str, Path]:
    """The gate stage's decision record and fitted-question hashes, under the version's `gate/`."""
    gate = stages["gate"]
    return {f"gate/{gate.manifest[k]}": gate.file(gate.manifest[k]) for k in ("decision", "fitted_questions")}


def publish_version(
    store: ArtifactStore,
    cfg: RetrainConfig,
    stages: dict[str, StageResult],
    version: str,
    *,
    run_info: dict[str, Any],
    actor: str,
    log: LogFn = stderr_log,
    extra_files: dict[str, Path] | None = None,
) -> PublishOutcome:
    """Publish the exact stage outputs handed in as `version` with the gate stage's decision record; move `latest`, and
    `production` where the record says to and production is still the version the gate judged against.

    Nothing is measured here: the gate stage (`qdup.stages.gate`) judged the version as it serves. An unchanged
    pipeline publishes nothing (it names the identical version). The files are uploaded unregistered before the
    store's lock; the lock covers one registry transaction: no identical version was registered meanwhile, the
    registration and the alias moves. If production moved since the gate judged, the version is registered and
    `latest` moves, but production does not (run again to judge against the new production). `extra_files`: more
    version files (name -> path), e.g. the data profile the task layer builds.
    """
    if "gate" not in stages:
        raise StoreError("publish needs the gate stage's decision record (run the flow through `gate`)")
    key = content_key(stages)
    seen = store.versions()
    if (existing := find_identical(store, key, seen)) is not None:
        log(f"[publish] identical to version {existing} (same data, parameters and code): nothing new to publish")
        return PublishOutcome(existing, store.url, False, False, f"identical to {existing}", None)
    from qdup.registry.card import model_card

    record, judged = stages["gate"].manifest["record"], stages["gate"].manifest["production"]
    decision = gate_decision(stages["gate"].manifest)
    with tempfile.TemporaryDirectory(prefix="qdup-publish-") as tmp:
        files = version_files(stages) | gate_files(stages) | dict(extra_files or {})
        if "index" in stages:
            files |= relabelled_index(stages, version, Path(tmp))
        staged = None
        if version not in store.versions():  # a retried publish after a committed one must not publish twice
            manifest = lineage_manifest(cfg, stages, run_info, decision, record) | {"content_key": key}
            # The card is made from the manifest being published (with the id it will carry).
            card = Path(tmp) / CARD_FILE
            atomic_write_text(card, model_card({**manifest, "id": version}))
            # An earlier attempt's upload (a failed registration) goes first.
            store.discard_upload(version)
            staged = store.upload(files | {CARD_FILE: card}, manifest, version=version)
        with store.lock():
            registered = store.versions()
            identical = find_identical(store, key, [v for v in registered if v not in seen and v != version])
            if identical is not None and version not in registered:
                store.discard_upload(version)
                log(f"[publish] identical to version {identical}, registered meanwhile: nothing new to publish")
                return PublishOutcome(identical, store.url, False, False, f"identical to {identical}", None)
            if staged is not None:
                store.register(staged)
            store.move_alias("latest", version, "every publish moves latest", actor, "publish")
            current = store.aliases().get("production")
            why = decision.reason
            promoted = decision.promote and cfg.publish.promote and current == judged
            if decision.promote and current != judged:
                why = (f"production moved from {judged} to {current} after the gate judged against {judged}; not promoted "
                       f"(run again to judge against {current})")
            if promoted:
                store.move_alias("production", version, decision.reason, actor, "publish")
    if not cfg.publish.promote:
        why = "promotion disabled (publish.promote=false)"
    log(f"[publish] version {version} -> {store.url}; production {'moved' if promoted else 'NOT moved'}: {why}")
    return PublishOutcome(version, store.url, True, promoted, why, decision)
