"""Training input: question pairs as token-id arrays, and the seeded, length-sorted batches of each epoch.

Label convention: train and val hold duplicates only (is_duplicate 1 = same intent); each batch's
other pairs serve as its negatives (see `qdup.model.losses.TripletLoss`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from qdup.config import ModelConfig
from qdup.errors import QdupError
from qdup.model.network import SubwordHasher
from qdup.model.search_batches import SearchNegatives
from qdup.model.vocab import vectorize_padded
from qdup.model.vocabulary_file import OOV_ID

# Pairs are sorted by length inside windows of this many batches: batches hold similar lengths
# (little padding) while the order across windows stays random.
SORT_WINDOW_BATCHES = 128


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
    # Distillation only (`qdup.model.search_batches.owned_neighbour_frame`): the row of the pair a candidate-only row
    # belongs to (-1: none) and the teacher's score of (that pair's question1, this row's question).
    owner: np.ndarray | None = None
    teacher: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.len1)

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.q1, self.len1, self.q2, self.len2, self.g1, self.g2, self.label,
                  *((self.owner, self.teacher) if self.owner is not None else ())):
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
    """Rows of `a` then rows of `b`, padded to the wider of the two (owners and teacher scores kept where either has
    them: -1 and 0 for the other's rows)."""
    width = max(a.q1.shape[1], b.q1.shape[1], a.q2.shape[1], b.q2.shape[1])
    owned = a.owner is not None or b.owner is not None

    def column(p: PairArrays, name: str, fill: float) -> np.ndarray:
        got = getattr(p, name)
        return got if got is not None else np.full(len(p), fill, dtype=np.int64 if name == "owner" else np.float32)

    return PairArrays(
        np.concatenate([_pad_to(a.q1, width), _pad_to(b.q1, width)]), np.concatenate([a.len1, b.len1]),
        np.concatenate([_pad_to(a.q2, width), _pad_to(b.q2, width)]), np.concatenate([a.len2, b.len2]),
        np.concatenate([a.g1, b.g1]), np.concatenate([a.g2, b.g2]), np.concatenate([a.label, b.label]),
        np.concatenate([column(a, "owner", -1), column(b, "owner", -1)]) if owned else None,
        np.concatenate([column(a, "teacher", 0.0), column(b, "teacher", 0.0)]) if owned else None,
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
    columns = [pairs.g1, pairs.g2, pairs.label]
    if pairs.owner is not None:
        # Distillation: each row's own number, the row of the pair it belongs to, the teacher's score (`qdup.model.losses`).
        columns += [np.arange(len(pairs)), pairs.owner, pairs.teacher]
    targets = tf.constant(np.stack(columns, axis=1).astype(np.float32))
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
        # y: [cluster of question1, cluster of question2, label (, row, owner, teacher)] per row, read by the losses.
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
