"""Stage `splits`: train/negatives/val/test/calibration splits as Parquet, each gated by its data contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from qdup.config import SplitConfig, ValidateConfig
from qdup.data import contracts, splits
from qdup.data.feedback import join_training, read_feedback


def build_splits(
    validated_parquet: Path, split_cfg: SplitConfig, validate_cfg: ValidateConfig, out_dir: Path, *, seed: int | None = None,
    feedback_parquet: Path | None = None,
) -> dict[str, Any]:
    """Cut the validated data set into the splits of `splits.SPLITS` under `out_dir`, validating each with its suite.

    `seed` draws the components of split.mode="question_disjoint". `feedback_parquet`: a feedback snapshot whose
    pairs join train and negatives (`qdup.data.feedback.join_training`; never test). Raises `contracts.ContractViolation`
    for the first split that fails its contract.
    """
    frame = pq.read_table(validated_parquet).to_pandas()
    parts, facts = splits.make_splits(frame, split_cfg, seed=seed)
    if feedback_parquet is not None:
        parts, facts["feedback"] = join_training(parts, frame, read_feedback(feedback_parquet))
    entries: dict[str, Any] = {}
    for name, part in parts.items():
        suite = validate_cfg.split_suites[name]
        report = contracts.validate_frame(part, suite, name, shown=validate_cfg.failed_rows_shown)
        if not report.success:
            raise contracts.ContractViolation(report, f"split {name!r}", stem=f"validation-{name}")
        report.write(out_dir, f"validation-{name}")
        entries[name] = splits.write_split(part, out_dir / f"{name}.parquet") | {"suite": suite}
    return {"splits": entries, **facts}
