"""Train the Siamese LSTM with the triplet loss, checkpointing every epoch so a killed run resumes.

Label convention: train and val hold duplicates only (is_duplicate 1 = same intent); each batch's
other pairs serve as its negatives (see `qdup.model.losses.TripletLoss`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from qdup.config import ModelConfig, TrainConfig
from qdup.errors import QdupError
from qdup.fileio import atomic_write_json, read_json, sha256_json
from qdup.log import warn
from qdup.model.losses import InBatchSoftmaxLoss, TripletLoss
from qdup.model.network import SubwordHasher, build_encoder, build_siamese
from qdup.model.search_batches import SearchNegatives, neighbour_frame, silver_duplicates
from qdup.model.vocab import vectorize_padded
from qdup.model.vocabulary_file import OOV_ID

EpochHook = Callable[[int, int, dict[str, float]], None]
STATE_VERSION = 1
STATE_FILE = "state.json"
ENCODER_FILE = "encoder.keras"
# Pairs are sorted by length inside windows of this many batches: batches hold similar lengths
# (little padding) while the order across windows stays random.
SORT_WINDOW_BATCHES = 128


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


@dataclass(frozen=True)
class PairArrays:
    """Token ids of question pairs: right-padded int32 matrices, per-row lengths (>= 1), the duplicate cluster of
    each question (float32 ids, for masking in-batch false negatives) and the label (1 duplicate, 0 not)."""

    q1: np.ndarray
    len1: np.ndarray
    q2: np.ndarray
    len2: np.ndarray
    g1: np.ndarray
    g2: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.len1)

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.q1, self.len1, self.q2, self.len2, self.g1, self.g2, self.label):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def _pad_to(ids: np.ndarray, width: int) -> np.ndarray:
    if ids.shape[1] >= width:
        return ids[:, :width]
    return np.pad(ids, ((0, 0), (0, width - ids.shape[1])))


def question_clusters(*frames: pd.DataFrame) -> dict[str, int]:
    """Duplicate cluster of every question of `frames`: connected components of their duplicate pairs (transitive
    closure), keyed by question text; a question in no duplicate pair is its own cluster."""
    from qdup.data.graph import duplicate_clusters

    q1 = pd.concat([f["question1"] for f in frames], ignore_index=True)
    q2 = pd.concat([f["question2"] for f in frames], ignore_index=True)
    dup = np.concatenate([f["is_duplicate"].to_numpy() if "is_duplicate" in f.columns else np.ones(len(f)) for f in frames]) == 1
    texts, labels = duplicate_clusters(q1.to_numpy(), q2.to_numpy(), dup)
    return dict(zip(texts.tolist(), labels.tolist(), strict=True))


def pair_arrays(
    df: pd.DataFrame, vectorizer: keras.layers.TextVectorization, model_cfg: ModelConfig, name: str,
    clusters: dict[str, int] | None = None,
) -> PairArrays:
    """Vectorise a split's question1/question2 once, truncated to model_cfg.max_length tokens.

    Labels come from `is_duplicate` (all 1 without it); clusters from `clusters` (each pair its own
    cluster without it).
    """
    for col in ("question1", "question2"):
        if col not in df.columns:
            raise QdupError(f"the {name} split has no {col!r} column (columns: {list(df.columns)})")
    q1, len1 = vectorize_padded(vectorizer, df["question1"].tolist(), model_cfg.max_length)
    q2, len2 = vectorize_padded(vectorizer, df["question2"].tolist(), model_cfg.max_length)
    if not model_cfg.mask_padding:
        # Without a mask the padding is part of the input, so it must be the same everywhere:
        # always max_length wide, as in the inference model.
        q1, q2 = _pad_to(q1, model_cfg.max_length), _pad_to(q2, model_cfg.max_length)
    label = df["is_duplicate"].to_numpy(dtype=np.float32) if "is_duplicate" in df.columns else np.ones(len(df), np.float32)
    if clusters is None:
        g1 = g2 = np.arange(len(df), dtype=np.float32)
    else:
        g1 = df["question1"].map(clusters).to_numpy(dtype=np.float32)
        g2 = df["question2"].map(clusters).to_numpy(dtype=np.float32)
    return PairArrays(q1, len1, q2, len2, g1, g2, label)


def concat_pairs(a: PairArrays, b: PairArrays) -> PairArrays:
    """Rows of `a` then rows of `b`, padded to the wider of the two."""
    width = max(a.q1.shape[1], b.q1.shape[1], a.q2.shape[1], b.q2.shape[1])
    return PairArrays(
        np.concatenate([_pad_to(a.q1, width), _pad_to(b.q1, width)]), np.concatenate([a.len1, b.len1]),
        np.concatenate([_pad_to(a.q2, width), _pad_to(b.q2, width)]), np.concatenate([a.len2, b.len2]),
        np.concatenate([a.g1, b.g1]), np.concatenate([a.g2, b.g2]), np.concatenate([a.label, b.label]),
    )


def subword_table(vectorizer: keras.layers.TextVectorization, model_cfg: ModelConfig) -> np.ndarray | None:
    """Hashed n-gram ids of every vocabulary word (vocab_size, per_word), by the hasher the exported model runs;
    padding and the OOV token have none. Training looks words up here instead of hashing text every batch."""
    if not model_cfg.subwords:
        return None
    hasher = SubwordHasher(model_cfg.subword_buckets, model_cfg.subword_ngrams[0], model_cfg.subword_ngrams[1],
                           model_cfg.subword_max_per_word, model_cfg.max_length)
    vocab = vectorizer.get_vocabulary(include_special_tokens=True)
    table = np.array(hasher(tf.constant(vocab), width_like=tf.zeros((len(vocab), 1), tf.int32)))[:, 0, :]
    table[: OOV_ID + 1] = 0
    return table.astype(np.int32)


def batch_plan(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Row indices of each batch: shuffled (when `rng` is given), then sorted by length in windows.

    The batch order is shuffled again so that long and short batches alternate. The one short
    batch (n % batch_size rows) is kept unless it has a single pair, which has no in-batch
    negative for the triplet loss.
    """
    n = len(lengths)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    window = batch_size * SORT_WINDOW_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, n, window):
        idx = order[start : start + window]
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        batches.extend(idx[i : i + batch_size] for i in range(0, len(idx), batch_size))
    batches = [b for b in batches if len(b) >= 2]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def epoch_seed(seed: int, epoch: int) -> np.random.Generator:
    """The shuffle of epoch `epoch` (1-based) depends only on (seed, epoch): a resumed run sees
    the same order an uninterrupted one would have."""
    return np.random.default_rng([seed, epoch])


