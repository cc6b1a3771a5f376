"""The `qdup-search` flow: batch search of a query file, its chunks (encode + search) as tasks on a Dask cluster or threads."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from prefect import flow
from prefect.logging import get_run_logger

from flows.runners import run_chunks, runs_on, task_runner_for
from qdup.config import BatchSearchConfig
from qdup.evaluation.reranker_io import has_reranker
from qdup.search.batch import read_questions, result_schema
from qdup.search.index import load_index_cached
from qdup.search.mine import chunk_bounds, write_mined
from qdup.search.service import search_defaults
from tasks.search import search_chunk_task


@flow(name="qdup-search", validate_parameters=True)
def search_queries(config: BatchSearchConfig) -> dict[str, Any]:
    """The `config.k` best indexed questions of every query of `config.queries`, to `config.out` (Parquet, atomically).

    Ranked by `config.method`, else the version's default (as `qdup search` without --dask ranks).

    The query file is read here and its chunks travel with the tasks; each task encodes its queries with
    `config.model_dir`'s encoder and searches `config.index_dir`, on the workers of the Dask scheduler
    `config.dask` or, without one, on the flow's task runner. Workers read the model and the index
    themselves: on a cluster both folders must be on storage they all share. Rows are in query order.
    """
    if not runs_on(config.dask):
        # See mine_corpus: a flow's task runner is fixed when its run starts.
        return run_search_queries(config)
    query_ids, queries = read_questions(config.queries)
    index = load_index_cached(config.index_dir, config.model_version)
    # Resolved once, so every chunk ranks the same way, and named in the summary.
    method = config.method or search_defaults(index)["method"]
    bounds = chunk_bounds(len(queries), config.chunk_size)
    tables = run_chunks(search_chunk_task, [
        {"index_dir": config.index_dir, "model_dir": config.model_dir, "model_version": config.model_version,
         "queries": queries[lo:hi], "offset": lo, "k": config.k, "method": method, "query_ids": query_ids[lo:hi]}
        for lo, hi in bounds
    ], config.dask)
    schema = result_schema(index, query_ids, has_reranker(config.model_dir))
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    write_mined(table, config.out)
    get_run_logger().info("wrote %d results of %d queries in %d chunks to %s", table.num_rows, len(queries), len(bounds), config.out)
    return {"out": str(config.out), "rows": table.num_rows, "queries": len(queries), "chunks": len(bounds), "method": method}


def run_search_queries(config: BatchSearchConfig) -> dict[str, Any]:
    """Run `search_queries` on the task runner `config.dask` names (see `flows.runners.task_runner_for`)."""
    return search_queries.with_options(task_runner=task_runner_for(config.dask))(config)
