"""The Siamese encoder's training losses: triplet loss with in-batch negatives, and in-batch softmax (InfoNCE).

Registered under the "qdup" package as the network's layers are; saved models are loaded without them
(compile=False), so only training imports this module.
"""

from __future__ import annotations

import keras
from keras import ops

from qdup.model.network import PACKAGE


def _false_negative_mask(g_anchor, g_candidate):
    """(batch, batch) True where candidate j may not be anchor i's negative: the same duplicate cluster, i != j."""
    same = ops.equal(ops.expand_dims(g_anchor, 1), ops.expand_dims(g_candidate, 0))
    return ops.logical_and(same, ops.logical_not(ops.cast(ops.eye(ops.shape(g_anchor)[0]), "bool")))


def _split_targets(y_true, batch):
    """y_true (batch, 3) = [cluster of question1, cluster of question2, label]; a (batch,) placeholder means
    one cluster per row, every row a duplicate (no masking, as the reference loss).

    Label 1: a duplicate pair (an anchor row); 0: a labelled non-duplicate (candidates, and the CoSENT term); -1: a
    candidate-only row (a search negative, `qdup.model.search_batches`), neither an anchor nor a labelled pair."""
    y = ops.cast(y_true, "float32")
    if len(y.shape) == 2 and y.shape[-1] in (3, 6):
        return y[:, 0], y[:, 1], y[:, 2]
    rows = ops.cast(ops.arange(batch), "float32")
    return rows, rows, ops.ones((batch,), "float32")


def _unpack(y_true, y_pred):
    """The Siamese output concat[v1, v2] split in two, the batch size, and the targets (`_split_targets`)."""
    d = y_pred.shape[-1] // 2
    batch = ops.shape(y_pred)[0]
    return (y_pred[:, :d], y_pred[:, d:], batch, *_split_targets(y_true, batch))


def _pair_ranking(cosines, labels, scale: float):
    """CoSENT: log(1 + sum over (non-duplicate i, duplicate j) of exp(scale * (cos_i - cos_j))), a batch scalar.

    Pushes every labelled non-duplicate pair's cosine below every duplicate pair's: pair ROC-AUC's own ordering.
    """
    diff = scale * (ops.expand_dims(cosines, 1) - ops.expand_dims(cosines, 0))
    valid = ops.logical_and(ops.expand_dims(ops.equal(labels, 0.0), 1), ops.expand_dims(ops.equal(labels, 1.0), 0))
    diff = ops.where(valid, diff, -1e9)
    flat = ops.concatenate([ops.zeros((1,)), ops.reshape(diff, (-1,))], axis=0)
    return ops.logsumexp(flat)


