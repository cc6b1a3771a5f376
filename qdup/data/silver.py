"""The silver split: training-region questions paired with candidates that search finds for them, written as Parquet.

One row per (query, candidate) of the training region (the `train` and `negatives` splits); `kind` says what the row
is for training. bm25_negative: a BM25 neighbour of the query that lies outside its duplicate cluster, a search-shaped
hard negative (with a teacher: one it scores low); silver_positive: such a neighbour the teacher scores as a duplicate,
a silver duplicate pair. `teacher` is the teacher's duplicate probability where one labelled the row (null otherwise).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qdup.data import contracts
from qdup.data.splits import COMPRESSION, content_sha256
from qdup.errors import DataContractError
from qdup.fileio import sha256_file

SILVER_FILE = "silver.parquet"
KINDS = ("bm25_negative", "silver_positive")
SCHEMA = pa.schema(
    [
        pa.field("query_qid", pa.int64(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("candidate_qid", pa.int64(), nullable=False),
        pa.field("candidate", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        # 1 = the query's best-scoring neighbour of this kind.
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("bm25", pa.float32(), nullable=False),
        pa.field("teacher", pa.float32(), nullable=True),
    ]
)


def empty_silver() -> pd.DataFrame:
    return SCHEMA.empty_table().to_pandas()


def write_silver(df: pd.DataFrame, path: Path) -> dict[str, object]:
    """Write the silver split with the explicit schema; return its manifest entry (as a split's)."""
    table = pa.Table.from_pandas(df[SCHEMA.names], schema=SCHEMA, preserve_index=False)
    pq.write_table(table, path, compression=COMPRESSION)
    return {
        "file": path.name,
        "rows": len(df),
        "kinds": {k: int((df["kind"] == k).sum()) for k in KINDS},
        "queries": int(df["query_qid"].nunique()),
        "content_sha256": content_sha256(df[SCHEMA.names]),
        "file_sha256": sha256_file(path),
    }


def read_silver(path: Path) -> pd.DataFrame:
    """Read the silver split back with the schema's types."""
    return pq.read_table(path, schema=SCHEMA).to_pandas()


def read_checked_silver(path: Path, suite: str) -> pd.DataFrame:
    """The silver split at `path`, verified before it is trusted: readable with its schema and passing `suite`;
    otherwise DataContractError in one line naming the file, what is wrong and the next step."""
    again = "delete it and run `qdup run` again to rebuild it"
    try:
        frame = read_silver(path)
    except (OSError, pa.ArrowException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataContractError(f"{path}: not a silver split of this version ({first}); {again}") from None
    report = contracts.validate_frame(frame, suite, "silver", shown=1)
    if not report.success:
        problems = "; ".join(" ".join(f"{f.expectation}{f' on {f.column!r}' if f.column else ''} ({f.description}): {f.observed}".split())
                             for f in report.failures)
        raise DataContractError(f"{path}: the silver split fails contract {suite!r}: {problems}; {again}")
    return frame
