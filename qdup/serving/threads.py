"""The server's own thread pools (ONNX Runtime, TensorFlow, faiss's OpenMP, BLAS), set from ServeConfig before the model runs."""

from __future__ import annotations

import os
import sys
from typing import Any

from qdup.errors import QdupError
from qdup.model.fast import THREADS_ENV
from qdup.runtime import INTER, INTRA
from qdup.serving.settings import ServeConfig

# Read by BLAS libraries when they load: those loaded later (SciPy's, with the reranker) start with the setting too.
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def apply_serving_threads(cfg: ServeConfig) -> dict[str, Any]:
    """Set the pools and return what is in effect (`serving_threads`).

    The encoder's fast form reads its threads when a version loads (QDUP_INFERENCE_THREADS). TensorFlow runs
    only a version exported without the fast form; it is not imported here (the server does not need it
    otherwise): its pools go into the variables it reads when it starts, or, when it is already imported,
    into its settings, which it fixes at its first op; afterwards a different setting is refused by name.
    """
    os.environ[THREADS_ENV] = str(cfg.inference_threads)
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.tf_intra_op_threads)
            tf.config.threading.set_inter_op_parallelism_threads(cfg.tf_inter_op_threads)
        except RuntimeError as exc:
            raise QdupError(f"TensorFlow already runs with its thread pools set ({exc}): serving threads must be set before it computes") from exc
    else:
        os.environ[INTRA] = str(cfg.tf_intra_op_threads)
        os.environ[INTER] = str(cfg.tf_inter_op_threads)
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
    from threadpoolctl import threadpool_info

    if "tensorflow" in sys.modules:
        import tensorflow as tf

        tf_pools = {"tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    else:  # not started: what it will read when a version without the fast form needs it
        tf_pools = {"tf_intra_op": int(os.environ.get(INTRA, 0)), "tf_inter_op": int(os.environ.get(INTER, 0))}
    return {
        "inference": int(os.environ.get(THREADS_ENV, 0)),
        **tf_pools,
        "faiss_omp": faiss.omp_get_max_threads(),
        # A BLAS built on OpenMP (faiss's own) shares faiss's OpenMP pool, so it is counted there.
        "blas": sorted({int(lib["num_threads"]) for lib in threadpool_info()
                        if lib.get("user_api") == "blas" and lib.get("threading_layer") != "openmp"}),
    }
