"""The notebook-style baseline trainer: TextVectorization inside the model on string pairs, no masking."""

# Same architecture as qdup's encoder (Embedding -> LSTM -> mean over time -> unit length), same
# `qdup.model.losses.TripletLoss`, Adam, batch size, epochs, vocabulary and training pairs; the difference
# is the plain notebook input pipeline: a tf.data of raw string pairs, shuffled and batched, each
# batch vectorised inside the model and padded to its longest question (no truncation, no masking,
# no length bucketing), GlobalAveragePooling1D over all (padded) steps.

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.procs import cpu_seconds


def build_baseline(vocabulary: list[str], model_cfg: Any):
    """(siamese, encoder) on string inputs; `vocabulary` is the full token list (padding and OOV first)."""
    import keras

    from qdup.text import SPLIT, STANDARDIZE

    vectorizer = keras.layers.TextVectorization(
        standardize=STANDARDIZE, split=SPLIT, output_mode="int", vocabulary=vocabulary[2:], name="vectorizer"
    )
    text = keras.Input(shape=(), dtype="string", name="text")
    x = vectorizer(text)
    x = keras.layers.Embedding(len(vocabulary), model_cfg.embedding_dim, name="embedding")(x)
    if getattr(model_cfg, "dropout", 0) > 0:
        x = keras.layers.Dropout(model_cfg.dropout, name="dropout")(x)
    lstm = keras.layers.LSTM(model_cfg.lstm_units, return_sequences=True, name="lstm")
    if getattr(model_cfg, "bidirectional", False):
        lstm = keras.layers.Bidirectional(lstm, name="bilstm")
    x = lstm(x)
    x = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x)
    x = keras.layers.UnitNormalization(name="l2_normalise")(x)
    encoder = keras.Model(text, x, name="baseline_encoder")
    q1 = keras.Input(shape=(), dtype="string", name="question1")
    q2 = keras.Input(shape=(), dtype="string", name="question2")
    out = keras.layers.Concatenate(axis=-1, name="pair")([encoder(q1), encoder(q2)])
    return keras.Model([q1, q2], out, name="baseline_siamese"), encoder


def pair_dataset(q1: list[str], q2: list[str], batch_size: int, shuffle_seed: int | None):
    """Raw string pairs with a dummy target, (shuffled,) batched; the last partial batch is dropped
    so that no batch has a single pair (the triplet loss needs an in-batch negative)."""
    import tensorflow as tf

    n = len(q1)
    ds = tf.data.Dataset.from_tensor_slices(((np.asarray(q1, dtype=object), np.asarray(q2, dtype=object)), np.zeros(n, np.float32)))
    if shuffle_seed is not None:
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def encode_in_order(encoder, texts: list[str], batch_size: int) -> np.ndarray:
    """Encodings of `texts` in consecutive batches in the given order (the baseline's output depends
    on the batch's padded width, so batches are formed as in training: file order, batch_size)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)])
    def run(x):
        return encoder(x, training=False)

    parts = [run(tf.constant(texts[s : s + batch_size], dtype=tf.string)).numpy() for s in range(0, len(texts), batch_size)]
    return np.concatenate(parts, axis=0)


def common_val_loss(e1: np.ndarray, e2: np.ndarray, batch_size: int, margin: float) -> float:
    """Mean over consecutive file-order batches of the batch's summed `qdup.model.losses.TripletLoss`."""
    from qdup.model.losses import TripletLoss

    loss = TripletLoss(margin=margin)
    values = []
    for s in range(0, len(e1), batch_size):
        a, b = e1[s : s + batch_size], e2[s : s + batch_size]
        if len(a) < 2:
            continue
        y_pred = np.concatenate([a, b], axis=1).astype(np.float32)
        values.append(float(loss(np.zeros(len(a), np.float32), y_pred)))
    return float(np.mean(values))


def _similarity(run_encode, q1: list[str], q2: list[str]) -> np.ndarray:
    return np.sum(run_encode(q1) * run_encode(q2), axis=1)


def _metrics(y_cal, s_cal, y_test, s_test, reference: float) -> dict[str, Any]:
    from qdup.evaluation.metrics import binary_metrics, choose_threshold, ranking_metrics

    thr = choose_threshold(y_cal, s_cal)["accuracy_threshold"]
    return {
        "threshold": thr,
        "test_accuracy": binary_metrics(y_test, s_test, thr)["accuracy"],
        "test_accuracy_at_0.7": binary_metrics(y_test, s_test, reference)["accuracy"],
        "test_roc_auc": ranking_metrics(y_test, s_test)["roc_auc"],
    }


