"""Where qdup keeps its state (QDUP_HOME) and validation of names that become paths."""

from __future__ import annotations

import os
import re
from pathlib import Path

from qdup.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def qdup_home() -> Path:
    """The root of all qdup state: $QDUP_HOME, or ~/.qdup."""
    return Path(os.environ.get("QDUP_HOME") or Path.home() / ".qdup").expanduser()


def cache_dir(home: Path | None = None) -> Path:
    return (home or qdup_home()) / "cache"


def runs_dir(home: Path | None = None) -> Path:
    """Run records and stage outputs: $QDUP_RUNS_DIR when set (`qdup reproduce` runs in a fresh one), else QDUP_HOME/runs."""
    if home is None and os.environ.get("QDUP_RUNS_DIR"):
        return Path(os.environ["QDUP_RUNS_DIR"]).expanduser()
    return (home or qdup_home()) / "runs"


def store_dir(home: Path | None = None) -> Path:
    return (home or qdup_home()) / "store"


def validate_name(name: str, what: str = "name") -> str:
    """Accept a name that is safe as one path component; refuse '..', slashes and the like."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and no '..'"
        )
    return name
