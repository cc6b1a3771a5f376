"""What every Prefect task shares: task options, the run logger, artifacts, flow-run facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger

from qdup.data.contracts import ContractViolation
from qdup.errors import DataContractError, QdupError
from qdup.log import LogFn, leveled, stderr_log

# Stages cache their outputs by content (qdup.stagecache), so Prefect's own input-hash
# cache is off: it would key on paths and replay stale files.
TASK_OPTIONS: dict[str, Any] = dict(cache_policy=NO_CACHE, persist_result=False)


def shared_folder(path: Path, what: str) -> Path:
    """`path` if it is a folder here; else QdupError saying that workers of a cluster need it at the same path."""
    if not Path(path).is_dir():
        import socket

        raise QdupError(f"{path}: no {what} folder on {socket.gethostname()}; every worker of a cluster needs it at "
                        "this same path (shared storage)")
    return Path(path)


def run_log() -> LogFn:
    """Prefect's run logger inside a flow or task run (warning lines at WARNING: `qdup.log.leveled`), else stderr."""
    if TaskRunContext.get() or FlowRunContext.get():
        return leveled(get_run_logger())
    return stderr_log


def artifact(key: str, markdown: str, description: str) -> None:
    create_markdown_artifact(key=key, markdown=markdown, description=description)


def fail_with_report(error: ContractViolation, run_dir: Path) -> None:
    """Keep a failed contract's report with the run, show it in the UI, and fail the task by name."""
    json_path, md_path = error.report.write(run_dir, error.stem)
    artifact("qdup-validation", error.report.markdown(), f"FAILED: {error.report.suite} on {error.report.data_name}")
    raise DataContractError(f"{error}\n  report: {md_path}\n  GE result: {json_path}") from None


def flow_run_info() -> dict[str, Any]:
    """The Prefect flow run this code runs in, if any (for lineage)."""
    from prefect.runtime import deployment, flow_run

    return {
        "flow_run_id": flow_run.get_id(),
        "flow_run_name": flow_run.get_name(),
        "deployment": deployment.get_name(),
    }
