"""A model folder holding a Lambda layer is refused by `qdup predict` in one line, without running it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras


def test_predict_refuses_a_lambda_layer_in_one_line(tmp_path):
    text = keras.Input(shape=(1,), dtype="float32")
    model = keras.Model(text, keras.layers.Lambda(lambda x: x * 2)(text))
    folder = tmp_path / "model"
    folder.mkdir()
    model.save(folder / "inference.keras")
    (folder / "threshold.json").write_text(json.dumps({"threshold": 0.5, "max_length": 8}))
    env = {**os.environ, "QDUP_HOME": str(tmp_path / "home")}
    ran = subprocess.run(
        [sys.executable, "-m", "qdup.cli", "predict", "--model", str(folder), "a?", "b?"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert ran.returncode == 2
    assert "Traceback" not in ran.stderr
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    # A folder without the derived fast form is loaded through Keras, and the log says so first.
    assert len(lines) == 2, ran.stderr
    assert "has no derived fast-inference file (encoder.onnx): serving its Keras model" in lines[0]
    assert str(folder / "inference.keras") in lines[1] and "safe_mode" in lines[1] and "Lambda" in lines[1]


def test_predict_prints_no_tensorflow_noise(tmp_path):
    """Only qdup's own output: TensorFlow's start-up lines are filtered (qdup --verbose shows them)."""
    env = {**os.environ, "QDUP_HOME": str(tmp_path / "home")}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    ran = subprocess.run(
        [sys.executable, "-m", "qdup.cli", "predict", "--model", str(tmp_path / "missing"), "a?", "b?"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert ran.returncode == 2
    assert ran.stderr.strip().splitlines() == [
        f"qdup: error: --model {tmp_path / 'missing'}: no such export folder (or give a version id or alias; list them with: qdup versions)"
    ]
