"""Training: batching, learnability on synthetic paraphrases, checkpoint/resume, early stopping."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pandas as pd
import pytest

from qdup.config import ModelConfig, TrainConfig, VocabConfig
from qdup.errors import QdupError
from qdup.model.batches import batch_plan, epoch_seed
from qdup.model.checkpoints import reseed_random_layers
from qdup.model.encode import similarities
from qdup.model.train import make_optimizer, train_model
from qdup.model.vocab import fit_vectorizer

pytestmark = pytest.mark.slow

TOPICS = (
    "python java french guitar chess math physics cooking swimming drawing piano spanish german coding "
    "statistics painting yoga boxing history economics chemistry biology writing singing dancing tennis "
    "golf poker photography rust"
).split()
PLACES = (
    "france spain italy germany japan china india brazil canada mexico egypt kenya peru chile norway "
    "sweden finland poland greece turkey iran iraq russia ukraine cuba nepal vietnam thailand australia argentina"
).split()
TEMPLATES = (
    ("how do i learn {}", "what is the best way to learn {}", TOPICS),
    ("what is the capital of {}", "which city is the capital of {}", PLACES),
    ("why is {} so hard", "what makes {} difficult", TOPICS),
    ("what is the population of {}", "how many people live in {}", PLACES),
    ("is {} worth learning", "should i learn {}", TOPICS),
)
TINY = ModelConfig(embedding_dim=16, lstm_units=16, max_length=12, subwords=False)


def paraphrases(n: int, seed: int) -> pd.DataFrame:
    """n duplicate pairs drawn from the paraphrase templates, with random question casing/punctuation."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b, fillers = TEMPLATES[rng.integers(len(TEMPLATES))]
        x = fillers[rng.integers(len(fillers))]
        q1, q2 = a.format(x), b.format(x)
        if rng.random() < 0.5:
            q1, q2 = q1.capitalize() + "?", q2.capitalize() + "?"
        rows.append((i, q1, q2))
    df = pd.DataFrame(rows, columns=["id", "question1", "question2"])
    df["is_duplicate"] = np.int8(1)
    return df


@pytest.fixture(scope="module")
def data():
    train = paraphrases(600, seed=0)
    val = paraphrases(120, seed=1)
    vec = fit_vectorizer(train["question1"].tolist() + train["question2"].tolist(), VocabConfig())
    return train, val, vec


def test_batch_plan_covers_every_pair_with_sorted_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=1002)
    plan = batch_plan(lengths, 10, epoch_seed(7, 1))
    assert sorted(np.concatenate(plan).tolist()) == list(range(1002))  # the 2-pair remainder is kept
    assert all(len(b) >= 2 for b in plan)
    # Sorted windows: a batch spans few lengths, so padding to its longest wastes little.
    waste = sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in plan) / lengths.sum()
    assert waste < 0.1
    again = batch_plan(lengths, 10, epoch_seed(7, 1))
    assert all(np.array_equal(a, b) for a, b in zip(plan, again, strict=True))
    other = batch_plan(lengths, 10, epoch_seed(7, 2))
    assert not all(np.array_equal(a, b) for a, b in zip(plan, other, strict=True))


@pytest.mark.parametrize("n, batch, expected_batches, dropped", [(21, 10, 2, 1), (22, 10, 3, 0), (20, 10, 2, 0)])
def test_batch_plan_drops_only_a_single_pair_remainder(n, batch, expected_batches, dropped):
    plan = batch_plan(np.ones(n, dtype=int), batch, epoch_seed(0, 1))
    assert len(plan) == expected_batches
    assert sum(len(b) for b in plan) == n - dropped


