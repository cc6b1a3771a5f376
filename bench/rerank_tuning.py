"""Reranker settings by out-of-fold calibration ROC-AUC: python -m bench.rerank_tuning --home QDUP_HOME [--out FILE.md]."""

# Reads the newest completed run of QDUP_HOME (a `qdup run` on the real sample, e.g. the quality benchmark's
# work folder), computes the reranker's features of its calibration pairs once with the run's encoder, and
# scores each candidate setting by the ROC-AUC of its grouped out-of-fold calibration scores (the same folds
# the rerank stage uses), for two fold seeds. Test pairs are never read: this is how the defaults of
# `qdup.config.RerankConfig` were chosen.

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.harness.results import Run, page

CANDIDATES = (
    {},
    {"max_iter": 400, "learning_rate": 0.03},
    {"max_iter": 300, "max_leaf_nodes": 7, "min_samples_leaf": 40},
    {"max_iter": 150, "learning_rate": 0.1, "max_leaf_nodes": 31},
    {"max_iter": 100, "max_leaf_nodes": 7, "min_samples_leaf": 40, "l2_regularization": 5.0},
    {"max_iter": 100, "max_leaf_nodes": 4, "min_samples_leaf": 40, "l2_regularization": 5.0},
    {"max_iter": 100, "max_leaf_nodes": 7, "min_samples_leaf": 40, "l2_regularization": 5.0, "monotonic": True},
    {"max_iter": 500, "learning_rate": 0.02, "max_leaf_nodes": 7, "min_samples_leaf": 30},
    {"max_iter": 100, "max_leaf_nodes": 7, "min_samples_leaf": 20, "l2_regularization": 5.0},
    {"max_iter": 100, "max_leaf_nodes": 7, "min_samples_leaf": 10, "l2_regularization": 5.0},
)
FOLD_SEEDS = (42, 7)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, required=True, help="QDUP_HOME holding a completed run")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    run = Run("bench.rerank_tuning", argv)
    from dataclasses import asdict, replace

    from sklearn.metrics import roc_auc_score

    from qdup.config import RerankConfig
    from qdup.data.graph import pair_components
    from qdup.data.splits import read_split
    from qdup.evaluation.pair_features import fit_featurizer
    from qdup.evaluation.reranker import out_of_fold_scores
    from qdup.model import network, vocab
    from qdup.model.encode import similarities
    from qdup.stages.rerank import boosting_params

    records = [json.loads(p.read_text()) for p in sorted((args.home / "runs" / "history").glob("*/run.json"))]
    done = [r for r in records if r["status"] == "completed" and "train" in r["stages"]]
    if not done:
        print(f"{args.home}: no completed run with a trained encoder", file=sys.stderr)
        return 2
    record = done[-1]
    stage = {name: Path(s["path"]) for name, s in record["stages"].items()}
    train, cal = read_split(stage["splits"] / "train.parquet"), read_split(stage["splits"] / "calibration.parquet")
    encoder = network.load_encoder(stage["train"] / "encoder.keras")
    vectorizer = vocab.load_vectorizer(stage["vocab"] / "vocabulary.txt")
    q1, q2 = cal["question1"].tolist(), cal["question2"].tolist()
    y = cal["is_duplicate"].to_numpy()
    cos = similarities(encoder, vectorizer, q1, q2, record["config"]["model"]["max_length"])
    ev = record["config"]["evaluate"]
    x = fit_featurizer(train, ngram_range=tuple(ev["baseline_ngram_range"]), min_df=ev["baseline_min_df"]).features(q1, q2, cos)
    groups = pair_components(q1, q2)
    base = boosting_params(RerankConfig())
    lines = ["| setting (changes from the defaults of the time) | OOF ROC-AUC, fold seeds " + ", ".join(map(str, FOLD_SEEDS)) + " | mean |",
             "|---|---|---|"]
    for change in CANDIDATES:
        params = replace(base, **change)
        aucs = [roc_auc_score(y, out_of_fold_scores(x, y, groups, params, RerankConfig().folds, s)) for s in FOLD_SEEDS]
        lines.append(f"| {change or 'defaults'} | {' / '.join(f'{a:.4f}' for a in aucs)} | {sum(aucs) / len(aucs):.4f} |")
        print(lines[-1], flush=True)
    text = page("Reranker settings by out-of-fold calibration ROC-AUC", run.finish(), [
        f"Calibration: {len(y):,} pairs of the run at {record['run_dir']}; current defaults {asdict(base)}", "", *lines])
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
