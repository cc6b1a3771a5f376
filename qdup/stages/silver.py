"""Stage `silver`: search-shaped hard negatives for training, a Parquet split of its own gated by its data contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdup.config import SPLIT_NAMES, TrainConfig, ValidateConfig
from qdup.data import contracts
from qdup.data.silver import SILVER_FILE, write_silver
from qdup.data.splits import read_split
from qdup.search.negatives import search_negatives

# The training region: its questions are the only ones the silver split may hold.
REGION_SPLITS = ("train", "negatives")


def build_silver(splits_dir: Path, train_cfg: TrainConfig, validate_cfg: ValidateConfig, out_dir: Path) -> dict[str, Any]:
    """Write `out_dir/silver.parquet`: each training question's BM25 neighbours outside its duplicate cluster
    (`search_negatives`, train.search_negatives_depth per question), none of them a question of another split.

    Raises `contracts.ContractViolation` when the split fails its contract (validate.silver_suite).
    """
    parts = {name: read_split(splits_dir / f"{name}.parquet") for name in SPLIT_NAMES}
    held_out = [parts[name] for name in SPLIT_NAMES if name not in REGION_SPLITS]
    silver = search_negatives(parts["train"], parts["negatives"], held_out, train_cfg.search_negatives_depth)
    suite = validate_cfg.silver_suite
    report = contracts.validate_frame(silver, suite, "silver", shown=validate_cfg.failed_rows_shown)
    if not report.success:
        raise contracts.ContractViolation(report, "split 'silver'", stem="validation-silver")
    report.write(out_dir, "validation-silver")
    entry = write_silver(silver, out_dir / SILVER_FILE) | {"suite": suite}
    return {"silver": entry, "depth": train_cfg.search_negatives_depth, "source_splits": list(REGION_SPLITS)}
