"""Batch search: the k nearest indexed questions of many queries as one Arrow table, and the query file it reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from qdup.errors import QdupError
from qdup.search.index import QuestionIndex
from qdup.search.service import VersionSearcher


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


def query_id_type(query_ids: Sequence[Any]) -> pa.DataType:
    """int64 when every query id is an integer (as `read_questions` gives them), else string."""
    return pa.int64() if all(isinstance(i, int) for i in query_ids) else pa.string()


def result_schema(index: QuestionIndex, query_ids: Sequence[Any] = (), reranker: bool = False) -> pa.Schema:
    """Columns of `search_table`, one row per (query, indexed question found).

    `query_id` is the query's id in the queries file; `ranking` the method that ordered the results and
    `rank` their place in it (1 = best); `score` the score that ordered them (descending within a query) and
    `score_kind` what it is (cosine, bm25, rrf, weighted or reranker); `match_id`/`match_question` the indexed
    question found; `encoder_cosine` its cosine with the query under the encoder, which is not what a lexical
    or hybrid ranking sorts by; with a pair `reranker` (the version has one), `reranker_score`; `duplicate`
    the version's calibrated decision: the reranker's (reranker_score >= its threshold) when it has one,
    else the encoder's (encoder_cosine >= threshold).
    """
    match_type = pa.int64() if index.ids.dtype.kind in "iu" else pa.string()
    return pa.schema([
        ("query_id", query_id_type(query_ids)), ("query", pa.string()), ("ranking", pa.string()), ("rank", pa.int64()),
        ("score", pa.float64()), ("score_kind", pa.string()), ("match_id", match_type), ("match_question", pa.string()), ("encoder_cosine", pa.float32()),
        *([("reranker_score", pa.float64())] if reranker else []), ("duplicate", pa.bool_()),
    ])


def search_table(
    searcher: VersionSearcher, queries: Sequence[str], k: int, method: str | None = None, query_ids: Sequence[Any] | None = None,
) -> pa.Table:
    """The k best indexed questions of each query under `method` (None: the version's default), query by query, best first.

    Every search path (one process, threads, a Dask cluster) calls this, so all rank the same way.
    `query_ids` are the queries' ids in their file (default: their positions). A query with fewer than k
    indexed questions gets fewer rows. An empty or blank query is refused with its position.
    """
    queries = list(queries)
    query_ids = list(range(len(queries))) if query_ids is None else list(query_ids)
    if len(query_ids) != len(queries):
        raise QdupError(f"{len(query_ids)} query ids for {len(queries)} queries")
    if k < 1:
        raise QdupError(f"k must be >= 1, got {k}")
    schema = result_schema(searcher.index, query_ids, searcher.reranker is not None)
    if not queries:
        return schema.empty_table()
    method = method or searcher.default_method
    ranking = searcher.ranking(queries, k, method)
    found = ranking.positions >= 0
    q_rows, ranks = np.nonzero(found)
    pos = ranking.positions[found]
    sims = ranking.cosines[found].astype(np.float32)
    take_queries = pa.array(q_rows)
    columns: dict[str, pa.Array] = {}
    rerank, duplicate = searcher.decide(ranking, queries)
    if rerank is not None:
        columns["reranker_score"] = pa.array(rerank[found], pa.float64())
    return pa.table(
        {
            "query_id": pa.array(query_ids, schema.field("query_id").type).take(take_queries),
            "query": pa.array(queries, pa.string()).take(take_queries),
            "ranking": pa.array([method] * len(pos), pa.string()),
            "rank": pa.array(ranks + 1, pa.int64()),
            "score": pa.array(ranking.scores[found], pa.float64()),
            "score_kind": pa.array([ranking.kind] * len(pos), pa.string()),
            "match_id": pa.array(searcher.index.ids.tolist(), schema.field("match_id").type).take(pa.array(pos)),
            "match_question": pa.array(searcher.index.texts, pa.string()).take(pa.array(pos)),
            "encoder_cosine": pa.array(sims, pa.float32()),
            **columns,
            "duplicate": pa.array(duplicate[found], pa.bool_()),
        },
        schema=schema,
    )