def test_a_tiny_model_learns_paraphrases(data, tmp_path):
    train, val, vec = data
    lines: list[str] = []
    cfg = TrainConfig(epochs=4, batch_size=32, learning_rate=0.01, loss="triplet")
    result = train_model(train, val, vec, TINY, cfg, seed=0, work_dir=tmp_path, log=lines.append)
    encoder = keras.saving.load_model(result.encoder_path, safe_mode=True)
    q = "How do I learn Python?"
    sim = similarities(
        encoder, vec, [q, q], ["What is the best way to learn Python?", "What is the capital of France?"], TINY.max_length
    )
    # The paraphrase templates put many pairs in one duplicate cluster, never each other's negatives (masked):
    # four epochs open a smaller gap than unmasked training did, but a clear one.
    assert sim[0] > sim[1] + 0.15, sim
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 4
    assert re.fullmatch(r"epoch 3/4 loss=\d+\.\d{4} val_loss=\d+\.\d{4} \(\d+\.\ds\)", epoch_lines[2])
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.epochs_run == 4 and result.resumed_from_epoch is None and not result.stopped_early
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    assert any(result.tensorboard_dir.rglob("events.out.tfevents.*"))
    # Calling again with a finished work_dir trains nothing.
    again = train_model(train, val, vec, TINY, cfg, seed=0, work_dir=tmp_path, log=lines.append)
    assert again.history == result.history
    assert lines[-1].startswith("training already complete at epoch 4")


class Interrupt(Exception):
    pass


