"""Train the Siamese LSTM encoder, checkpointing every epoch so a killed run resumes.

The batches come from `qdup.model.batches` (train and val hold duplicates only; each batch's other pairs are its
negatives), the checkpoints and their commit point from `qdup.model.checkpoints`; this module composes them with
the optimizer, the loss and early stopping.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from qdup.config import ModelConfig, TrainConfig
from qdup.errors import QdupError
from qdup.fileio import sha256_json
from qdup.log import warn
from qdup.model.batches import (
    PairArrays,
    batch_plan,
    concat_pairs,
    eval_dataset,
    pair_arrays,
    question_clusters,
    subword_table,
    train_dataset,
)
from qdup.model.checkpoints import Checkpointer, EpochHook, fresh_state, load_checkpoint, read_state, save_keras_atomic
from qdup.model.losses import InBatchSoftmaxLoss, TripletLoss
from qdup.model.network import build_encoder, build_siamese
from qdup.model.search_batches import SearchNegatives, neighbour_frame, owned_neighbour_frame, silver_duplicates

ENCODER_FILE = "encoder.keras"


@dataclass(frozen=True)
class TrainResult:
    """What training produced; epochs are numbered from 1.

    history: one {epoch, loss, val_loss, seconds} per epoch run, across interruptions (plus
    learning_rate, the rate after the epoch, under the plateau schedule).
    epochs_run: the last epoch completed. resumed_from_epoch: the checkpointed epoch this call
    started from (None for a fresh start; equal to epochs_run when the work_dir was complete).
    encoder_path holds the encoder of best_epoch (lowest val_loss).
    """

    encoder_path: Path
    checkpoint_dir: Path
    tensorboard_dir: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    resumed_from_epoch: int | None
    stopped_early: bool
    steps_per_epoch: int
    facts: dict[str, Any]


def make_optimizer(train_cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam at train_cfg.learning_rate; a cosine schedule spans all `epochs`; optional gradient clipping.

    The plateau schedule is applied by the per-epoch callback (it needs val_loss); its current
    rate is the optimizer's learning-rate variable, saved with every checkpoint.
    """
    lr: float | keras.optimizers.schedules.LearningRateSchedule = float(train_cfg.learning_rate)
    if train_cfg.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, train_cfg.epochs * steps_per_epoch))
    return keras.optimizers.Adam(learning_rate=lr, clipnorm=train_cfg.clipnorm)


def _fingerprint(
    model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int, vocab_size: int, train: PairArrays, val: PairArrays
) -> str:
    return sha256_json(
        {
            "model": model_cfg.model_dump(mode="json"),
            "train": train_cfg.model_dump(mode="json"),
            "seed": seed,
            "vocab_size": vocab_size,
            "train_data": train.digest(),
            "val_data": val.digest(),
        }
    )


def init_word_embedding(
    encoder: keras.Model, vectorizer: keras.layers.TextVectorization, texts: list[str], model_cfg: ModelConfig,
    train_cfg: TrainConfig, seed: int,
) -> dict[str, Any]:
    """Set the encoder's word embedding (layer `embedding`) to word2vec vectors fitted on `texts`; what was fitted."""
    from qdup.model.word_vectors import word2vec_embeddings

    matrix, info = word2vec_embeddings(texts, vectorizer.get_vocabulary(), model_cfg.embedding_dim, seed,
                                       train_cfg.word2vec_epochs)
    encoder.get_layer("embedding").set_weights([matrix])
    return info


def make_loss(train_cfg: TrainConfig) -> keras.losses.Loss:
    """The configured loss; the CoSENT term on labelled non-duplicates only when hard negatives join the batches."""
    weight = train_cfg.negatives_weight if train_cfg.hard_negatives > 0 else 0.0
    if train_cfg.loss == "softmax":
        return InBatchSoftmaxLoss(scale=train_cfg.scale, symmetric=True, negatives_weight=weight,
                                  distill_weight=train_cfg.distill_weight)
    return TripletLoss(margin=train_cfg.margin, negatives_weight=weight)


