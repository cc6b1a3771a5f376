"""The server's thread pools: set from ServeConfig before TensorFlow runs, in effect afterwards, refused when too late."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A fresh process, as `qdup serve-model` is: the CLI's training defaults in the environment, then serving's settings.
SCRIPT = """
import json
import numpy as np
import tensorflow as tf
from qdup.errors import QdupError
from qdup.serving.settings import ServeConfig
from qdup.serving.threads import apply_serving_threads, serving_threads

cfg = ServeConfig(inference_threads=2, tf_intra_op_threads=3, tf_inter_op_threads=1, faiss_threads=3, blas_threads=1)
applied = apply_serving_threads(cfg)
tf.reduce_sum(tf.ones((64, 64)) @ tf.ones((64, 64))).numpy()  # TensorFlow's runtime starts here, with those pools
np.ones((64, 64)) @ np.ones((64, 64))
try:
    apply_serving_threads(cfg.model_copy(update={"tf_intra_op_threads": 2}))
    late = None
except QdupError as exc:
    late = str(exc)
# OpenMP keeps its setting per thread: a thread started now has OpenMP's default unless it sets its own.
from concurrent.futures import ThreadPoolExecutor
from qdup.serving.threads import set_faiss_threads
with ThreadPoolExecutor(1, initializer=set_faiss_threads, initargs=(cfg.faiss_threads,)) as worker:
    in_worker = worker.submit(serving_threads).result()
print(json.dumps({"applied": applied, "after": serving_threads(), "worker": in_worker, "late": late}))
"""


def test_serving_threads_take_effect_and_a_late_change_is_refused():
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="2")
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    want = {"inference": 2, "tf_intra_op": 3, "tf_inter_op": 1, "faiss_omp": 3}
    for key, value in want.items():
        assert got["applied"][key] == got["after"][key] == got["worker"][key] == value, key
    assert got["after"]["blas"] == [1]
    assert got["late"] and "before it computes" in got["late"]
