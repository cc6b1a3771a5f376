"""Where a flow's chunk tasks run: the workers of a Dask cluster given its scheduler's address, else this process's threads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import Task
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from qdup.errors import QdupError


def task_runner_for(address: str | None) -> TaskRunner:
    """A DaskTaskRunner connected to the scheduler at `address` (tcp://HOST:PORT), or Prefect's default threads.

    How long an unanswered connection waits is Dask's `distributed.comm.timeouts.connect` (30 s unless
    configured, e.g. DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s).
    """
    if address is None:
        return ThreadPoolTaskRunner()
    from prefect.settings import get_current_settings

    # Workers report their task runs to the API the flow uses; without a configured server each worker
    # would start a temporary one of its own (slow, and its records are lost with the worker).
    if not get_current_settings().api.url:
        raise QdupError(f"--dask {address}: the workers need a Prefect server to report to: start one (`prefect server start`) "
                        "and set PREFECT_API_URL to its API (http://HOST:4200/api, reachable from the workers)")
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def check_scheduler(address: str) -> int:
    """The number of workers of the Dask scheduler at `address`; QdupError when it cannot be reached or has none.

    Waits at most Dask's connect timeout (`distributed.comm.timeouts.connect`) for the scheduler and
    as long again for a first worker, so a wrong address fails in one line before any flow run starts.
    """
    import dask
    import distributed
    from dask.utils import parse_timedelta

    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except OSError as exc:
        raise QdupError(f"--dask {address}: cannot reach the Dask scheduler ({exc})") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise QdupError(f"--dask {address}: no worker connected to the scheduler within {timeout:g} s") from None
        return len(client.scheduler_info()["workers"])


def runs_on(address: str | None) -> bool:
    """Whether the running flow's task runner is the one `address` names (None: whatever runner the flow was given)."""
    if address is None:
        return True
    from prefect_dask import DaskTaskRunner

    runner = FlowRunContext.get().task_runner
    return isinstance(runner, DaskTaskRunner) and runner.address == address


def run_chunks(task: Task, parameters: Sequence[dict[str, Any]], address: str | None) -> list[Any]:
    """One run of `task` per parameter set on the flow's task runner, all submitted before any is awaited.

    Results come back in submission order; the first failed chunk's error is raised.
    """
    try:
        futures = [task.submit(**p) for p in parameters]
    except OSError as exc:
        # The runner connects to the scheduler on its first submission.
        raise QdupError(f"--dask {address}: cannot reach the Dask scheduler ({exc})") from None
    return [f.result() for f in futures]
