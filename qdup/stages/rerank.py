"""Stage `rerank`: the pair reranker fitted on calibration, its threshold on out-of-fold scores, whether it decides
chosen on the selection split (`serve_choice`), measured on test.

Test is reported only: beside the encoder alone and the lexical baseline (each at its own calibration-chosen
threshold), with bootstrap intervals on the same resamples and the paired differences on ROC-AUC.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qdup.config import CHOICE_SPLIT, EvalConfig, ModelConfig, RerankConfig
from qdup.data.questions import overlap_profile
from qdup.data.splits import read_split
from qdup.errors import QdupError
from qdup.evaluation.baseline import NAME as BASELINE_NAME
from qdup.evaluation.bootstrap import bootstrap_intervals, format_paired_difference, paired_difference
from qdup.evaluation.metrics import binary_metrics, choose_threshold, ranking_metrics
from qdup.evaluation.pair_features import FEATURE_NAMES, fit_featurizer
from qdup.evaluation.reranker import BoostingParams, check_labelled, fit_reranker, out_of_fold_scores, pair_groups
from qdup.evaluation.reranker_io import save_reranker
from qdup.evaluation.trust import pair_groups as test_pair_groups
from qdup.fileio import atomic_write_json

RERANKER_DIR = "reranker"
METRICS_FILE = "rerank_metrics.json"
SCORES_FILE = "rerank_test_scores.parquet"
DIFFERENCE_METRIC = "roc_auc"


def boosting_params(cfg: RerankConfig) -> BoostingParams:
    return BoostingParams(max_iter=cfg.max_iter, learning_rate=cfg.learning_rate, max_leaf_nodes=cfg.max_leaf_nodes,
                          min_samples_leaf=cfg.min_samples_leaf, l2_regularization=cfg.l2_regularization,
                          monotonic=cfg.monotonic)


def _block(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    return {"ranking": ranking_metrics(y, scores), "at_threshold": binary_metrics(y, scores, threshold)}


def build_rerank(
    splits_dir: Path,
    vocab_file: Path,
    encoder_file: Path,
    encoder_threshold: float,
    model_cfg: ModelConfig,
    eval_cfg: EvalConfig,
    cfg: RerankConfig,
    seed: int,
    out_dir: Path,
) -> dict[str, Any]:
    """Fit the reranker (features from `train`, trees on `calibration`), save it to out_dir/reranker/, measure on test."""
    from qdup.model import network, vocab
    from qdup.model.encode import similarities

    out_dir = Path(out_dir)
    train, calibration, test = (read_split(Path(splits_dir) / f"{n}.parquet") for n in ("train", "calibration", "test"))
    selection = read_split(Path(splits_dir) / f"{CHOICE_SPLIT}.parquet")
    y_cal = calibration["is_duplicate"].to_numpy(dtype=np.int64)
    y_test = test["is_duplicate"].to_numpy(dtype=np.int64)
    check_labelled(y_cal, "calibration", cfg.folds)
    if len(np.unique(y_test)) < 2:
        raise QdupError(f"rerank: the test split has {len(y_test)} pairs of one class; ROC-AUC is undefined on it")
    c1, c2 = calibration["question1"].astype(str).tolist(), calibration["question2"].astype(str).tolist()
    t1, t2 = test["question1"].astype(str).tolist(), test["question2"].astype(str).tolist()

    # Encoder cosines through the public encode API, whatever the encoder's inputs are.
    encoder = network.load_encoder(encoder_file)
    vectorizer = vocab.load_vectorizer(vocab_file)
    cos_cal = similarities(encoder, vectorizer, c1, c2, model_cfg.max_length)
    cos_test = similarities(encoder, vectorizer, t1, t2, model_cfg.max_length)

    featurizer = fit_featurizer(train, ngram_range=tuple(eval_cfg.baseline_ngram_range), min_df=eval_cfg.baseline_min_df)
    x_cal = featurizer.features(c1, c2, cos_cal)
    x_test = featurizer.features(t1, t2, cos_test)
    params = boosting_params(cfg)
    groups_cal = pair_groups(c1, c2)
    oof = out_of_fold_scores(x_cal, y_cal, groups_cal, params, cfg.folds, seed)
    info = {"fitted_on": "calibration", "calibration_pairs": len(y_cal), "calibration_groups": int(len(np.unique(groups_cal))),
            "folds": cfg.folds, "seed": seed, "params": asdict(params), "features_fitted_on": "train",
            # What the drift stage compares new labelled pairs with (their word overlap, their easy negatives).
            "fitting_profile": overlap_profile(calibration)}
    reranker = fit_reranker(featurizer, x_cal, y_cal, oof, params, seed, info)
    (out_dir / RERANKER_DIR).mkdir(parents=True, exist_ok=True)
    digests = save_reranker(reranker, out_dir / RERANKER_DIR)
    rr_test = reranker.score_features(x_test)
    serves = serve_choice(selection, reranker, encoder, vectorizer, model_cfg, encoder_threshold, eval_cfg, cfg, seed)

    # The lexical baseline's score is the char TF-IDF feature itself (same vectoriser, fitted on train).
    base_cal, base_test = x_cal[:, FEATURE_NAMES.index("char_tfidf_cosine")], x_test[:, FEATURE_NAMES.index("char_tfidf_cosine")]
    base_thr = choose_threshold(y_cal, base_cal)["accuracy_threshold"]
    scorers = {
        "reranker": (rr_test, reranker.threshold),
        "encoder": (cos_test.astype(np.float64), float(encoder_threshold)),
        "baseline": (base_test, base_thr),
    }
    metrics: dict[str, Any] = {
        "reranker": {
            "threshold": reranker.info["threshold"],
            "calibration_out_of_fold": _block(y_cal, oof, reranker.threshold),
            "test": _block(y_test, rr_test, reranker.threshold),
            "features": list(FEATURE_NAMES),
            **info,
        },
        "encoder": {"threshold": {"value": float(encoder_threshold), "chosen_on": "calibration"},
                    "test": _block(y_test, cos_test, encoder_threshold)},
        "baseline": {"name": BASELINE_NAME, "threshold": {"value": base_thr, "chosen_on": "calibration"},
                     "test": _block(y_test, base_test, base_thr)},
        "test": {"rows": len(y_test), "duplicates": int(y_test.sum())},
        "serves": serves,
    }
    if eval_cfg.bootstrap_resamples > 0:
        # Every interval and difference on the same resamples of the test pairs: whole question clusters, as the evaluate stage's.
        boot: dict[str, Any] = {"resamples": eval_cfg.bootstrap_resamples, "seed": seed, "level": eval_cfg.bootstrap_level,
                                "groups": test_pair_groups(test)}
        for name, (scores, thr) in scorers.items():
            metrics[name]["intervals"] = bootstrap_intervals(y_test, scores, thr, **boot)
        metrics["differences"] = {
            f"reranker_minus_{other}": paired_difference(
                y_test, rr_test, reranker.threshold, scorers[other][0], scorers[other][1], DIFFERENCE_METRIC, **boot
            )
            for other in ("baseline", "encoder")
        }
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    pq.write_table(pa.table({"reranker": rr_test, "encoder": cos_test.astype(np.float64), "baseline": base_test,
                             "is_duplicate": y_test}), out_dir / SCORES_FILE)
    return {"reranker_dir": RERANKER_DIR, "sha256": digests, "metrics_file": METRICS_FILE, "scores_file": SCORES_FILE,
            "threshold": reranker.threshold, "serves": serves, "metrics": summary(metrics)}


def serve_choice(
    selection: Any, reranker: Any, encoder: Any, vectorizer: Any, model_cfg: ModelConfig, encoder_threshold: float,
    eval_cfg: EvalConfig, cfg: RerankConfig, seed: int,
) -> dict[str, Any]:
    """Whether the reranker makes the duplicate decision: only where its ROC-AUC on the selection split (pairs neither
    it nor the encoder nor either threshold was fitted on) beats the encoder's by more than `cfg.serve_margin` with a
    paired cluster-bootstrap interval whose low end is above that margin; otherwise the encoder decides."""
    from qdup.model.encode import similarities

    y = selection["is_duplicate"].to_numpy(dtype=np.int64)
    q1, q2 = selection["question1"].astype(str).tolist(), selection["question2"].astype(str).tolist()
    cos = similarities(encoder, vectorizer, q1, q2, model_cfg.max_length).astype(np.float64)
    score = reranker.score(q1, q2, cos)
    where = f"the {CHOICE_SPLIT} split ({len(y):,} pairs, {int(y.sum()):,} duplicates)"
    if eval_cfg.bootstrap_resamples <= 0:
        return {"serves": False, "scorer": "encoder", "split": CHOICE_SPLIT, "paired": None,
                "why": f"no interval (evaluate.bootstrap_resamples=0), so no margin can be shown on {where}: the encoder decides"}
    paired = paired_difference(y, score, reranker.threshold, cos, float(encoder_threshold), DIFFERENCE_METRIC,
                               resamples=eval_cfg.bootstrap_resamples, seed=seed, level=eval_cfg.bootstrap_level,
                               groups=test_pair_groups(selection, CHOICE_SPLIT))
    ok = paired["low"] is not None and paired["low"] > cfg.serve_margin
    text = format_paired_difference(paired, "reranker", "encoder")
    why = (f"the reranker beats the encoder on {where} by more than rerank.serve_margin={cfg.serve_margin}: {text}" if ok else
           f"the reranker does not beat the encoder on {where} by more than rerank.serve_margin={cfg.serve_margin} with an "
           f"interval above it: {text}; the encoder decides")
    return {"serves": ok, "scorer": "reranker" if ok else "encoder", "split": CHOICE_SPLIT, "paired": paired, "why": why}


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline figures (manifest, card, logs): test ROC-AUC, PR-AUC, accuracy and F1 of each scorer with intervals."""
    out: dict[str, Any] = {}
    for name in ("reranker", "encoder", "baseline"):
        m = metrics[name]
        out[name] = {
            "threshold": m["threshold"]["value"],
            "roc_auc": m["test"]["ranking"]["roc_auc"],
            "pr_auc": m["test"]["ranking"]["pr_auc"],
            "accuracy": m["test"]["at_threshold"]["accuracy"],
            "f1": m["test"]["at_threshold"]["f1"],
            **({"intervals": m["intervals"]} if "intervals" in m else {}),
        }
    if "differences" in metrics:
        out["differences"] = metrics["differences"]
    return out


def table_rows(summary_: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scorer: test figures, with the interval when there is one."""
    rows = []
    for name in ("reranker", "encoder", "baseline"):
        s = summary_[name]
        iv = (s.get("intervals") or {}).get("metrics") or {}
        row: dict[str, Any] = {"scorer": name, "threshold": round(s["threshold"], 4)}
        for metric in ("roc_auc", "pr_auc", "accuracy", "f1"):
            v, m = s[metric], iv.get(metric) or {}
            row[metric] = "—" if v is None else (
                f"{v:.4f} [{m['low']:.4f}, {m['high']:.4f}]" if m.get("low") is not None else f"{v:.4f}")
        rows.append(row)
    return rows