def run(p, ctx, capped_splits: Callable[[Any], Path]) -> None:
    """Train the baseline on the bench's train split, then measure it like qdup's evaluate stage.

    `capped_splits` is bench.stage's, handed in (bench.stage imports this module).
    """
    import keras
    import tensorflow as tf

    from qdup.data import splits
    from qdup.model.encode import encode
    from qdup.model.losses import TripletLoss
    from qdup.model.network import load_encoder
    from qdup.model.vocabulary_file import read_vocabulary

    p.imported()
    cfg = ctx.cfg
    bs, epochs, seed = cfg.train.batch_size, cfg.train.epochs, cfg.seed
    with p.part("read"):
        # The same (possibly capped) train split that qdup's train stage read.
        folder = capped_splits(ctx)
        train = splits.read_split(folder / "train.parquet")
        val = splits.read_split(folder / "val.parquet")
        cal = splits.read_split(folder / "calibration.parquet")
        test = splits.read_split(folder / "test.parquet")
        vocabulary = read_vocabulary(ctx.work / "vocab" / "vocabulary.txt")

    keras.utils.set_random_seed(seed)
    siamese, encoder = build_baseline(vocabulary, cfg.model)
    siamese.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.train.learning_rate), loss=TripletLoss(margin=cfg.train.margin))
    train_ds = pair_dataset(train["question1"].tolist(), train["question2"].tolist(), bs, seed)
    val_ds = pair_dataset(val["question1"].tolist(), val["question2"].tolist(), bs, None)
    steps = len(train) // bs

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows: list[dict[str, float]] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()
            self._cpu = cpu_seconds()

        def on_epoch_end(self, epoch, logs=None):
            # Like qdup's history seconds: from epoch begin to epoch end, validation pass included.
            logs = logs or {}
            self.rows.append(
                {"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)), "val_loss": float(logs.get("val_loss", np.nan)),
                 "seconds": time.perf_counter() - self._t, "cpu_seconds": cpu_seconds() - self._cpu}
            )
            print(f"baseline epoch {epoch + 1}: {self.rows[-1]}", flush=True)

    timer = EpochTimer()
    with p.part("fit"):
        siamese.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[timer], verbose=0)

    pairs = steps * bs
    with p.part("evaluate"):
        enc = lambda texts: encode_in_order(encoder, texts, bs)  # noqa: E731
        y_cal = cal["is_duplicate"].to_numpy(np.int64)
        y_test = test["is_duplicate"].to_numpy(np.int64)
        s_cal = _similarity(enc, cal["question1"].tolist(), cal["question2"].tolist())
        s_test = _similarity(enc, test["question1"].tolist(), test["question2"].tolist())
        base_metrics = _metrics(y_cal, s_cal, y_test, s_test, 0.7)
    with p.part("common_val_loss"):
        vq1, vq2 = val["question1"].tolist(), val["question2"].tolist()
        base_common = common_val_loss(enc(vq1), enc(vq2), bs, cfg.train.margin)
        qdup_common = None
        qdup_encoder_path = ctx.work / "train" / "encoder.keras"
        if qdup_encoder_path.is_file():
            qenc = load_encoder(qdup_encoder_path)
            from qdup.model.vocab import load_vectorizer

            vec = load_vectorizer(ctx.work / "vocab" / "vocabulary.txt")
            e1 = encode(qenc, vec, vq1, cfg.model.max_length)
            e2 = encode(qenc, vec, vq2, cfg.model.max_length)
            qdup_common = common_val_loss(e1, e2, bs, cfg.train.margin)

    # Padding the baseline pays for: each batch is as wide as its longest question.
    widths = []
    for b in train_ds.take(min(steps, 50)):
        (x1, x2), _ = b
        v = encoder.get_layer("vectorizer")
        widths.append(max(int(v(x1).shape[1]), int(v(x2).shape[1])))
    p.info.update(
        train_pairs=pairs,
        steps_per_epoch=steps,
        epochs=epochs,
        history=timer.rows,
        val_loss=timer.rows[-1]["val_loss"] if timer.rows else None,
        common_val_loss=base_common,
        qdup_common_val_loss=qdup_common,
        mean_padded_width_first_batches=float(np.mean(widths)) if widths else None,
        tf_threads={"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter": tf.config.threading.get_inter_op_parallelism_threads()},
        **base_metrics,
    )