def reseed_random_layers(model: keras.Model, seed: int, epoch: int) -> int:
    """Set the random state of every layer of `model` (dropout masks) from (seed, epoch) alone.

    Keras does not restore these states from a checkpoint, so without this a resumed run would
    draw other dropout masks than an uninterrupted one. Returns how many states were set.
    """
    states = [v for v in model.variables if v.path.rsplit("/", 1)[-1] == "seed_generator_state"]
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    for v in states:
        v.assign(keras.ops.convert_to_tensor([int(rng.integers(0, 2**30)), 0], dtype=v.dtype))
    return len(states)


def negatives_plan(
    dup_plan: list[np.ndarray], dup_lengths: np.ndarray, neg_lengths: np.ndarray, per_batch: int, offset: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """`dup_plan` with `per_batch` labelled non-duplicates appended to each batch (their row numbers + `offset`).

    The negatives are drawn in a fresh seeded order each epoch (cycling when the epoch needs more than there
    are), sorted by length in windows like the duplicates, and the n-th shortest chunk joins the n-th shortest
    duplicate batch so that padding stays low; the batch order of `dup_plan` is kept.
    """
    needed = len(dup_plan) * per_batch
    reps = -(-needed // len(neg_lengths))
    order = np.concatenate([rng.permutation(len(neg_lengths)) for _ in range(reps)])[:needed]
    order = order[np.argsort(neg_lengths[order], kind="stable")]
    chunks = [order[i : i + per_batch] for i in range(0, needed, per_batch)]
    widths = np.array([int(dup_lengths[b].max()) for b in dup_plan])
    rank = np.empty(len(dup_plan), dtype=np.int64)
    rank[np.argsort(widths, kind="stable")] = np.arange(len(dup_plan))
    return [np.concatenate([b, chunks[r] + offset]) for b, r in zip(dup_plan, rank, strict=True)]


def _batches(pairs: PairArrays, plan: list[np.ndarray], fixed_width: bool, table: np.ndarray | None) -> tf.data.Dataset:
    """The batches of `plan` (row indices of each), gathered and trimmed inside tf.data.

    All graph ops, no Python generator: a generator-fed pipeline holds the GIL against the
    training loop and blocks for seconds when Keras drops its iterator at the end of fit.
    With a sub-word `table`, each word's n-gram ids are looked up by its id here.
    """
    q1, q2 = tf.constant(pairs.q1), tf.constant(pairs.q2)
    len1, len2 = tf.constant(pairs.len1), tf.constant(pairs.len2)
    targets = tf.constant(np.stack([pairs.g1, pairs.g2, pairs.label], axis=1).astype(np.float32))
    words = tf.constant(table) if table is not None else None
    rows = tf.RaggedTensor.from_row_lengths(
        np.concatenate(plan).astype(np.int32), np.array([len(b) for b in plan], dtype=np.int64)
    )

    def gather(idx):
        a, b = tf.gather(q1, idx), tf.gather(q2, idx)
        if not fixed_width:
            # Each batch is padded only to its own longest question.
            a = a[:, : tf.reduce_max(tf.gather(len1, idx))]
            b = b[:, : tf.reduce_max(tf.gather(len2, idx))]
        # y: [cluster of question1, cluster of question2, label] per row, read by the losses.
        y = tf.gather(targets, idx)
        if words is None:
            return (a, b), y
        return (a, tf.gather(words, a), b, tf.gather(words, b)), y

    ds = tf.data.Dataset.from_tensor_slices(rows).map(gather, num_parallel_calls=1, deterministic=True)
    return ds.prefetch(2)


def epoch_plan(pairs: PairArrays, n_dup: int, batch_size: int, per_batch_negatives: int, seed: int, epoch: int,
               search: SearchNegatives | None = None) -> list[np.ndarray]:
    """The batches of one epoch: rows [0, n_dup) of `pairs` are duplicates, the rest labelled non-duplicates (then the
    candidate-only rows of `search`, whose neighbours join their pairs' batches)."""
    rng = epoch_seed(seed, epoch)
    lengths = np.maximum(pairs.len1, pairs.len2)
    plan = batch_plan(lengths[:n_dup], batch_size, rng)
    if per_batch_negatives > 0 and len(pairs) > n_dup:
        plan = negatives_plan(plan, lengths[:n_dup], lengths[n_dup:search.offset if search else None], per_batch_negatives, n_dup, rng)
    return search.extend(plan, n_dup, seed, epoch) if search is not None else plan


def train_dataset(
    pairs: PairArrays, batch_size: int, seed: int, epochs: range, fixed_width: bool, table: np.ndarray | None = None,
    n_dup: int | None = None, per_batch_negatives: int = 0, search: SearchNegatives | None = None,
) -> tf.data.Dataset:
    """All batches of the given epochs in order, as one stream (fit runs it with steps_per_epoch)."""
    n_dup = len(pairs) if n_dup is None else n_dup
    plan = [idx for epoch in epochs for idx in epoch_plan(pairs, n_dup, batch_size, per_batch_negatives, seed, epoch, search)]
    return _batches(pairs, plan, fixed_width, table)


def eval_dataset(pairs: PairArrays, batch_size: int, fixed_width: bool, table: np.ndarray | None = None) -> tf.data.Dataset:
    """The same batches every epoch (file order, length-sorted in windows), so val_loss is comparable."""
    return _batches(pairs, batch_plan(np.maximum(pairs.len1, pairs.len2), batch_size, None), fixed_width, table)


def _save_keras_atomic(model: keras.Model, path: Path) -> None:
    # Keras insists on the ".keras" suffix, so the temporary name keeps it.
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_siamese(path: Path) -> keras.Model:
    if not path.is_file():
        raise QdupError(f"checkpoint {path} named in {path.parent / STATE_FILE} is missing; delete {path.parent} to start over")
    return keras.saving.load_model(path, safe_mode=True)


class _Checkpointer(keras.callbacks.Callback):
    """Per epoch: early-stopping bookkeeping, a checkpoint (model + optimizer + state), log, hook."""

    def __init__(
        self,
        ckpt_dir: Path,
        state: dict[str, Any],
        total: int,
        patience: int,
        log: Callable[[str], None],
        hook: EpochHook | None,
        lr_decay: tuple[float, int] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.seed = seed
        self.ckpt_dir = ckpt_dir
        self.state = state
        self.total = total
        self.patience = patience
        self.lr_decay = lr_decay
        self.log = log
        self.hook = hook
        self._t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        reseed_random_layers(self.model, self.seed, epoch + 1)
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        n = epoch + 1
        logs = logs or {}
        seconds = time.perf_counter() - self._t0
        loss, val_loss = float(logs["loss"]), float(logs["val_loss"])
        if not (math.isfinite(loss) and math.isfinite(val_loss)):
            raise QdupError(f"training diverged at epoch {n}: loss={loss} val_loss={val_loss}; lower the learning rate")
        st = self.state
        if st["best_val_loss"] is None or val_loss < st["best_val_loss"]:
            st.update(best_val_loss=val_loss, best_epoch=n, wait=0, lr_wait=0)
        else:
            st["wait"] += 1
            st["lr_wait"] = st.get("lr_wait", 0) + 1
        stop = st["wait"] >= self.patience and n < self.total
        if self.lr_decay is not None and not stop and st["lr_wait"] >= self.lr_decay[1]:
            # Reduce on plateau; the new rate is saved with this epoch's checkpoint (optimizer state).
            lr = self.model.optimizer.learning_rate
            old = float(keras.ops.convert_to_numpy(lr))
            lr.assign(old * self.lr_decay[0])
            st["lr_wait"] = 0
            self.log(f"val_loss has not improved for {self.lr_decay[1]} epochs: learning rate {old:.3g} -> {old * self.lr_decay[0]:.3g}")
        name = f"epoch-{n:04d}.keras"
        _save_keras_atomic(self.model, self.ckpt_dir / name)
        entry = {"epoch": n, "loss": loss, "val_loss": val_loss, "seconds": round(seconds, 3)}
        if self.lr_decay is not None:
            entry["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        st["history"].append(entry)
        st.update(epoch=n, checkpoint=name, stopped_early=stop)
        if st["best_epoch"] == n:
            st["best_checkpoint"] = name
        # state.json is the commit point: until it names the new checkpoint, the old one stays valid.
        atomic_write_json(self.ckpt_dir / STATE_FILE, st)
        keep = {st["checkpoint"], st["best_checkpoint"]}
        for old in self.ckpt_dir.glob("epoch-*.keras"):
            if old.name not in keep:
                old.unlink()
        self.log(f"epoch {n}/{self.total} loss={loss:.4f} val_loss={val_loss:.4f} ({seconds:.1f}s)")
        if stop:
            self.model.stop_training = True
            self.log(
                f"early stopping after epoch {n}: val_loss has not improved for {st['wait']} epochs; "
                f"best epoch {st['best_epoch']}"
            )
        if self.hook is not None:
            self.hook(n, self.total, {"loss": loss, "val_loss": val_loss, "seconds": seconds})


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


def make_loss(train_cfg: TrainConfig) -> keras.losses.Loss:
    """The configured loss; the CoSENT term on labelled non-duplicates only when hard negatives join the batches."""
    weight = train_cfg.negatives_weight if train_cfg.hard_negatives > 0 else 0.0
    if train_cfg.loss == "softmax":
        return InBatchSoftmaxLoss(scale=train_cfg.scale, symmetric=True, negatives_weight=weight)
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
        # TensorFlow >= 2.21 no longer pulls it in; fail before training rather than after epoch 1.
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
    neighbours, pool = neighbour_frame(train_df, silver_df) if use_search else (None, None)
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
        train = concat_pairs(train, pair_arrays(neighbours, vectorizer, model_cfg, "silver", clusters))
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
    state_path = ckpt_dir / STATE_FILE

    keras.utils.set_random_seed(seed)
    if train_cfg.deterministic:
        # Process-wide and irreversible: deterministic kernels for every op from here on (on GPU
        # the cuDNN LSTM and the embedding gradient's scatter-add; CPU training is already bit-identical).
        tf.config.experimental.enable_op_determinism()
    resumed_from: int | None = None
    if state_path.is_file():
        st = read_json(state_path)
        if st.get("version") != STATE_VERSION or st.get("fingerprint") != fingerprint:
            raise QdupError(
                f"{ckpt_dir} holds checkpoints of a different training run (other data, vocabulary, "
                f"configuration or seed); delete {work_dir} to train from scratch"
            )
        done = st["stopped_early"] or st["epoch"] >= total
        if done and (work_dir / ENCODER_FILE).is_file():
            log(f"training already complete at epoch {st['epoch']}; best epoch {st['best_epoch']}")
            return _result(work_dir, st, st["epoch"], steps, facts)
        resumed_from = st["epoch"]
        warn(log, f"resuming from epoch {resumed_from}, the last checkpoint of an interrupted run of this training")
        model = _load_siamese(ckpt_dir / st["checkpoint"])
    else:
        st = {
            "version": STATE_VERSION,
            "fingerprint": fingerprint,
            "epoch": 0,
            "checkpoint": None,
            "best_epoch": None,
            "best_val_loss": None,
            "best_checkpoint": None,
            "wait": 0,
            "lr_wait": 0,
            "stopped_early": False,
            "history": [],
        }
        encoder = build_encoder(vocab_size, model_cfg)
        if init_encoder is not None:
            start_from = keras.saving.load_model(init_encoder, safe_mode=True, compile=False)
            if [w.shape for w in start_from.weights] != [w.shape for w in encoder.weights]:
                raise QdupError(f"{init_encoder}: the starting encoder's weights do not fit this model configuration")
            encoder.set_weights(start_from.get_weights())
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
        checkpointer = _Checkpointer(ckpt_dir, st, total, train_cfg.early_stopping_patience, log, on_epoch_end, lr_decay, seed)
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

    best = _load_siamese(ckpt_dir / st["best_checkpoint"])
    _save_keras_atomic(best.get_layer("encoder"), work_dir / ENCODER_FILE)
    log(f"best epoch {st['best_epoch']} (val_loss={st['best_val_loss']:.4f}); encoder saved to {work_dir / ENCODER_FILE}")
    return _result(work_dir, st, resumed_from, steps, facts)

