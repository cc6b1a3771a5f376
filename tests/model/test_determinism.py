"""train.deterministic: op determinism switched on by the flag, and bit-identical reruns (in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qdup.config import RetrainConfig

pytestmark = pytest.mark.slow

# Op determinism is process-wide and cannot be undone, so the runs happen in a child process.
SCRIPT = r"""
import hashlib, json, sys, tempfile
from pathlib import Path
import keras
from tensorflow.python.framework import config as tf_config
from qdup.config import ModelConfig, SplitConfig, TrainConfig, VocabConfig
from qdup.data.demo import generate_pairs
from qdup.data.splits import make_splits
from qdup.model.train import train_model
from qdup.model.vocab import fit_vectorizer

splits, _ = make_splits(generate_pairs(600, seed=5), SplitConfig(n_train=0.8, n_test=0.2))
train, val = splits["train"], splits["val"]
vec = fit_vectorizer(train["question1"].tolist() + train["question2"].tolist(), VocabConfig())
model_cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=16)
out = []
with tempfile.TemporaryDirectory() as tmp:
    for i, deterministic in enumerate((False, True, True)):
        cfg = TrainConfig(epochs=2, batch_size=32, deterministic=deterministic)
        res = train_model(train, val, vec, model_cfg, cfg, seed=3, work_dir=Path(tmp) / str(i), log=lambda m: None)
        enc = keras.saving.load_model(res.encoder_path, safe_mode=True)
        h = hashlib.sha256(b"".join(w.tobytes() for w in enc.get_weights())).hexdigest()
        out.append({"deterministic": deterministic, "enabled_after": tf_config.is_op_determinism_enabled(),
                    "weights": h, "losses": [[e["loss"], e["val_loss"]] for e in res.history]})
print("RESULT " + json.dumps(out))
"""


def test_flag_enables_op_determinism_and_reruns_are_bit_identical():
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert [r["enabled_after"] for r in runs] == [False, True, True]
    # On CPU training is bit-identical with and without op determinism (same seed, data and configuration).
    assert len({r["weights"] for r in runs}) == 1 and len({json.dumps(r["losses"]) for r in runs}) == 1


def test_deterministic_is_off_by_default():
    assert RetrainConfig().train.deterministic is False