def _result(work_dir: Path, st: dict[str, Any], resumed_from: int | None, steps: int, facts: dict[str, Any]) -> TrainResult:
    return TrainResult(
        encoder_path=work_dir / ENCODER_FILE,
        checkpoint_dir=work_dir / "checkpoints",
        tensorboard_dir=work_dir / "tensorboard",
        history=list(st["history"]),
        best_epoch=st["best_epoch"],
        best_val_loss=st["best_val_loss"],
        epochs_run=st["epoch"],
        resumed_from_epoch=resumed_from,
        stopped_early=st["stopped_early"],
        steps_per_epoch=steps,
        facts=facts,
    )


def train_model(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    vectorizer: keras.layers.TextVectorization,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
    work_dir: Path,
    on_epoch_end: EpochHook | None = None,
    log: Callable[[str], None] = print,
    negatives_df: pd.DataFrame | None = None,
    init_encoder: Path | None = None,
    silver_df: pd.DataFrame | None = None,
) -> TrainResult:
    """Train an encoder on the duplicate pairs of `train_df`, early-stopping on `val_df`'s loss.

    - Questions are vectorised once and truncated to model_cfg.max_length tokens; batches of
      train_cfg.batch_size pairs are drawn in a fresh order each epoch (seeded by `seed` and the
      epoch number), length-sorted within windows and padded only to their own longest question.
    - Adam(train_cfg.learning_rate; see `make_optimizer` for schedules and clipping) on the configured
      loss (`make_loss`); in-batch candidates of an anchor's own duplicate cluster are never its negatives;
      with train_cfg.hard_negatives > 0, labelled non-duplicates of `negatives_df` join every batch; val_loss on all of `val_df`
      every epoch; training stops after train_cfg.early_stopping_patience epochs without a
      lower val_loss, and the saved encoder is the one of the best epoch.
    - Dropout masks are drawn from (seed, epoch) too (`reseed_random_layers`); train_cfg.deterministic
      turns on TensorFlow's op determinism (for the rest of the process) so reruns are bit-identical on GPU too.
    - Every epoch writes work_dir/checkpoints/epoch-NNNN.keras (model and optimizer state) and
      state.json (epoch, early-stopping state, history). Calling again with the same work_dir,
      data and configs after an interruption resumes at the epoch after the last checkpoint;
      a work_dir holding another run's checkpoints is refused.
    - with train_cfg.silver_positive_score set, the silver split's teacher-labelled duplicates join the duplicate pairs;
      with train_cfg.search_negatives > 0, that many of each duplicate pair's BM25 neighbours outside its cluster
      (`silver_df`, the silver split) join its batch as candidates of every anchor (`qdup.model.search_batches`).
    - `init_encoder` (a saved encoder of the same configuration, e.g. the pretrain stage's) gives the starting weights.
    - TensorBoard logs go to work_dir/tensorboard; the best encoder to work_dir/encoder.keras.
    - `log` receives one line per epoch; `on_epoch_end(epoch, total_epochs, logs)` is called after
      the epoch's checkpoint is committed, so an exception there loses no work.
    """
    if importlib.util.find_spec("tensorboard") is None:
        # TensorFlow does not install it itself; fail before training rather than after epoch 1.
        raise QdupError("TensorBoard logging needs the 'tensorboard' package: pip install tensorboard")
    work_dir = Path(work_dir)
    ckpt_dir = work_dir / "checkpoints"
    tb_dir = work_dir / "tensorboard"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    # Leftovers of saves cut short by a kill; a completed save was renamed away from ".tmp-".
    for stale in [*ckpt_dir.glob(".tmp-*"), *work_dir.glob(".tmp-*")]:
        stale.unlink()

    for name, frame in (("train", train_df), ("val", val_df)):
        for col in ("question1", "question2"):
            if col not in frame.columns:
                raise QdupError(f"the {name} split has no {col!r} column (columns: {list(frame.columns)})")
    use_negatives = train_cfg.hard_negatives > 0
    if use_negatives and (negatives_df is None or len(negatives_df) == 0):
        raise QdupError("train.hard_negatives > 0 needs labelled non-duplicates, but the negatives split is empty or missing")
    use_search = train_cfg.search_negatives > 0
    if train_cfg.uses_silver and silver_df is None:
        raise QdupError("train.search_negatives > 0 or train.silver_positive_score needs the silver split, but none was given")
    n_gold = len(train_df)
    if train_cfg.silver_positive_score is not None:
        train_df = pd.concat([train_df, silver_duplicates(silver_df)], ignore_index=True)
    if not use_search:
        neighbours, pool = None, None
    elif train_cfg.distills:
        neighbours, pool = owned_neighbour_frame(train_df, silver_df)
    else:
        neighbours, pool = neighbour_frame(train_df, silver_df)
    frames = [train_df, val_df] + ([negatives_df] if use_negatives else []) + ([neighbours] if use_search else [])
    clusters = question_clusters(*frames)
    train = pair_arrays(train_df, vectorizer, model_cfg, "train", clusters)
    val = pair_arrays(val_df, vectorizer, model_cfg, "val", clusters)
    for name, pairs in (("train", train), ("val", val)):
        if len(pairs) < 2:
            raise QdupError(f"the {name} split has {len(pairs)} pairs; the triplet loss needs at least 2 per batch")
    n_dup = len(train)
    per_batch_negatives = 0
    if use_negatives:
        negatives = pair_arrays(negatives_df, vectorizer, model_cfg, "negatives", clusters)
        if negatives.label.any():
            raise QdupError("the negatives split holds duplicate pairs; it must hold labelled non-duplicates only")
        train = concat_pairs(train, negatives)
        per_batch_negatives = max(1, round(train_cfg.batch_size * train_cfg.hard_negatives))
    search = None
    if use_search and len(neighbours):
        search = SearchNegatives(pool, train_cfg.search_negatives, len(train))
        rows = pair_arrays(neighbours, vectorizer, model_cfg, "silver", clusters)
        if train_cfg.distills:
            # Owners are rows of `train_df`, which are the first rows of `train`.
            rows = replace(rows, owner=neighbours["owner"].to_numpy(np.int64),
                                       teacher=neighbours["teacher"].to_numpy(np.float32))
        train = concat_pairs(train, rows)
    table = subword_table(vectorizer, model_cfg)
    vocab_size = vectorizer.vocabulary_size()
    fixed_width = not model_cfg.mask_padding
    total = train_cfg.epochs
    steps = len(batch_plan(np.maximum(train.len1[:n_dup], train.len2[:n_dup]), train_cfg.batch_size, None))
    facts = {
        "train_pairs": n_dup,
        "negative_pairs": len(train) - n_dup - (len(neighbours) if search else 0),
        "search_negative_questions": len(neighbours) if search else 0,
        "silver_duplicate_pairs": n_dup - n_gold,
        "negatives_per_batch": per_batch_negatives,
        "loss": train_cfg.loss,
        "subwords": model_cfg.subwords,
        "clusters_with_several_train_pairs": int(np.count_nonzero(np.bincount(train.g1[:n_dup].astype(np.int64)) > 1)),
        "val_pairs": len(val),
        "vocab_size": vocab_size,
        "train_tokens": int(train.len1[:n_dup].sum() + train.len2[:n_dup].sum()),
        "questions_at_max_length": int(
            np.count_nonzero(train.len1[:n_dup] >= model_cfg.max_length) + np.count_nonzero(train.len2[:n_dup] >= model_cfg.max_length)
        ),
    }
    fingerprint = _fingerprint(model_cfg, train_cfg, seed, vocab_size, train, val)
    if init_encoder is not None:
        init_sha = hashlib.sha256(Path(init_encoder).read_bytes()).hexdigest()
        fingerprint = sha256_json({"run": fingerprint, "init_encoder": init_sha})
        facts["init_encoder_sha256"] = init_sha

    keras.utils.set_random_seed(seed)
    if train_cfg.deterministic:
        # Process-wide and irreversible: deterministic kernels for every op from here on (on GPU
        # the cuDNN LSTM and the embedding gradient's scatter-add; CPU training is already bit-identical).
        tf.config.experimental.enable_op_determinism()
    resumed_from: int | None = None
    st = read_state(ckpt_dir, fingerprint, work_dir)
    if st is not None:
        done = st["stopped_early"] or st["epoch"] >= total
        if done and (work_dir / ENCODER_FILE).is_file():
            log(f"training already complete at epoch {st['epoch']}; best epoch {st['best_epoch']}")
            return _result(work_dir, st, st["epoch"], steps, facts)
        resumed_from = st["epoch"]
        warn(log, f"resuming from epoch {resumed_from}, the last checkpoint of an interrupted run of this training")
        model = load_checkpoint(ckpt_dir / st["checkpoint"])
    else:
        st = fresh_state(fingerprint)
        encoder = build_encoder(vocab_size, model_cfg)
        if init_encoder is not None:
            start_from = keras.saving.load_model(init_encoder, safe_mode=True, compile=False)
            if [w.shape for w in start_from.weights] != [w.shape for w in encoder.weights]:
                raise QdupError(f"{init_encoder}: the starting encoder's weights do not fit this model configuration")
            encoder.set_weights(start_from.get_weights())
        elif train_cfg.embedding_init == "word2vec":
            texts = [*train_df["question1"], *train_df["question2"]]
            if negatives_df is not None:
                texts += [*negatives_df["question1"], *negatives_df["question2"]]
            facts["word2vec"] = init_word_embedding(encoder, vectorizer, list(dict.fromkeys(map(str, texts))), model_cfg,
                                                    train_cfg, seed)
            log(f"word embedding from word2vec: {facts['word2vec']['vocabulary_rows_from_word2vec']:,} of {vocab_size:,} "
                f"vocabulary rows")
        model = build_siamese(encoder)
        # XLA off: every batch has its own padded length, which would recompile per shape, and
        # the cuDNN LSTM kernel is not XLA-compatible anyway.
        model.compile(
            optimizer=make_optimizer(train_cfg, steps),
            loss=make_loss(train_cfg),
            jit_compile=False,
        )
        done = False
        log(
            f"training on {n_dup:,} pairs ({steps} batches of <= {train_cfg.batch_size}"
            f"{f' + {per_batch_negatives} labelled non-duplicates' if per_batch_negatives else ''}"
            f"{f' + {train_cfg.search_negatives} search negatives a pair' if search else ''}; {train_cfg.loss} loss), "
            f"validating on {len(val):,}; vocabulary {vocab_size:,}, max_length {model_cfg.max_length}"
        )

    start = st["epoch"]
    if not done:
        lr_decay = (
            (train_cfg.lr_decay_factor, train_cfg.lr_decay_patience) if train_cfg.lr_schedule == "plateau" else None
        )
        checkpointer = Checkpointer(ckpt_dir, st, total, train_cfg.early_stopping_patience, log, on_epoch_end, lr_decay, seed)
        tensorboard = keras.callbacks.TensorBoard(log_dir=str(tb_dir), update_freq="epoch", profile_batch=0)
        model.fit(
            train_dataset(train, train_cfg.batch_size, seed, range(start + 1, total + 1), fixed_width, table, n_dup,
                          per_batch_negatives, search),
            validation_data=eval_dataset(val, train_cfg.batch_size, fixed_width, table),
            epochs=total,
            initial_epoch=start,
            steps_per_epoch=steps,
            shuffle=False,  # the batch plan already shuffles, per epoch
            callbacks=[checkpointer, tensorboard],
            verbose=0,
        )

    best = load_checkpoint(ckpt_dir / st["best_checkpoint"])
    save_keras_atomic(best.get_layer("encoder"), work_dir / ENCODER_FILE)
    log(f"best epoch {st['best_epoch']} (val_loss={st['best_val_loss']:.4f}); encoder saved to {work_dir / ENCODER_FILE}")
    return _result(work_dir, st, resumed_from, steps, facts)
