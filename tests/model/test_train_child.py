"""The vocabulary and train stages in a child process (qdup.stages.train.build_train_in_child): the same outputs as in process,
progress lines in the caller as epochs end, failures raised in the caller, and a resume after an interruption."""

from __future__ import annotations

import pytest

from qdup.config import ModelConfig, TrainConfig, VocabConfig
from qdup.data.demo import generate_pairs
from qdup.data.splits import write_split
from qdup.errors import QdupError
from qdup.log import is_warning, warning_text
from qdup.stages.train import build_train, build_train_in_child
from qdup.stages.vocab import build_vocab, build_vocab_in_child

pytestmark = pytest.mark.slow

MODEL = ModelConfig(embedding_dim=16, lstm_units=16, max_length=12, subwords=False)
TRAIN = TrainConfig(epochs=3, batch_size=32, early_stopping_patience=5)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-child")
    splits = root / "splits"
    splits.mkdir()
    pairs = generate_pairs(900, seed=3)
    write_split(pairs.iloc[:700].reset_index(drop=True), splits / "train.parquet")
    for name in ("val", "test"):
        write_split(pairs.iloc[700:].reset_index(drop=True), splits / f"{name}.parquet")
    (root / "vocab").mkdir()
    build_vocab(splits, VocabConfig(), root / "vocab")
    return root, splits, root / "vocab" / "vocabulary.txt"


def _without_times(manifest: dict) -> dict:
    """The manifest less what differs between any two runs: epoch seconds, and the encoder file's hash (Keras writes
    the save time into the file; its weights are compared instead)."""
    kept = {k: v for k, v in manifest.items() if k != "encoder_sha256"}
    return {**kept, "history": [{k: v for k, v in h.items() if k != "seconds"} for h in manifest["history"]]}


def _weights(out):
    import keras
    import numpy as np

    return [np.asarray(w) for w in keras.saving.load_model(out / "encoder.keras", safe_mode=True, compile=False).get_weights()]


def _run(build, root, splits, vocab_file, name, **hooks):
    out, work = root / f"{name}-out", root / f"{name}-work"
    out.mkdir(exist_ok=True)
    return build(splits, vocab_file, MODEL, TRAIN, 7, work, out, **hooks), out, work


def test_in_a_child_the_stage_gives_the_same_manifest_and_progress_reaches_the_caller(prepared):
    root, splits, vocab_file = prepared
    here, here_out, _ = _run(build_train, root, splits, vocab_file, "here")
    lines, epochs = [], []
    child, out, work = _run(build_train_in_child, root, splits, vocab_file, "child", log=lines.append,
                            on_epoch_end=lambda e, t, logs: epochs.append((e, t)))
    assert _without_times(child) == _without_times(here)
    assert all((a == b).all() for a, b in zip(_weights(out), _weights(here_out), strict=True))
    assert (out / "encoder.keras").is_file() and (out / "tensorboard").is_dir() and not work.exists()
    assert epochs == [(1, 3), (2, 3), (3, 3)]
    assert [line.split(" loss=")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]


def test_an_interrupted_child_resumes_from_its_checkpoint_and_its_failure_reaches_the_caller(prepared):
    root, splits, vocab_file = prepared

    def stop_after_first(epoch, total, logs):
        if epoch == 1:
            raise QdupError("stopped by the caller")

    with pytest.raises(QdupError, match="stopped by the caller"):
        _run(build_train_in_child, root, splits, vocab_file, "resume", on_epoch_end=stop_after_first)
    assert (root / "resume-work" / "checkpoints" / "state.json").is_file()
    lines = []
    resumed, _, _ = _run(build_train_in_child, root, splits, vocab_file, "resume", log=lines.append)
    assert resumed["resumed_from_epoch"] >= 1 and any(
        is_warning(line) and warning_text(line).startswith("resuming from epoch") for line in lines)
    here, _, _ = _run(build_train, root, splits, vocab_file, "whole")
    assert _without_times(resumed)["history"] == _without_times(here)["history"]
    assert resumed["best_epoch"] == here["best_epoch"]


def test_a_training_error_in_the_child_is_raised_with_its_message(prepared):
    root, splits, vocab_file = prepared
    with pytest.raises(QdupError, match="hard_negatives=0.5 needs the negatives split"):
        build_train_in_child(splits, vocab_file, MODEL, TRAIN.model_copy(update={"hard_negatives": 0.5}), 7,
                             root / "neg-work", root)


def test_the_vocabulary_fitted_in_a_child_is_the_one_fitted_in_process(prepared):
    root, splits, vocab_file = prepared
    (root / "vocab-child").mkdir()
    manifest = build_vocab_in_child(splits, VocabConfig(), root / "vocab-child")
    assert manifest == build_vocab(splits, VocabConfig(), root / "vocab")
    assert (root / "vocab-child" / "vocabulary.txt").read_bytes() == vocab_file.read_bytes()
