"""Process memory between pipeline stages: freed heap handed back to the OS, and each stage's own peak RSS."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
import sys
from functools import cache
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
# The largest peak RSS of a child process that did part of this process's work (`qdup.childproc`) since the last
# `reset_peak_rss`: the caller waits while its child runs, so the two peaks add up.
_child_peak = 0


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "malloc_trim") else None  # glibc only


def release_freed_memory() -> None:
    """Collect garbage, then have glibc's malloc return its free pages to the OS.

    The flow runs every stage in one process, on several threads, each with its own malloc arena: what a stage freed
    stayed in those arenas, so each later stage started from the earlier ones' high-water mark (at full size, much of
    the flow's peak was free heap). Python has no call for this; glibc's malloc_trim is the one.
    Arrow's memory pool, likewise, is asked to release what it holds unused.
    """
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    # Arrow's own allocator (mimalloc) keeps what the stage's Parquet reads freed, until told.
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def reset_peak_rss() -> bool:
    """Start the process's peak RSS (VmHWM) again from its current RSS (Linux); False where that is not possible."""
    global _child_peak
    _child_peak = 0
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def note_child_peak(peak: int | None) -> None:
    """Count a finished child process's peak RSS in this process's (`peak_rss_bytes`) until the next reset."""
    global _child_peak
    _child_peak = max(_child_peak, peak or 0)


def peak_rss_bytes() -> int | None:
    """The process's peak RSS (VmHWM) since it started or since `reset_peak_rss`, plus the largest peak of a child
    process noted since (`note_child_peak`); None off Linux."""
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 + _child_peak if found else None
