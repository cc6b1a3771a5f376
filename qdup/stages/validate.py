"""Stage `validate`: strict TSV parsing and the blocking raw data contract; the typed data set as Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from qdup.config import ValidateConfig
from qdup.data import contracts

VALIDATED_FILE = "validated.parquet"


def build_validate(data_path: Path, cfg: ValidateConfig, out_dir: Path) -> dict[str, Any]:
    """Validate the TSV at `data_path` with `cfg.raw_suite`; write the report and the typed Parquet to `out_dir`.

    Raises `contracts.ContractViolation` (holding the report) when the contract fails; nothing
    is written to `out_dir` then.
    """
    suite = cfg.raw_suite
    raw, typed = contracts.read_tsv(data_path)
    report = contracts.validate_frame(typed, suite, "raw", raw=raw, shown=cfg.failed_rows_shown)
    if not report.success:
        raise contracts.ContractViolation(report, str(data_path))
    report.write(out_dir, "validation")
    frame = contracts.to_int_frame(typed)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out_dir / VALIDATED_FILE, compression="zstd")
    return {
        "suite": suite,
        "rows": len(frame),
        "duplicates": int(frame["is_duplicate"].sum()),
        "duplicate_share": round(float(frame["is_duplicate"].mean()), 6),
        "missing_questions": {c: int(frame[c].isna().sum()) for c in contracts.TEXT_COLUMNS},
        "expectations": report.evaluated,
        "report": "validation.md",
        "result": "validation.json",
    }
