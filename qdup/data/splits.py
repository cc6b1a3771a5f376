"""Positional train/val/test/calibration splits of the validated data, written as Parquet."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qdup.config import SplitConfig
from qdup.errors import ConfigError
from qdup.fileio import sha256_file

SPLITS = ("train", "val", "test", "calibration")
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("qid1", pa.int64(), nullable=False),
        pa.field("qid2", pa.int64(), nullable=False),
        pa.field("question1", pa.string(), nullable=False),
        pa.field("question2", pa.string(), nullable=False),
        # Label convention: 1 = the two questions have the same intent (duplicate), 0 = not.
        pa.field("is_duplicate", pa.int8(), nullable=False),
    ]
)
COMPRESSION = "zstd"


def resolve_count(value: float, total: int) -> int:
    """A count (>= 1) is taken as is; a fraction (< 1) is a share of all rows."""
    return int(value) if value >= 1 else int(total * value)


def plan_splits(total: int, cfg: SplitConfig) -> tuple[int, int]:
    n_train = resolve_count(cfg.n_train, total)
    n_test = resolve_count(cfg.n_test, total)
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"n_train={cfg.n_train} and n_test={cfg.n_test} leave an empty split of {total} rows")
    if n_train + n_test > total:
        raise ConfigError(
            f"the data has {total:,} rows, fewer than n_train + n_test = {n_train:,} + {n_test:,} = "
            f"{n_train + n_test:,}; pass smaller counts or fractions of the data, e.g. "
            f"--n-train 0.8 --n-test 0.2"
        )
    return n_train, n_test


def make_splits(df: pd.DataFrame, cfg: SplitConfig) -> tuple[dict[str, pd.DataFrame], dict[str, object]]:
    """Split like the reference course, by position in file order; return splits and facts.

    - rows [0, n_train) are the training range, rows [n_train, n_train + n_test) are `test`;
    - the duplicates of the training range are cut (1 - val_fraction) / val_fraction in file
      order into `train` and `val`;
    - `calibration` is every pair (both labels) of the training-range rows from the first
      validation duplicate on: none of it is trained on, so thresholds can be chosen there.
    Rows with a missing question are dropped from each split afterwards (and counted), so
    that the positions stay those of the original file.
    """
    n_train, n_test = plan_splits(len(df), cfg)
    train_range = df.iloc[:n_train]
    test = df.iloc[n_train : n_train + n_test]
    dup_positions = (train_range["is_duplicate"] == 1).to_numpy().nonzero()[0]
    if len(dup_positions) < 2:
        raise ConfigError(f"the first {n_train:,} rows hold {len(dup_positions)} duplicate pairs; at least 2 are needed")
    cut = int(len(dup_positions) * (1 - cfg.val_fraction))
    cut = min(max(cut, 1), len(dup_positions) - 1)
    train = train_range.iloc[dup_positions[:cut]]
    val = train_range.iloc[dup_positions[cut:]]
    val_start = int(dup_positions[cut])
    calibration = train_range.iloc[val_start:]
    out: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    for name, part in (("train", train), ("val", val), ("test", test), ("calibration", calibration)):
        keep = part["question1"].notna() & part["question2"].notna()
        dropped[name] = int((~keep).sum())
        out[name] = part[keep].reset_index(drop=True)
    facts = {
        "n_rows": len(df),
        "n_train": n_train,
        "n_test": n_test,
        "val_fraction": cfg.val_fraction,
        "val_start_row": val_start,
        "dropped_missing_question": dropped,
    }
    return out, facts


def content_sha256(df: pd.DataFrame) -> str:
    """Hash of a split's values and schema, independent of Parquet encoder versions."""
    h = hashlib.sha256(str([(c, str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def write_split(df: pd.DataFrame, path: Path) -> dict[str, object]:
    """Write one split as Parquet with the explicit schema; return its manifest entry."""
    table = pa.Table.from_pandas(df[SCHEMA.names], schema=SCHEMA, preserve_index=False)
    pq.write_table(table, path, compression=COMPRESSION)
    return {
        "file": path.name,
        "rows": len(df),
        "duplicates": int((df["is_duplicate"] == 1).sum()),
        "content_sha256": content_sha256(df[SCHEMA.names]),
        "file_sha256": sha256_file(path),
        "id_min": int(df["id"].min()) if len(df) else None,
        "id_max": int(df["id"].max()) if len(df) else None,
    }


def read_split(path: Path) -> pd.DataFrame:
    """Read a split back with the schema's types (strings as Python str)."""
    return pq.read_table(path, schema=SCHEMA).to_pandas()
