"""Export bundle: safe-mode reload in a fresh process, input validation, and scoring a TSV to Parquet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qdup.config import ModelConfig, VocabConfig
from qdup.errors import QdupError
from qdup.model.encode import similarities
from qdup.model.network import build_encoder
from qdup.model.vocab import fit_vectorizer
from qdup.serving.export import export_models
from qdup.serving.predictor import load_inference, score_file

ROOT = Path(__file__).resolve().parents[2]
CFG = ModelConfig(embedding_dim=8, lstm_units=8, max_length=5)
TEXTS = [
    "how do i learn python",
    "what is the best way to learn python",
    "what is the capital of france",
    "which city is the capital of france",
    "why is the sky blue",
]
Q1 = ["How do I learn Python?", "What is the capital of France?", "why is the sky blue", "zzz unknown", "???"]
Q2 = ["What is the best way to learn Python?", "How do I learn Python?", "why is the sky so blue today", "python", "why"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    vec = fit_vectorizer(TEXTS, VocabConfig())
    keras.utils.set_random_seed(0)
    encoder = build_encoder(vec.vocabulary_size(), CFG)
    encoder.save(tmp / "encoder.keras")
    info = export_models(tmp / "encoder.keras", vec, CFG, 0.61, tmp / "export")
    return tmp, vec, encoder, info


def test_export_writes_the_bundle(bundle):
    tmp, _, _, info = bundle
    out = tmp / "export"
    assert sorted(p.name for p in out.iterdir()) == ["encoder.keras", "encoder.onnx", "inference.keras", "threshold.json",
                                                     "vocabulary.txt"]
    meta = json.loads((out / "threshold.json").read_text())
    assert meta["threshold"] == 0.61 and meta["chosen_on"] == "calibration"
    assert meta["max_length"] == 5 and meta["similarity"] == "cosine"
    assert "predicted duplicate iff similarity >= threshold" in meta["label_convention"]
    assert info["threshold"] == 0.61
    assert set(info["sha256"]) == {"encoder.keras", "inference.keras", "vocabulary.txt", "encoder.onnx"}
    fast = meta["fast_inference"]
    assert fast["file"] == "encoder.onnx" and fast["derived_from"] == "encoder.keras" and fast["masks_padding"] is True
    assert 0 <= fast["max_abs_diff_vs_keras"] <= 1e-5
    assert not [p for p in tmp.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_fresh_process_loads_with_safe_mode_and_agrees(bundle):
    tmp, vec, encoder, _ = bundle
    expected = similarities(encoder, vec, Q1, Q2, CFG.max_length)
    code = (
        "import json, sys, keras, tensorflow as tf\n"
        "import qdup.model.network\n"
        "from qdup.serving.predictor import load_inference\n"
        "d = sys.argv[1]; q1, q2 = json.loads(sys.argv[2])\n"
        "m = keras.saving.load_model(d + '/inference.keras', safe_mode=True)\n"
        "raw = m([tf.constant(q1), tf.constant(q2)]).numpy().tolist()\n"
        "p = load_inference(d)\n"
        "print(json.dumps({'raw': raw, 'predictor': p.similarity(q1, q2).tolist(), 'threshold': p.threshold}))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp / "export"), json.dumps([Q1, Q2])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(got["raw"], expected, atol=1e-5)
    np.testing.assert_allclose(got["predictor"], expected, atol=1e-5)
    assert got["threshold"] == 0.61


def test_predictor_truncates_like_training(bundle):
    tmp, vec, encoder, _ = bundle
    p = load_inference(tmp / "export")
    long = "how do i learn python " + "and also java " * 50
    truncated = "how do i learn python"  # max_length = 5 tokens
    sim = p.similarity([long, long], [truncated, "what is the capital of france"])
    assert sim[0] == pytest.approx(1.0, abs=1e-5)
    assert sim[1] == pytest.approx(similarities(encoder, vec, [long], ["what is the capital of france"], 5)[0], abs=1e-5)
    pairs = ([long, long], [truncated, "why"])
    np.testing.assert_array_equal(p.predict(*pairs), p.similarity(*pairs) >= 0.61)
    assert p.similarity([], []).shape == (0,)


@pytest.mark.parametrize(
    "q1, q2, match",
    [
        (["fine", ""], ["a", "b"], r"question1\[1\] is empty or whitespace-only: ''"),
        (["fine", "ok"], ["a", " \t\n "], r"question2\[1\] is empty or whitespace-only"),
        ([None, "ok"], ["a", "b"], r"question1\[0\] is not a string \(NoneType\): None"),
        (["ok", "ok", 42], ["a", "b", "c"], r"question1\[2\] is not a string \(int\): 42"),
        ("a single string", ["a"], "not a single str"),
        (["a", "b"], ["a"], "differ in length"),
    ],
)
def test_predictor_rejects_bad_questions(bundle, q1, q2, match):
    p = load_inference(bundle[0] / "export")
    with pytest.raises(QdupError, match=match):
        p.similarity(q1, q2)


def test_export_refuses_a_bad_threshold_and_leaves_nothing(bundle, tmp_path):
    _, vec, _, _ = bundle
    for bad in (1.5, float("nan")):
        with pytest.raises(QdupError, match="threshold"):
            export_models(bundle[0] / "encoder.keras", vec, CFG, bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(QdupError, match="encoder file not found"):
        export_models(tmp_path / "nope.keras", vec, CFG, 0.5, tmp_path / "out")
    with pytest.raises(QdupError, match="not a qdup export"):
        load_inference(tmp_path)


@pytest.mark.parametrize("with_id", [True, False])
def test_score_file(bundle, tmp_path, with_id):
    p = load_inference(bundle[0] / "export")
    frame = pd.DataFrame({"question1": Q1, "question2": Q2})
    if with_id:
        frame.insert(0, "id", [10, 11, 12, 13, 14])
    tsv = tmp_path / "pairs.tsv"
    frame.to_csv(tsv, sep="\t", index=False)
    calls: list[tuple[int, int]] = []
    info = score_file(p, tsv, tmp_path / "scores.parquet", chunk_size=2, progress=lambda d, t: calls.append((d, t)))
    table = pq.read_table(tmp_path / "scores.parquet")
    expected_cols = (["id"] if with_id else []) + ["similarity", "duplicate"]
    assert table.column_names == expected_cols
    assert str(table.schema.field("similarity").type) == "float"
    assert str(table.schema.field("duplicate").type) == "bool"
    out = table.to_pandas()
    np.testing.assert_allclose(out["similarity"], p.similarity(Q1, Q2), atol=1e-6)
    assert out["duplicate"].tolist() == (out["similarity"] >= 0.61).tolist()
    if with_id:
        assert out["id"].tolist() == [10, 11, 12, 13, 14]
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert info["rows"] == 5 and info["duplicates"] == int(out["duplicate"].sum())


def test_score_file_names_the_file_and_the_problem(bundle, tmp_path):
    p = load_inference(bundle[0] / "export")
    missing = tmp_path / "missing_col.tsv"
    missing.write_text("id\tquestion1\n1\thello\n")
    with pytest.raises(QdupError, match=r"missing_col\.tsv has no 'question2' column"):
        score_file(p, missing, tmp_path / "out.parquet")
    blank = tmp_path / "blank.tsv"
    blank.write_text("question1\tquestion2\nhello\tworld\nhi\t\n")
    with pytest.raises(QdupError, match=r"blank\.tsv: question2 of data row 1 \(file line 3\) is empty"):
        score_file(p, blank, tmp_path / "out.parquet")
    with pytest.raises(QdupError, match="not found"):
        score_file(p, tmp_path / "nope.tsv", tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_a_pair_scores_the_same_whatever_it_is_batched_with(bundle):
    p = load_inference(bundle[0] / "export")
    assert p.runtime == "onnxruntime"
    # Repeated questions of very different lengths (several length buckets), batched in different sizes.
    rng = np.random.default_rng(0)
    words = ["how", "do", "i", "learn", "python", "best", "way", "capital", "france", "sky", "blue"]
    pool = [" ".join(rng.choice(words, size=n)) for n in rng.integers(1, 90, size=40)]
    q1 = [pool[i] for i in rng.integers(0, len(pool), size=200)]
    q2 = [pool[i] for i in rng.integers(0, len(pool), size=200)]
    together = p.similarity(q1, q2, batch_size=16)
    alone = np.concatenate([p.similarity([a], [b]) for a, b in zip(q1[:40], q2[:40], strict=True)])
    np.testing.assert_allclose(alone, together[:40], atol=1e-6)
    np.testing.assert_allclose(p.similarity(q1, q2, batch_size=1000), together, atol=1e-6)
    # The Keras encoder agrees: the fast form is a derived copy of it.
    np.testing.assert_allclose(together, similarities(bundle[2], bundle[1], q1, q2, CFG.max_length), atol=1e-5)
    assert p.similarity(pool[:1] * 70, pool[:1] * 70) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(QdupError, match="batch_size must be >= 1"):
        p.similarity(q1, q2, batch_size=0)
