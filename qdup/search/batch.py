"""Batch search: the k nearest indexed questions of many queries as one Arrow table, and the query file it reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from qdup.errors import QdupError
from qdup.search.encoder import QueryEncoder
from qdup.search.index import QuestionIndex


def read_questions(path: Path) -> tuple[list[Any], list[str]]:
    """Ids and texts of a TSV with a 'question' column and an optional 'id' (integers when all are, else strings).

    Without an 'id' column the ids are the row positions.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise QdupError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise QdupError(f"{path}: not a readable TSV ({e})") from None
    if "question" not in df.columns:
        raise QdupError(f"{path}: no 'question' column (columns: {list(df.columns)})")
    ids: list[Any] = df["id"].tolist() if "id" in df.columns else list(range(len(df)))
    if "id" in df.columns:
        try:
            ids = [int(i) for i in ids]
        except ValueError:
            pass  # string ids are kept as strings
    return ids, df["question"].tolist()


def result_schema(index: QuestionIndex) -> pa.Schema:
    """Columns of `search_table`: the query, the rank (1 = nearest) and the indexed question found, with its score."""
    id_type = pa.int64() if index.ids.dtype.kind in "iu" else pa.string()
    return pa.schema([
        ("query", pa.string()), ("rank", pa.int64()), ("id", id_type), ("question", pa.string()),
        ("similarity", pa.float32()), ("duplicate", pa.bool_()),
    ])


def search_table(index: QuestionIndex, encoder: QueryEncoder, queries: Sequence[str], k: int) -> pa.Table:
    """The k nearest indexed questions of each query, query by query, nearest first.

    `duplicate` is the encoder's calibrated decision (similarity >= its threshold). A query with fewer
    than k indexed questions gets fewer rows. An empty or blank query is refused with its position.
    """
    queries = list(queries)
    if k < 1:
        raise QdupError(f"k must be >= 1, got {k}")
    schema = result_schema(index)
    if not queries:
        return schema.empty_table()
    vectors = encoder.encode_one(queries[0]) if len(queries) == 1 else encoder.encode(queries)
    positions, scores = index.search(vectors, k)
    found = positions >= 0
    q_rows, ranks = np.nonzero(found)
    pos = positions[found]
    sims = scores[found].astype(np.float32)
    ids = pa.array(index.ids.tolist(), schema.field("id").type)
    return pa.table(
        {
            "query": pa.array(queries, pa.string()).take(pa.array(q_rows)),
            "rank": pa.array(ranks + 1, pa.int64()),
            "id": ids.take(pa.array(pos)),
            "question": pa.array(index.texts, pa.string()).take(pa.array(pos)),
            "similarity": pa.array(sims, pa.float32()),
            "duplicate": pa.array(sims >= encoder.threshold, pa.bool_()),
        },
        schema=schema,
    )
