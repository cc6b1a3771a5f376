"""The server's own thread pools (TensorFlow, faiss's OpenMP, BLAS), set from ServeConfig before the model runs."""

from __future__ import annotations

import os
from typing import Any

from qdup.errors import QdupError
from qdup.serving.settings import ServeConfig

# Read by BLAS libraries when they load: those loaded later (SciPy's, with the reranker) start with the setting too.
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def apply_serving_threads(cfg: ServeConfig) -> dict[str, Any]:
    """Set the pools and return what is in effect (`serving_threads`).

    TensorFlow fixes its pools when its runtime starts (the first op), so this must run before
    any TensorFlow computation in the process; afterwards a different setting is refused by name.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.tf_intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.tf_inter_op_threads)
    except RuntimeError as exc:
        raise QdupError(f"TensorFlow already runs with its thread pools set ({exc}): serving threads must be set before it computes") from exc
    for name in BLAS_ENV:
        os.environ[name] = str(cfg.blas_threads)
    import faiss
    from threadpoolctl import threadpool_limits

    # Without a `with`: the limit stays for the life of the process (the server's). Before faiss's own
    # setting: faiss's OpenBLAS is built on OpenMP, and limiting it sets the OpenMP pool faiss shares.
    threadpool_limits(limits=cfg.blas_threads, user_api="blas")
    faiss.omp_set_num_threads(cfg.faiss_threads)
    return serving_threads()


def set_faiss_threads(threads: int) -> None:
    """Set faiss's OpenMP threads for the calling thread: OpenMP keeps the setting per thread, so the
    search worker sets its own (threads started later get OpenMP's default, not the main thread's)."""
    import faiss

    faiss.omp_set_num_threads(threads)


def serving_threads() -> dict[str, Any]:
    """The pools in effect now: TensorFlow's settings (0: its default), faiss's OpenMP threads in the calling thread,
    the loaded BLAS libraries' threads."""
    import faiss
    import tensorflow as tf
    from threadpoolctl import threadpool_info

    return {
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "faiss_omp": faiss.omp_get_max_threads(),
        # A BLAS built on OpenMP (faiss's own) shares faiss's OpenMP pool, so it is counted there.
        "blas": sorted({int(lib["num_threads"]) for lib in threadpool_info()
                        if lib.get("user_api") == "blas" and lib.get("threading_layer") != "openmp"}),
    }
