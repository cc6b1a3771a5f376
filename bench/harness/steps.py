"""Named steps of a benchmark run in child processes: each measured from outside (wall and CPU seconds, peak RSS from
wait4, the load average around it), its own figures handed back as a JSON file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness.machine import REPO
from bench.harness.procs import cpu_seconds, peak_rss_bytes, status_bytes


def say(msg: str, tag: str = "bench") -> None:
    """A progress line on stderr, with the time of day."""
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a child: this checkout first on PYTHONPATH, TensorFlow's chatter and Prefect's analytics off."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DO_NOT_TRACK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def qdup_command() -> list[str]:
    """The `qdup` console script of this interpreter's environment (what a user runs), else `python -m qdup.cli`."""
    exe = Path(sys.executable).parent / "qdup"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "qdup.cli"]


def run_measured(cmd: Sequence[str], log_path: Path, env: dict[str, str], timeout_s: float, cwd: Path = REPO) -> dict[str, Any]:
    """Run `cmd` (its output to log_path, killed with its process group after timeout_s); its exit code, wall seconds,
    CPU seconds and ru_maxrss (bytes) from wait4, and the 1-minute load average before and after it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    with open(log_path, "wb") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_seconds": wall, "ru_maxrss_bytes": usage.ru_maxrss * 1024, "timed_out": wall >= timeout_s,
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "loadavg_1min_before": load_before,
            "loadavg_1min_after": os.getloadavg()[0]}


def log_tail(log_path: Path, chars: int = 2000) -> str:
    return log_path.read_text(errors="replace")[-chars:] if log_path.is_file() else ""


def run_step(cmd: Sequence[str], out_file: Path, log_path: Path, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Run one step's child (`cmd` writes its figures to out_file as JSON): run_measured's figures, `result` (the
    child's figures, None when it wrote none) and `error` (exit code and the log's tail) when it failed."""
    out_file.unlink(missing_ok=True)
    proc = run_measured(cmd, log_path, env, timeout_s)
    proc["result"] = json.loads(out_file.read_text()) if out_file.is_file() else None
    if proc["rc"] != 0 or proc["result"] is None:
        proc["error"] = f"exit {proc['rc']}{' (timed out)' if proc['timed_out'] else ''}: {log_tail(log_path)}"
    return proc


def child_measures() -> dict[str, Any]:
    """What a step's child adds to its own figures at its end: its peak RSS (VmHWM and ru_maxrss), RSS now, CPU seconds."""
    return {"vmhwm_bytes": status_bytes("VmHWM"), "vmrss_end_bytes": status_bytes("VmRSS"), "ru_maxrss_bytes": peak_rss_bytes(),
            "process_cpu_s": cpu_seconds()}


def write_step(out_file: Path, result: dict[str, Any]) -> None:
    """The child's side: its figures and child_measures() as JSON for run_step."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps({**result, **child_measures()}, indent=2, default=str))
