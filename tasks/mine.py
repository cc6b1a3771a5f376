"""Thin Prefect task of mining: one chunk of an index's questions, on whichever worker the flow's runner picks."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from prefect import task

from tasks.common import TASK_OPTIONS, shared_folder


@task(name="mine-chunk", task_run_name="mine-chunk-{start}-{stop}", **TASK_OPTIONS)
def mine_chunk_task(
    index_dir: Path, model_version: str | None, start: int, stop: int, k: int | None, threshold: float | None
) -> pa.Table:
    """Pairs of the questions at positions [start, stop) (`qdup.search.mine.mine_chunk`).

    The index is read from `index_dir` by the process running the task, once per process (a worker
    keeps it for its next chunks): on a cluster that folder must be at the same path on every worker.
    """
    from qdup.search.index import load_index_cached
    from qdup.search.mine import mine_chunk

    return mine_chunk(load_index_cached(shared_folder(index_dir, "index"), model_version), start, stop, k, threshold)
