"""TensorFlow thread defaults, set through environment variables before TensorFlow starts its runtime."""

from __future__ import annotations

import os

INTRA = "TF_NUM_INTRAOP_THREADS"
INTER = "TF_NUM_INTEROP_THREADS"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tf_thread_defaults(cpus: int) -> dict[str, str]:
    """Two inter-op threads, the CPUs split between them for intra-op work.

    Every training step has independent branches (the two questions through the shared encoder,
    the LSTM's two directions) made of small matrix products: on 2 cores, running two branches at
    once on one thread each beat TensorFlow's default (one pool of all cores per op) by 13-20%
    (README, Performance).
    """
    if cpus < 1:
        raise ValueError(f"cpus must be >= 1, got {cpus}")
    return {INTER: "2", INTRA: str(max(1, cpus // 2))}


def apply_tf_thread_defaults(cpus: int | None = None) -> dict[str, str]:
    """Set the defaults where the environment does not choose; return the settings in effect.

    TensorFlow reads these variables when its runtime starts (the first op), so this must run
    before any TensorFlow computation in the process; importing TensorFlow earlier is fine.
    """
    for key, value in tf_thread_defaults(usable_cpus() if cpus is None else cpus).items():
        os.environ.setdefault(key, value)
    return {INTER: os.environ[INTER], INTRA: os.environ[INTRA]}
