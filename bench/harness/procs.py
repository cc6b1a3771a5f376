"""CPU seconds and memory (RSS) of this process, of a finished child, and of a live process tree (Linux /proc)."""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads): unlike wall time, not inflated by other load."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_bytes(children: bool = False) -> int:
    """Peak RSS of this process (ru_maxrss), or with children=True of its largest waited-for child."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss * 1024


def status_bytes(field: str, pid: int | str = "self") -> int | None:
    """A size field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes; None where the process has no such field
    (a zombie) or /proc is unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        if pid == "self":
            return None
        raise
    except OSError:
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """The process and its living descendants (e.g. uvicorn's workers, or the child process a stage trains in)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except FileNotFoundError:  # the thread ended meanwhile
                pass
    return out


def _gone_is_zero(read: Callable[..., Any], pid: int, *args: Any, root: int) -> Any:
    """read(pid, *args) for a descendant that may have ended since it was listed (0 then); the root itself must be there."""
    try:
        return read(pid, *args)
    except (FileNotFoundError, ProcessLookupError):
        if pid == root:
            raise
        return 0


def _status_or_zero(pid: int, field: str) -> int:
    return status_bytes(field, pid) or 0


def tree_status_bytes(pid: int, field: str) -> int:
    """A /proc/PID/status size field summed over the process tree (for VmHWM: an upper bound of the tree's peak)."""
    return sum(_gone_is_zero(_status_or_zero, p, field, root=pid) for p in process_tree(pid))


def tree_rss_bytes(pid: int) -> int:
    """Summed RSS of a process and its living descendants now."""
    return tree_status_bytes(pid, "VmRSS")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its living descendants (from /proc, in clock ticks)."""
    return sum(_gone_is_zero(_cpu, p, root=pid) for p in process_tree(pid))


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has been busy (all processes, all cores) since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    # guest time is already counted in user/nice
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class TreeSampler(threading.Thread):
    """The largest summed RSS of a process tree, sampled every `interval` seconds until `stop()`."""

    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak = root, interval, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.peak = max(self.peak, tree_rss_bytes(self.root))
            except (FileNotFoundError, ProcessLookupError):  # the root ended: nothing more to sample
                return

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak
