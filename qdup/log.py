"""Plain logging for domain code: stages take a `log(msg)` callable, stderr by default.

A warning travels through the same callable as text that starts with `WARNING: ` (after a `[stage] ` prefix, or a
`fetch: ` style one): `leveled` gives such a line the WARNING level, which the terminal's stage display shows under
its stage line, whichever process or thread logged it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable

LogFn = Callable[[str], None]

WARNING_MARK = "WARNING: "
_WARNING_LINE = re.compile(r"^(?:\[\w+\] )?(?:\w+: )?WARNING:? ")


def is_warning(message: str) -> bool:
    """Whether a `log` line is a warning (see the module's docstring)."""
    return bool(_WARNING_LINE.match(message))


def warning_text(message: str) -> str:
    """A warning line without its stage prefix and mark: what the terminal shows under the stage line."""
    match = _WARNING_LINE.match(message)
    return message[match.end():] if match else message


def warn(log: LogFn, message: str) -> None:
    """Log `message` through a plain `log` callable as a warning."""
    log(WARNING_MARK + message)


def leveled(logger: logging.Logger | logging.LoggerAdapter) -> LogFn:
    """A `log` callable over `logger`: warning lines at WARNING, the rest at INFO."""

    def log(message: str) -> None:
        logger.log(logging.WARNING if is_warning(message) else logging.INFO, message)

    return log


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
    leveled(get_logger())(message)
