"""Publishing: the lineage manifest of a run, the promotion gate, and the files of a version."""

from __future__ import annotations

import platform
import subprocess
import tempfile
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from qdup import __version__
from qdup.config import RetrainConfig
from qdup.data.drift import VERSION_PROFILE_DIR
from qdup.data.generated import generated_record
from qdup.data.splits import read_split
from qdup.evaluation.metrics import binary_metrics, ranking_metrics
from qdup.evaluation.scores import CALIBRATION_SCORES_FILE, TEST_SCORES_FILE, read_test_scores
from qdup.fileio import atomic_write_text, sha256_json
from qdup.log import LogFn, stderr_log
from qdup.registry.gate import (  # noqa: F401  (also publishing's interface)
    GATE_SPLIT,
    RETRIEVAL_GATE_PART,
    RETRIEVAL_PREFIX,
    GateDecision,
    decide,
    gate_split,
    gate_value,
)
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


def rescore_on(predictor: Any, calibration_df: Any, metric: str) -> tuple[float, np.ndarray, float]:
    """Measure an exported model on the challenger's calibration split (when production's differs).

    Returns the gate metric, the per-pair similarities and the threshold used: production's threshold is
    chosen again on these pairs by the evaluation's rule (max accuracy), as the challenger's was, so that a
    threshold metric compares two thresholds chosen on the same data rather than favouring the challenger.
    """
    from qdup.evaluation.metrics import choose_threshold

    y = calibration_df["is_duplicate"].to_numpy().astype(np.int64)
    sim = np.asarray(
        predictor.similarity(calibration_df["question1"].tolist(), calibration_df["question2"].tolist()), dtype=np.float64
    )
    threshold = float(choose_threshold(y, sim)["accuracy_threshold"])
    metrics = {GATE_SPLIT: {"ranking": ranking_metrics(y, sim), "at_threshold": binary_metrics(y, sim, threshold)}}
    return gate_value(metrics, metric), sim, threshold


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
    for p in sorted(stages["splits"].path.glob("validation-*")):
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
    return files


def profile_files(stages: dict[str, StageResult], out_dir: Path) -> dict[str, Path]:
    """This version's data profile (validated data under its own vocabulary), written to `out_dir`, under version names."""
    from qdup.stages.drift import build_profile
    from qdup.stages.validate import VALIDATED_FILE

    build_profile(stages["validate"].file(VALIDATED_FILE), stages["vocab"].file("vocabulary.txt"), out_dir)
    return {f"{VERSION_PROFILE_DIR}/{p.name}": p for p in sorted(Path(out_dir).iterdir())}


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
            "split_suites": {name: e["suite"] for name, e in splits["splits"].items()},
        },
        "splits": {
            name: {"content_sha256": e["content_sha256"], "rows": e["rows"], "duplicates": e["duplicates"]}
            for name, e in splits["splits"].items()
        }
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
        "parameters": params(cfg),
        "code": code_version(),
        "libraries": library_versions(),
        "prefect": prefect_info,
        "compared_against": decision.as_dict() if gate is None else gate,
        **({"drift": stages["drift"].manifest} if "drift" in stages else {}),
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

    The drift report is left out: its key names the production version compared with, which
    does not change the model.
    """
    return sha256_json({name: r.key for name, r in sorted(stages.items()) if name != "drift"})


@dataclass(frozen=True)
class ProductionMeasure:
    """Production on the challenger's calibration rows: the gate metric, how it was measured, per-pair similarities."""

    value: float | None = None
    measured_on: str | None = None
    scores: np.ndarray | None = None
    threshold: float | None = None


