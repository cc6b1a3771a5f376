"""A logger that goes to the Prefect run log inside a flow and to stderr outside one."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

LogFn = Callable[[str], None]


def get_log(name: str = "qdup") -> LogFn:
    """Return `log(msg)`: Prefect's run logger when a run is active, else a stderr logger."""
    try:
        from prefect.context import TaskRunContext, FlowRunContext
        from prefect.logging import get_run_logger

        if TaskRunContext.get() or FlowRunContext.get():
            logger = get_run_logger()
            return logger.info
    except ImportError:  # prefect is a hard dependency; this only guards partial installs
        pass
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger.info
