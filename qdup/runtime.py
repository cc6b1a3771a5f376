"""TensorFlow's runtime settings: thread defaults set before it starts, and a start-up without its noise."""

from __future__ import annotations

import os
import re
import sys
import tempfile

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
    once on one thread each beat TensorFlow's default (one pool of all cores per op) in the training
    benchmark (docs/pipeline/inference.md).
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


# What TensorFlow's C++ runtime prints on a machine without a GPU before absl's logging is set
# up (so TF_CPP_MIN_LOG_LEVEL cannot hide it): not qdup's output, and not a user's problem.
TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} [\d:.]+\s+\d+ \S+\] |"
    r"To enable the following instructions:|This TensorFlow binary is optimized)"
)
VERBOSE = "QDUP_VERBOSE"


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and start its runtime with its start-up noise filtered from stderr.

    File descriptor 2 is redirected while TensorFlow starts (its C++ code writes there
    directly); what was written is replayed except the known start-up lines. QDUP_VERBOSE=1
    (or `qdup --verbose`) shows everything.
    """
    if "tensorflow" in sys.modules:
        return
    if os.environ.get(VERBOSE):
        import tensorflow as tf

        tf.config.list_physical_devices()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            # Device discovery is where a machine without CUDA drivers reports failing cuInit.
            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines() if not TF_NOISE.match(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