def measure_production(
    store: ArtifactStore, production: str | None, stages: dict[str, StageResult], metric: str
) -> ProductionMeasure:
    """Production's gate metric on the challenger's calibration rows: stored when the rows are the same, else re-scored.

    With the same rows, production's stored per-pair similarities (evaluation/calibration_scores.parquet)
    pair it with the challenger; a version from before they were kept has none (no paired difference).
    """
    if production is None:
        return ProductionMeasure()
    prod = store.manifest(production)
    if metric.startswith(RETRIEVAL_PREFIX):
        return ProductionMeasure(*measure_production_retrieval(store, production, prod, stages, metric))
    ours = stages["splits"].manifest["splits"][GATE_SPLIT]["content_sha256"]
    stored = (prod.get("metrics") or {}).get(GATE_SPLIT) or {}
    same_rows = (prod.get("splits") or {}).get(GATE_SPLIT, {}).get("content_sha256") == ours
    if same_rows and stored.get(metric) is not None:
        scores = None
        if f"evaluation/{CALIBRATION_SCORES_FILE}" in (prod.get("files") or {}):
            scores = read_test_scores(store.open_version(production) / "evaluation" / CALIBRATION_SCORES_FILE)
        return ProductionMeasure(float(stored[metric]), "stored metrics", scores, prod["threshold"]["value"])
    from qdup.serving.predictor import load_inference

    predictor = load_inference(store.open_version(production) / "model")
    calibration_df = read_split(stages["splits"].file(f"{GATE_SPLIT}.parquet"))
    value, scores, threshold = rescore_on(predictor, calibration_df, metric)
    return ProductionMeasure(value, f"re-scored on the challenger's {GATE_SPLIT} split", scores, threshold)


def paired_against_production(cfg: RetrainConfig, stages: dict[str, StageResult], prod: ProductionMeasure) -> dict[str, Any] | None:
    """Challenger - production on the gate metric over the same calibration rows and cluster-bootstrap resamples;
    None when not measurable."""
    from qdup.evaluation.bootstrap import METRICS, paired_difference
    from qdup.evaluation.trust import pair_groups

    metric, resamples = cfg.publish.gate_metric, cfg.evaluate.bootstrap_resamples
    scores_file = stages["evaluate"].file(CALIBRATION_SCORES_FILE)
    if prod.scores is None or resamples <= 0 or metric not in METRICS or not scores_file.is_file():
        return None
    rows = read_split(stages["splits"].file(f"{GATE_SPLIT}.parquet"))
    y = rows["is_duplicate"].to_numpy(dtype=np.int64)
    challenger = read_test_scores(scores_file)
    threshold = stages["evaluate"].manifest["metrics"]["threshold"]["value"]
    return paired_difference(
        y, challenger, threshold, prod.scores, prod.threshold, metric,
        resamples=resamples, seed=cfg.seed, level=cfg.evaluate.bootstrap_level, groups=pair_groups(rows, GATE_SPLIT),
    ) | {"split": GATE_SPLIT}


def measure_production_retrieval(
    store: ArtifactStore, production: str, prod: dict[str, Any], stages: dict[str, StageResult], metric: str
) -> tuple[float, str]:
    """Production's dense retrieval figure on the validation part: stored when measured on the same split, else re-scored."""
    import pandas as pd

    from qdup.config import SearchConfig
    from qdup.search.encoder import load_query_encoder
    from qdup.stages.retrieval import dense_part_metrics

    name = metric.removeprefix(RETRIEVAL_PREFIX)
    ours = stages["retrieval"].manifest
    stored = prod.get("retrieval") or {}
    if stored.get("split") == ours["split"] and RETRIEVAL_GATE_PART in stored:
        return float(stored[RETRIEVAL_GATE_PART]["dense"][name]), "stored metrics"
    encoder = load_query_encoder(store.open_version(production) / "model")
    pairs = pd.read_parquet(stages["retrieval"].file(ours["pairs"]))
    cfg = SearchConfig(**ours["search"])
    figures = dense_part_metrics(pairs, encoder.encode, cfg, ours["split"]["seed"], RETRIEVAL_GATE_PART)
    return float(figures[name]), "re-scored on the challenger's retrieval validation part"


def find_identical(store: ArtifactStore, key: str, versions: list[str]) -> str | None:
    """The newest of `versions` published from the same stage outputs (`content_key`), if any."""
    for existing in reversed(versions):
        if store.manifest(existing).get("content_key") == key:
            return existing
    return None


