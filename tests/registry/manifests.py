"""Version manifests for card, gate and reproduction tests, built by the real `lineage_manifest` from stage records."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from qdup.config import RetrainConfig
from qdup.registry.publish import GateDecision, lineage_manifest
from qdup.stagecache import StageResult

Y_TEST = np.array([1, 0, 1, 0, 1, 0, 0, 1, 0, 0] * 20)
MODEL_TEST = np.where(Y_TEST == 1, 0.8, 0.3) + np.tile(np.linspace(-0.45, 0.45, 10), 20)
BASELINE_TEST = np.where(Y_TEST == 1, 0.6, 0.4) + np.tile(np.linspace(-0.3, 0.3, 10)[::-1], 20)
# Question clusters of the test pairs: pairs 2k and 2k + 1 share a question.
GROUPS = np.arange(200) // 2


def _metrics() -> dict[str, Any]:
    from qdup.evaluation.metrics import binary_metrics, ranking_metrics

    at = binary_metrics(Y_TEST, MODEL_TEST, 0.55)
    return {
        "label_convention": "is_duplicate 1 = same intent",
        "threshold": {"value": 0.55, "objective": "accuracy", "chosen_on": "calibration", "calibration_accuracy": 0.81,
                      "f1_threshold": 0.5, "calibration_f1": 0.78, "reference": 0.7},
        "calibration": {"rows": 300, "duplicates": 110, "ranking": {"roc_auc": 0.88, "pr_auc": 0.8, "positives": 110, "negatives": 190},
                        "at_threshold": {"accuracy": 0.81, "precision": 0.75, "recall": 0.74, "f1": 0.78}},
        "test": {"rows": len(Y_TEST), "duplicates": int(Y_TEST.sum()), "ranking": ranking_metrics(Y_TEST, MODEL_TEST),
                 "at_threshold": at, "at_reference_threshold": binary_metrics(Y_TEST, MODEL_TEST, 0.7),
                 "at_f1_threshold": binary_metrics(Y_TEST, MODEL_TEST, 0.5)},
    }


def stages(tmp: Path) -> dict[str, StageResult]:
    def stage(name: str, manifest: dict[str, Any]) -> StageResult:
        return StageResult(stage=name, key=f"{name}-key", path=tmp / name, cached=False, manifest=manifest, seconds=1.5)

    split = {"suite": "qqp_split_labelled.v1", "rows": 200, "duplicates": 80, "content_sha256": "c" * 64}
    return {
        "fetch": stage("fetch", {"source": "http://example.test/qqp.tsv", "sha256": "a" * 64, "md5": "b" * 32, "size": 123456}),
        "validate": stage("validate", {"suite": "qqp_raw.v1", "rows": 2000, "duplicate_share": 0.37, "missing_questions": 0}),
        "splits": stage("splits", {
            "splits": {"train": {**split, "rows": 1000, "content_sha256": "1" * 64},
                       "negatives": {**split, "rows": 600, "duplicates": 0}, "val": {**split, "rows": 250},
                       "test": {**split, "content_sha256": "3" * 64}, "calibration": {**split, "rows": 300}},
            "mode": "positional", "n_rows": 2000, "n_train": 1600, "n_test": 200, "val_start_row": 1000,
            "calibration_start_row": 1300,
            "regions": {"train": {"start": 0, "end": 1000, "duplicates": 400, "non_duplicates": 600},
                        "val": {"start": 1000, "end": 1300, "duplicates": 100, "non_duplicates": 200},
                        "calibration": {"start": 1300, "end": 1600, "duplicates": 110, "non_duplicates": 190}},
            "test_questions_seen": 12,
            "dropped_missing_question": {"train": 0, "negatives": 0, "val": 0, "test": 0, "calibration": 0},
        }),
        "vocab": stage("vocab", {"sha256": "d" * 64, "size": 5321, "oov_rate": 0.02}),
        "train": stage("train", {"encoder_sha256": "e" * 64, "best_epoch": 3, "best_val_loss": 0.1234, "epochs_run": 5,
                                 "history": [{"epoch": i, "loss": 1.0 / i, "val_loss": 0.5 / i, "seconds": 2.0 + i} for i in range(1, 6)]}),
        "evaluate": stage("evaluate", {"metrics": _metrics()}),
        "export": stage("export", {}),
    }


def older_manifest(tmp: Path) -> dict[str, Any]:
    """A manifest as `lineage_manifest` writes it today: no intervals, baseline or drift."""
    decision = GateDecision(True, "first version: becomes production", None, 0.9, None, None)
    m = lineage_manifest(RetrainConfig(), stages(tmp), {"flow_run_id": "run-1", "flow_run_name": "quiet-fox"}, decision)
    return {"id": "20260101T000000000Z-abcdef", "created": "2026-01-01T00:00:00+00:00", **m}


def full_manifest(tmp: Path) -> dict[str, Any]:
    """The same with what this branch adds: intervals, the lexical baseline, drift, the paired gate record."""
    from qdup.evaluation.bootstrap import bootstrap_intervals, paired_difference
    from qdup.evaluation.metrics import binary_metrics, ranking_metrics

    m = copy.deepcopy(older_manifest(tmp))
    m["metrics"]["intervals"] = bootstrap_intervals(Y_TEST, MODEL_TEST, 0.55, resamples=200, seed=42, groups=GROUPS)
    m["metrics"]["baseline"] = {
        "name": "char n-gram TF-IDF cosine",
        "params": {"analyzer": "char_wb", "ngram_range": [2, 5], "min_df": 1, "sublinear_tf": True, "features": 4321},
        "threshold": {"value": 0.5, "objective": "accuracy", "chosen_on": "calibration", "calibration_accuracy": 0.7},
        "test": {"ranking": ranking_metrics(Y_TEST, BASELINE_TEST), "at_threshold": binary_metrics(Y_TEST, BASELINE_TEST, 0.5)},
        "intervals": bootstrap_intervals(Y_TEST, BASELINE_TEST, 0.5, resamples=200, seed=42, groups=GROUPS),
    }
    m["drift"] = {"mode": "warn", "status": "drifted", "blocking": False, "production_version": "20251201T000000000Z-012345",
                  "message": "drift: 1 of 8 drift expectations failed (warning only): expect_column_mean_to_be_between on 'is_duplicate'",
                  "failing": [("expect_column_mean_to_be_between on column 'is_duplicate' (duplicate share within 0.05 of "
                               "production's 0.3700): observed 0.45")]}
    # Stands in for production's scores on the same test pairs.
    paired = paired_difference(Y_TEST, MODEL_TEST, 0.55, BASELINE_TEST, 0.5, "roc_auc", resamples=200, seed=42, groups=GROUPS)
    m["metrics"]["lift_over_baseline"] = paired
    m["compared_against"] = {
        **m["compared_against"], "version": "20251201T000000000Z-012345", "production": 0.85, "paired_difference": paired,
        "reason": "challenger roc_auc=0.9 is at least as good as production 20251201T000000000Z-012345 roc_auc=0.85",
    }
    return m


def served_manifest(tmp: Path, serves: bool = True) -> dict[str, Any]:
    """A version with a pair reranker (deciding or not, as `serves` says), sub-words on, and a hybrid default search."""
    s = stages(tmp)
    figures = {"threshold": 0.44, "roc_auc": 0.91, "pr_auc": 0.85, "accuracy": 0.86, "f1": 0.8}
    why = ("the reranker beats the encoder on the selection split (300 pairs, 110 duplicates) by more than "
           "rerank.serve_margin=0.0: reranker - encoder roc_auc: +0.0300" if serves else
           "the reranker does not beat the encoder on the selection split; the encoder decides")
    s["rerank"] = StageResult(stage="rerank", key="rerank-key", path=tmp / "rerank", cached=False, seconds=1.0, manifest={
        "threshold": 0.44, "serves": {"serves": serves, "why": why},
        "metrics": {"reranker": figures, "encoder": {**figures, "threshold": 0.55, "roc_auc": 0.88},
                    "baseline": {**figures, "threshold": 0.5, "roc_auc": 0.75}}})
    s["index"] = StageResult(stage="index", key="index-key", path=tmp / "index", cached=False, seconds=1.0, manifest={
        "count": 10, "backend": "exact",
        "search_defaults": {"method": "hybrid", "hybrid": {"method": "weighted", "weight": 0.3}, "rrf_k": 60}})
    decision = GateDecision(True, "first version: becomes production", None, 0.9, None, None)
    m = lineage_manifest(RetrainConfig(), s, {"flow_run_id": "run-1", "flow_run_name": "quiet-fox"}, decision)
    return {"id": "20260101T000000000Z-abcdef", "created": "2026-01-01T00:00:00+00:00", **m}
