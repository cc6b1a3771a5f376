"""Per-run records: one folder per `qdup run` holding what it produced or why it failed."""

from __future__ import annotations

import datetime as dt
import secrets
import traceback
from pathlib import Path
from typing import Any

from qdup.fileio import atomic_write_json
from qdup.paths import runs_dir
from qdup.stagecache import StageResult


def new_run_dir(home: Path | None = None) -> Path:
    """A fresh, sortable, unique folder under runs/history for this run's records."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = runs_dir(home) / "history" / f"{stamp}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def write_run_record(
    run_dir: Path,
    config: dict[str, Any],
    stages: dict[str, StageResult],
    published: dict[str, Any] | None = None,
    *,
    prefect: dict[str, Any] | None = None,
    error: BaseException | None = None,
) -> Path:
    """`run_dir/run.json`: status, the error of a failed run, every stage done with its folder, what was published."""
    record = {
        "run_dir": str(run_dir),
        "status": "failed" if error is not None else "completed",
        # The traceback is kept here; the terminal shows the one-line message (`qdup --debug` shows it there too).
        "error": None if error is None else {
            "type": type(error).__name__, "message": str(error), "traceback": "".join(traceback.format_exception(error)),
        },
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "prefect": prefect or {},
        "config": config,
        "published": published or None,
        "stages_done": list(stages),
        "stages": {
            name: {"path": str(r.path), "key": r.key, "cached": r.cached, "seconds": r.seconds, "manifest": r.manifest}
            for name, r in stages.items()
        },
    }
    path = run_dir / "run.json"
    atomic_write_json(path, record)
    return path