def _margin_mse(v1, v2, y_true, label):
    """MarginMSE (Hofstätter et al. 2020, as sentence-transformers' MarginMSELoss) over the batch's (duplicate pair i,
    its own search negative j) couples: mean of ((cos(q1_i, q2_i) - cos(q1_i, n_j)) - (1 - teacher_j))^2, the gold
    pair's teacher score taken as 1. `y_true`'s columns 3-5 are each row's number, the row it belongs to, the teacher's
    score (`qdup.model.batches`); 0 when the batch has no such couple."""
    y = ops.cast(y_true, "float32")
    row, owner, teacher = y[:, 3], y[:, 4], y[:, 5]
    # couples[j, i]: candidate-only row j is anchor row i's own search negative.
    couples = ops.logical_and(ops.equal(ops.expand_dims(owner, 1), ops.expand_dims(row, 0)),
                              ops.logical_and(ops.expand_dims(ops.equal(label, -1.0), 1), ops.expand_dims(ops.equal(label, 1.0), 0)))
    positive = ops.sum(v1 * v2, axis=1)
    student = ops.expand_dims(positive, 0) - ops.matmul(v1, ops.transpose(v1))  # [j, i]: cos(q1_i, q2_i) - cos(q1_i, n_j)
    target = 1.0 - ops.expand_dims(teacher, 1)
    weight = ops.cast(couples, "float32")
    return ops.sum(weight * ops.square(student - target)) / ops.maximum(ops.sum(weight), 1.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TripletLoss(keras.losses.Loss):
    """Triplet loss with in-batch hard and mean negatives (the reference course's loss), false negatives masked.

    `y_pred` is the Siamese output, shape (batch, 2d) = concat[v1, v2] of unit vectors. `y_true` is
    (batch, 3) = [duplicate cluster of question1, of question2, label] (see `_split_targets`); rows with
    label 1 are duplicate pairs, rows with label 0 labelled non-duplicates. With scores = v2 · v1ᵀ:

    - positive_i = scores[i, i];
    - mean_negative_i = mean of row i's off-diagonal scores, leaving out candidates of i's own cluster;
    - closest_negative_i = largest such score that is not above positive_i (others are replaced by -2);
    - loss_i = max(0, margin - positive_i + closest_negative_i) + max(0, margin - positive_i + mean_negative_i)
      for duplicate rows, 0 for non-duplicate rows (which still serve as candidates);
    - plus `negatives_weight` x the CoSENT ranking of the batch's labelled pair cosines (`_pair_ranking`), spread
      over the rows.

    The per-row values are summed over the batch (reduction "sum"), as in the reference,
    so the loss grows with the batch size. A batch needs at least 2 pairs.
    """

    def __init__(self, margin: float = 0.25, negatives_weight: float = 0.0, ranking_scale: float = 20.0, name: str = "triplet_loss",
                 reduction: str = "sum", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)
        self.negatives_weight = float(negatives_weight)
        self.ranking_scale = float(ranking_scale)

    def call(self, y_true, y_pred):
        v1, v2, batch, g1, g2, label = _unpack(y_true, y_pred)
        scores = ops.matmul(v2, ops.transpose(v1))
        eye = ops.eye(batch, dtype=scores.dtype)
        # Candidate j of anchor i (row i of scores) is question1 of row j; it is masked when in i's cluster.
        allowed = ops.logical_not(_false_negative_mask(g2, g1))
        allowed = ops.logical_and(allowed, ops.logical_not(ops.cast(eye, "bool")))
        positive = ops.diagonal(scores)
        weights = ops.cast(allowed, scores.dtype)
        mean_negative = ops.sum(scores * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)
        candidates = ops.where(allowed, scores, -2.0)
        above_positive = candidates > ops.expand_dims(positive, 1)
        closest_negative = ops.max(ops.where(above_positive, -2.0, candidates), axis=1)
        has_negative = ops.cast(ops.sum(weights, axis=1) > 0, scores.dtype)
        hard = ops.maximum(0.0, self.margin - positive + closest_negative) * has_negative
        soft = ops.maximum(0.0, self.margin - positive + mean_negative) * has_negative
        out = (hard + soft) * ops.cast(ops.equal(label, 1.0), scores.dtype)
        if self.negatives_weight > 0:
            out = out + self.negatives_weight * _pair_ranking(positive, label, self.ranking_scale) / ops.cast(batch, scores.dtype)
        return out

    def get_config(self):
        return super().get_config() | {"margin": self.margin, "negatives_weight": self.negatives_weight, "ranking_scale": self.ranking_scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class InBatchSoftmaxLoss(keras.losses.Loss):
    """Multiple-negatives ranking loss (InfoNCE) over in-batch candidates, symmetric, false negatives masked.

    As sentence-transformers' MultipleNegativesRankingLoss / MultipleNegativesSymmetricRankingLoss: for each
    duplicate row i, cross-entropy of softmax(scale * cos(v1_i, v2_j)) over all rows j with target j = i, and
    (symmetric) the same from v2_i over all v1_j. `y_true` as in `TripletLoss`; candidates of i's own
    duplicate cluster (other than i) are masked out, non-duplicate rows are candidates only. Plus
    `negatives_weight` x the CoSENT ranking of the labelled pair cosines, and `distill_weight` x the MarginMSE of each
    pair's own search negatives where the batch carries their teacher scores (`_margin_mse`). Mean over the duplicate rows.
    """

    def __init__(self, scale: float = 20.0, symmetric: bool = True, negatives_weight: float = 0.0, ranking_scale: float = 20.0,
                 distill_weight: float = 0.0, name: str = "in_batch_softmax_loss", reduction: str = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.symmetric = bool(symmetric)
        self.negatives_weight = float(negatives_weight)
        self.ranking_scale = float(ranking_scale)
        self.distill_weight = float(distill_weight)

    def _direction(self, anchors, candidates, g_anchor, g_candidate):
        logits = self.scale * ops.matmul(anchors, ops.transpose(candidates))
        logits = ops.where(_false_negative_mask(g_anchor, g_candidate), -1e9, logits)
        return ops.logsumexp(logits, axis=1) - ops.diagonal(logits)

    def call(self, y_true, y_pred):
        v1, v2, batch, g1, g2, label = _unpack(y_true, y_pred)
        per_row = self._direction(v1, v2, g1, g2)
        if self.symmetric:
            per_row = 0.5 * (per_row + self._direction(v2, v1, g2, g1))
        # Mean over duplicate rows, written as per-row values whose batch mean is that mean.
        dup = ops.cast(ops.equal(label, 1.0), per_row.dtype)
        n_dup = ops.maximum(ops.sum(dup), 1.0)
        out = per_row * dup * ops.cast(batch, per_row.dtype) / n_dup
        if self.negatives_weight > 0:
            out = out + self.negatives_weight * _pair_ranking(ops.sum(v1 * v2, axis=1), label, self.ranking_scale)
        if self.distill_weight > 0 and y_true.shape[-1] == 6:
            # The validation batches carry no owners: their loss (what early stopping reads) is the softmax's alone.
            out = out + self.distill_weight * _margin_mse(v1, v2, y_true, label)
        return out

    def get_config(self):
        return super().get_config() | {"scale": self.scale, "symmetric": self.symmetric, "negatives_weight": self.negatives_weight,
                                       "ranking_scale": self.ranking_scale, "distill_weight": self.distill_weight}
