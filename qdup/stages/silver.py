"""Stage `silver`: search-shaped hard negatives for training, a Parquet split of its own gated by its data contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from qdup.config import SPLIT_NAMES, EvalConfig, RerankConfig, TrainConfig, ValidateConfig
from qdup.data import contracts
from qdup.data.silver import SILVER_FILE, write_silver
from qdup.data.splits import read_split
from qdup.search.negatives import search_negatives, teacher_kinds

# The training region: its questions are the only ones the silver split may hold.
REGION_SPLITS = ("train", "negatives")


def build_silver(splits_dir: Path, train_cfg: TrainConfig, validate_cfg: ValidateConfig, out_dir: Path, *,
                 rerank_cfg: RerankConfig | None = None, eval_cfg: EvalConfig | None = None, seed: int = 0) -> dict[str, Any]:
    """Write `out_dir/silver.parquet`: each training question's BM25 neighbours outside its duplicate cluster
    (`search_negatives`, train.search_negatives_depth per question), none of them a question of another split.

    When train.uses_teacher, every neighbour is scored by the teacher (`qdup.evaluation.teacher.cross_fit_scores`: the
    reranker's trees, `rerank_cfg`, on `eval_cfg`'s lexical features, cross-fitted with `seed` on the training region's
    labelled pairs) and sorted into silver duplicates and search negatives by its thresholds (`teacher_kinds`).

    Raises `contracts.ContractViolation` when the split fails its contract (validate.silver_suite).
    """
    parts = {name: read_split(splits_dir / f"{name}.parquet") for name in SPLIT_NAMES}
    held_out = [parts[name] for name in SPLIT_NAMES if name not in REGION_SPLITS]
    silver = search_negatives(parts["train"], parts["negatives"], held_out, train_cfg.search_negatives_depth)
    teacher = None
    if train_cfg.uses_teacher and len(silver):
        from qdup.evaluation.teacher import cross_fit_scores
        from qdup.stages.rerank import boosting_params

        rerank_cfg, eval_cfg = rerank_cfg or RerankConfig(), eval_cfg or EvalConfig()
        labelled = pd.concat([parts[name] for name in REGION_SPLITS], ignore_index=True)
        scores, teacher = cross_fit_scores(labelled, silver["query"], silver["candidate"], boosting_params(rerank_cfg),
                                           rerank_cfg.folds, seed, tuple(eval_cfg.baseline_ngram_range), eval_cfg.baseline_min_df)
        teacher |= {"positive_score": train_cfg.silver_positive_score, "negative_score": train_cfg.silver_negative_score,
                    "candidates": len(silver)}
        silver = teacher_kinds(silver, scores, train_cfg.silver_positive_score, train_cfg.silver_negative_score)
    suite = validate_cfg.silver_suite
    report = contracts.validate_frame(silver, suite, "silver", shown=validate_cfg.failed_rows_shown)
    if not report.success:
        raise contracts.ContractViolation(report, "split 'silver'", stem="validation-silver")
    report.write(out_dir, "validation-silver")
    entry = write_silver(silver, out_dir / SILVER_FILE) | {"suite": suite}
    return {"silver": entry, "depth": train_cfg.search_negatives_depth, "source_splits": list(REGION_SPLITS),
            **({"teacher": teacher} if teacher else {})}
