"""Plain logging for domain code: stages take a `log(msg)` callable, stderr by default."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

LogFn = Callable[[str], None]


def get_logger(name: str = "qdup") -> logging.Logger:
    """A stderr logger with qdup's format (handlers added once)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def stderr_log(message: str) -> None:
    """The default `log` of domain functions outside a flow."""
    get_logger().info(message)
