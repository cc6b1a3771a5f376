"""The `qdup-mine` flow: paraphrase mining of an indexed corpus, its chunks as tasks on a Dask cluster or local threads."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from flows.runners import run_chunks, runs_on, task_runner_for
from qdup.config import MineConfig
from qdup.search.index import load_index_cached
from qdup.search.mine import chunk_bounds, merge_mined, write_mined
from tasks.mine import mine_chunk_task


@flow(name="qdup-mine", validate_parameters=True)
def mine_corpus(config: MineConfig) -> dict[str, Any]:
    """Mine `config.index_dir` chunk by chunk and write the distinct pairs to `config.out` (Parquet, atomically).

    Chunks run on the workers of the Dask scheduler `config.dask`, or, without one, on the flow's task
    runner (Prefect's default threads, or a DaskTaskRunner given with `mine_corpus.with_options`).
    Workers read the index themselves: on a cluster, `index_dir` must be on storage they all share.
    """
    if not runs_on(config.dask):
        # Called without the runner its config names (a deployment, a direct call): run again as a
        # subflow on that runner, since a flow's task runner is fixed when its run starts.
        return run_mine_corpus(config)
    # Loaded here too: the merge needs the texts, and a wrong folder or model fails before any task.
    index = load_index_cached(config.index_dir, config.model_version)
    bounds = chunk_bounds(len(index), config.chunk_size or index.cfg.mine_chunk_size)
    tables = run_chunks(mine_chunk_task, [
        {"index_dir": config.index_dir, "model_version": config.model_version, "start": lo, "stop": hi, "k": config.k,
         "threshold": config.threshold}
        for lo, hi in bounds
    ], config.dask)
    table = merge_mined(tables, index)
    write_mined(table, config.out)
    get_run_logger().info("mined %d pairs from %d questions in %d chunks into %s", table.num_rows, len(index), len(bounds), config.out)
    return {"out": str(config.out), "pairs": table.num_rows, "questions": len(index), "chunks": len(bounds)}


def run_mine_corpus(config: MineConfig) -> dict[str, Any]:
    """Run `mine_corpus` on the task runner `config.dask` names (see `flows.runners.task_runner_for`)."""
    return mine_corpus.with_options(task_runner=task_runner_for(config.dask))(config)