def publish_version(
    store: ArtifactStore,
    cfg: RetrainConfig,
    stages: dict[str, StageResult],
    version: str,
    *,
    run_info: dict[str, Any],
    actor: str,
    log: LogFn = stderr_log,
    max_attempts: int = 3,
) -> PublishOutcome:
    """Publish the exact stage outputs handed in as `version`; move `latest`, and `production` if the gate passes.

    An unchanged pipeline publishes nothing (it names the identical version). Everything slow happens
    before the store's lock: measuring production (it may load a model), the gate decision, the
    profile, the relabelled index, the card, and uploading the version's files unregistered. The lock
    covers only one registry transaction: production is still the one measured, no identical version
    was registered meanwhile, the registration and the alias moves. If production moved meanwhile,
    the upload is discarded and the gate runs again, at most `max_attempts` times.
    """
    metric, tolerance = cfg.publish.gate_metric, cfg.publish.tolerance
    key = content_key(stages)
    seen = store.versions()
    if (existing := find_identical(store, key, seen)) is not None:
        log(f"[publish] identical to version {existing} (same data, parameters and code): nothing new to publish")
        return PublishOutcome(existing, store.url, False, False, f"identical to {existing}", None)
    from qdup.evaluation.bootstrap import format_paired_difference
    from qdup.registry.card import model_card
    from qdup.registry.gate import apply_baseline_check, check_baseline, gate_record

    metrics = stages["evaluate"].manifest["metrics"]
    challenger = gate_value(metrics, metric, stages["retrieval"].manifest if "retrieval" in stages else None)
    # The lexical baseline scores pairs: with a retrieval gate metric, the lift is measured on ROC-AUC
    # (as the evaluate stage does); the retrieval stage reports its own lexical figures beside the model's.
    from qdup.evaluation.bootstrap import METRICS

    baseline = check_baseline(metrics, metric if metric in METRICS else "roc_auc", cfg.publish.min_lift_over_baseline)
    with tempfile.TemporaryDirectory(prefix="qdup-publish-") as tmp:
        # The files that do not depend on the gate's outcome, made once.
        files = version_files(stages) | profile_files(stages, Path(tmp) / VERSION_PROFILE_DIR)
        if "index" in stages:
            files |= relabelled_index(stages, version, Path(tmp))
        for _ in range(max_attempts):
            current = store.aliases().get("production")
            prod = measure_production(store, current, stages, metric)
            paired = paired_against_production(cfg, stages, prod)
            decision = decide(metric, tolerance, challenger, current, prod.value, prod.measured_on)
            if paired is not None:
                decision = replace(decision, reason=f"{decision.reason}; {format_paired_difference(paired)}")
            decision = apply_baseline_check(decision, baseline)
            staged = None
            if version not in store.versions():  # a retried publish after a committed one must not publish twice
                gate = gate_record(decision, baseline, paired)
                manifest = lineage_manifest(cfg, stages, run_info, decision, gate) | {"content_key": key}
                # The card is made from the manifest being published (with the id it will carry).
                card = Path(tmp) / CARD_FILE
                atomic_write_text(card, model_card({**manifest, "id": version}))
                # An earlier attempt's upload (another gate outcome, or a failed registration) goes first.
                store.discard_upload(version)
                staged = store.upload(files | {CARD_FILE: card}, manifest, version=version)
            with store.lock():
                if store.aliases().get("production") != current:
                    moved = True  # production moved while it was being measured: measure the new one
                else:
                    moved = False
                    registered = store.versions()
                    identical = find_identical(store, key, [v for v in registered if v not in seen and v != version])
                    if identical is not None and version not in registered:
                        store.discard_upload(version)
                        log(f"[publish] identical to version {identical}, registered meanwhile: nothing new to publish")
                        return PublishOutcome(identical, store.url, False, False, f"identical to {identical}", None)
                    if staged is not None:
                        store.register(staged)
                    store.move_alias("latest", version, "every publish moves latest", actor, "publish")
                    promoted = decision.promote and cfg.publish.promote
                    if promoted:
                        store.move_alias("production", version, decision.reason, actor, "publish")
            if not moved:
                break
        else:
            raise StoreError(f"production kept moving while version {version} was being gated ({max_attempts} attempts)")
    why = decision.reason if cfg.publish.promote else "promotion disabled (publish.promote=false)"
    log(f"[publish] version {version} -> {store.url}; production {'moved' if promoted else 'NOT moved'}: {why}")
    return PublishOutcome(version, store.url, True, promoted, why, decision)
