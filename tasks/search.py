"""Thin Prefect task of batch search: encode one chunk of queries and search the index, on the runner's worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import task

from tasks.common import TASK_OPTIONS, shared_folder


@task(name="search-chunk", task_run_name="search-chunk-{offset}", **TASK_OPTIONS)
def search_chunk_task(
    index_dir: Path, model_dir: Path, model_version: str | None, queries: list[str], offset: int, k: int,
    method: str | None = None, query_ids: list[Any] | None = None,
) -> pa.Table:
    """The k best indexed questions of `queries` (rows offset.. of the query file; `qdup.search.batch.search_table`).

    Index, encoder (and a hybrid ranking's lexical index) are read by the process running the task, once
    per process: on a cluster `index_dir` and `model_dir` must be at the same path on every worker.
    """
    from qdup.runtime import apply_tf_thread_defaults

    # Before the first TensorFlow op of a worker process; a no-op once TensorFlow runs.
    apply_tf_thread_defaults()
    from qdup.search.batch import search_table
    from qdup.search.service import load_searcher_cached

    index_dir, model_dir = shared_folder(index_dir, "index"), shared_folder(model_dir, "model")
    return search_table(load_searcher_cached(index_dir, model_dir, model_version), queries, k, method, query_ids)
