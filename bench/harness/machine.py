"""Where and when a benchmark ran: the machine, its load, the exact command line and the git commit."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# Libraries whose versions decide the figures; a machine record names the installed ones.
PACKAGES = ("tensorflow", "keras", "onnxruntime", "prefect", "great-expectations", "pandas", "pyarrow", "numpy")


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages (2 decimals): how busy the machine was beside the benchmark."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info(packages: Sequence[str] = PACKAGES) -> dict[str, Any]:
    """CPU model and SIMD flags, cores (usable: this process's affinity; a cgroup CPU limit), RAM, Python, library
    versions, and the load average now (`loadavg_start`)."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        models = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
        info["cpu_model"] = models[0].strip() if models else platform.processor() or platform.machine()
        flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        if flags:
            info["cpu_simd"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags.group(1).split()]
    except OSError:
        info["cpu_model"] = platform.processor() or platform.machine()
    info["cpu_count"] = os.cpu_count()
    info["usable_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota and quota[0] != "max":
            info["cgroup_cpu_limit"] = int(quota[0]) / int(quota[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
        if mem:
            info["ram_gib"] = round(int(mem.group(1)) / 1024**2, 1)
    except OSError:
        pass
    for pkg in packages:
        try:
            info[pkg.replace("-", "_")] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg.replace("-", "_")] = None
    info["loadavg_start"] = loadavg()
    return info


def git_commit(repo: Path = REPO) -> tuple[str, bool | None]:
    """(`git rev-parse --short HEAD`, whether tracked files differ from it); ("unknown", None) outside a checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                               text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)", None
    return head, bool(dirty)


def commit_text(commit: str, dirty: bool | None) -> str:
    return commit + (" (with uncommitted changes)" if dirty else "")


def command_line(prog: str, argv: Sequence[str] | None = None) -> str:
    """The exact command that ran: `python -m <prog>` and its arguments (sys.argv's when argv is None), shell-quoted."""
    args = list(sys.argv[1:] if argv is None else argv)
    return f"python -m {prog}" + (" " + shlex.join(args) if args else "")


def provenance(prog: str, argv: Sequence[str] | None = None, machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every results file starts with: command, commit (and `dirty`), start time (UTC) and the machine."""
    commit, dirty = git_commit()
    return {"command": command_line(prog, argv), "commit": commit_text(commit, dirty), "dirty": dirty,
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine if machine is not None else machine_info()}