def test_resume_after_interruption_continues_where_it_stopped(data, tmp_path):
    train, val, vec = data
    cfg = TrainConfig(epochs=4, batch_size=64, learning_rate=0.01, early_stopping_patience=4)
    small = train.iloc[:300]

    straight = train_model(small, val, vec, TINY, cfg, seed=5, work_dir=tmp_path / "straight", log=lambda m: None)

    seen: list[int] = []

    def stop_after_two(epoch: int, total: int, logs: dict[str, float]) -> None:
        seen.append(epoch)
        assert total == 4 and set(logs) == {"loss", "val_loss", "seconds"}
        if epoch == 2:
            raise Interrupt("killed")

    work = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        train_model(small, val, vec, TINY, cfg, seed=5, work_dir=work, on_epoch_end=stop_after_two, log=lambda m: None)
    state = json.loads((work / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    assert not (work / "encoder.keras").exists()

    lines: list[str] = []
    resumed = train_model(
        small, val, vec, TINY, cfg, seed=5, work_dir=work, on_epoch_end=lambda e, t, logs: seen.append(e),
        log=lines.append,
    )
    assert "WARNING: resuming from epoch 2, the last checkpoint of an interrupted run of this training" in lines
    assert seen == [1, 2, 3, 4]  # epochs 1-2 were not run again
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["3/4", "4/4"]
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 4
    assert resumed.history[:2] == state["history"]
    # Weights, optimizer state and data order all carried over: the same losses as a run never stopped.
    np.testing.assert_allclose(
        [h["loss"] for h in resumed.history], [h["loss"] for h in straight.history], rtol=1e-4
    )
    np.testing.assert_allclose(
        [h["val_loss"] for h in resumed.history], [h["val_loss"] for h in straight.history], rtol=1e-4
    )
    assert sorted(p.name for p in (work / "checkpoints").glob("*.keras")) == sorted(
        {f"epoch-{resumed.best_epoch:04d}.keras", "epoch-0004.keras"}
    )

    with pytest.raises(QdupError, match="different training run"):
        train_model(small, val, vec, TINY, cfg, seed=6, work_dir=work, log=lambda m: None)


def test_early_stopping_restores_the_best_epoch(data, tmp_path):
    train, val, vec = data
    # A learning rate far below float32 resolution leaves the weights, hence val_loss, unchanged:
    # no epoch improves on the first.
    cfg = TrainConfig(epochs=6, batch_size=64, learning_rate=1e-15, early_stopping_patience=2)
    lines: list[str] = []
    result = train_model(train.iloc[:200], val, vec, TINY, cfg, seed=1, work_dir=tmp_path, log=lines.append)
    assert result.stopped_early
    assert result.epochs_run == 3 and result.best_epoch == 1
    assert any(line.startswith("early stopping after epoch 3") for line in lines)


@pytest.mark.parametrize(
    "train_rows, drop, match",
    [
        (1, None, "train split has 1 pairs"),
        (50, "question2", "train split has no 'question2' column"),
    ],
)
def test_training_refuses_unusable_data(data, tmp_path, train_rows, drop, match):
    train, val, vec = data
    df = train.iloc[:train_rows]
    if drop:
        df = df.drop(columns=[drop])
    with pytest.raises(QdupError, match=match):
        train_model(df, val, vec, TINY, TrainConfig(epochs=1), seed=0, work_dir=tmp_path, log=lambda m: None)


def test_make_optimizer_schedules_and_clipping():
    plain = make_optimizer(TrainConfig(learning_rate=0.01), steps_per_epoch=10)
    assert float(plain.learning_rate) == pytest.approx(0.01) and plain.clipnorm is None
    cosine = make_optimizer(TrainConfig(learning_rate=0.01, epochs=5, lr_schedule="cosine", clipnorm=2.0), 10)
    schedule = cosine.get_config()["learning_rate"]
    assert schedule["class_name"] == "CosineDecay" and schedule["config"]["decay_steps"] == 50
    # The optimizer's current rate follows the schedule as its step counter advances.
    for step, rate in ((0, 0.01), (25, 0.005), (50, 0.0)):
        cosine.iterations.assign(step)
        assert float(cosine.learning_rate) == pytest.approx(rate, abs=1e-9)
    assert cosine.clipnorm == 2.0


def test_plateau_schedule_halves_the_rate_and_survives_a_resume(data, tmp_path):
    train, val, vec = data
    # As above, a tiny rate leaves val_loss unchanged: every epoch after the first is a plateau.
    cfg = TrainConfig(
        epochs=4, batch_size=64, learning_rate=1e-12, early_stopping_patience=4,
        lr_schedule="plateau", lr_decay_factor=0.5, lr_decay_patience=1,
    )
    small = train.iloc[:200]
    lines: list[str] = []
    straight = train_model(small, val, vec, TINY, cfg, seed=2, work_dir=tmp_path / "straight", log=lines.append)
    rates = [h["learning_rate"] for h in straight.history]
    np.testing.assert_allclose(rates, [1e-12, 5e-13, 2.5e-13, 1.25e-13], rtol=1e-5)
    assert sum("learning rate" in line for line in lines) == 3
    assert straight.best_epoch == 1 and not straight.stopped_early

    def stop_after_two(epoch, total, logs):
        if epoch == 2:
            raise Interrupt("killed")

    work = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        train_model(small, val, vec, TINY, cfg, seed=2, work_dir=work, on_epoch_end=stop_after_two, log=lambda m: None)
    resumed = train_model(small, val, vec, TINY, cfg, seed=2, work_dir=work, log=lambda m: None)
    np.testing.assert_allclose([h["learning_rate"] for h in resumed.history], rates, rtol=1e-5)


def test_regularised_training_with_cosine_schedule_and_clipping_learns(data, tmp_path):
    train, val, vec = data
    model_cfg = TINY.model_copy(update={"token_dropout": 0.1, "spatial_dropout": 0.1, "output_dropout": 0.1, "l2": 1e-5})
    cfg = TrainConfig(epochs=4, batch_size=32, learning_rate=0.01, lr_schedule="cosine", clipnorm=5.0)
    result = train_model(train, val, vec, model_cfg, cfg, seed=0, work_dir=tmp_path, log=lambda m: None)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    encoder = keras.saving.load_model(result.encoder_path, safe_mode=True)
    q = "How do I learn Python?"
    sim = similarities(
        encoder, vec, [q, q], ["What is the best way to learn Python?", "What is the capital of France?"], model_cfg.max_length
    )
    assert sim[0] > sim[1], sim


def test_reseeding_makes_dropout_masks_a_function_of_seed_and_epoch(tmp_path):
    from qdup.model.network import build_encoder

    cfg = TINY.model_copy(update={"dropout": 0.5, "token_dropout": 0.3})
    x = np.tile(np.array([[3, 4, 5, 6, 7]], dtype="int32"), (4, 1))
    keras.utils.set_random_seed(0)
    enc = build_encoder(20, cfg)
    enc.save(tmp_path / "enc.keras")
    keras.utils.set_random_seed(1)
    other = keras.saving.load_model(tmp_path / "enc.keras", safe_mode=True)
    assert reseed_random_layers(enc, 7, 3) >= 2
    reseed_random_layers(other, 7, 3)
    first = np.asarray(enc(x, training=True))
    np.testing.assert_allclose(np.asarray(other(x, training=True)), first, atol=1e-6)
    reseed_random_layers(enc, 7, 4)
    assert np.abs(np.asarray(enc(x, training=True)) - first).max() > 1e-4
