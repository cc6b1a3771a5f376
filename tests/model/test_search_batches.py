"""Search negatives in training: candidate-only rows join their pairs' batches as columns of the in-batch softmax;
with train.search_negatives = 0 training is exactly what it was."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from qdup.config import ModelConfig, TrainConfig, VocabConfig
from qdup.model.batches import batch_plan, epoch_seed
from qdup.model.losses import InBatchSoftmaxLoss
from qdup.model.search_batches import CANDIDATE_ONLY, neighbour_frame
from qdup.model.train import train_model
from qdup.model.vocab import fit_vectorizer
from tests.search.test_search_negatives import parts, silver  # noqa: F401  (fixtures: the demo splits and their silver split)

TINY = ModelConfig(embedding_dim=16, lstm_units=16, max_length=12)


def _unit(rng, n, d=4):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _expected(v1, v2, extra, scale, masked=()):
    """Symmetric in-batch softmax of the duplicate rows, with `extra` as columns of both directions (numpy)."""
    losses = []
    for i in range(len(v1)):
        per = []
        for a, c in ((v1, v2), (v2, v1)):
            cols = np.concatenate([c, extra])
            logits = scale * cols @ a[i]
            keep = np.ones(len(cols), bool)
            keep[[len(c) + j for j in masked if i == 0]] = False
            per.append(np.log(np.exp(logits[keep]).sum()) - logits[i])
        losses.append(np.mean(per))
    return float(np.mean(losses))


@pytest.mark.parametrize("masked", [(), (0,)])
def test_a_candidate_only_row_is_a_column_of_every_anchor_and_never_an_anchor(masked):
    rng = np.random.default_rng(3)
    v1, v2, c = _unit(rng, 3), _unit(rng, 3), _unit(rng, 1)
    # The candidate shares the cluster of row 0 when masked: it is no negative of row 0's anchors then.
    g_c = 0.0 if masked else 9.0
    y_pred = np.concatenate([np.concatenate([v1, c]), np.concatenate([v2, c])], axis=1)
    y_true = np.array([[0, 0, 1], [1, 1, 1], [2, 2, 1], [g_c, g_c, CANDIDATE_ONLY]], np.float32)
    got = float(ops.convert_to_numpy(InBatchSoftmaxLoss(scale=5.0)(y_true, y_pred)))
    assert got == pytest.approx(_expected(v1, v2, c, 5.0, masked), rel=1e-5)
    without = float(ops.convert_to_numpy(InBatchSoftmaxLoss(scale=5.0)(y_true[:3], y_pred[:3])))
    assert got > without  # one more column in the softmax of at least one anchor


def test_each_batch_gains_neighbours_of_its_own_pairs_drawn_per_epoch(parts, silver):  # noqa: F811
    _, p = parts
    _, s = silver
    train = p["train"]
    rows, pool = neighbour_frame(train, s)
    assert (rows["is_duplicate"] == CANDIDATE_ONLY).all() and rows["question1"].is_unique
    from qdup.model.search_batches import SearchNegatives

    search = SearchNegatives(pool, 2, len(train))
    plan = batch_plan(np.arange(len(train)) % 7 + 1, 32, epoch_seed(0, 1))
    one, again, two = search.extend(plan, len(train), 0, 1), search.extend(plan, len(train), 0, 1), search.extend(plan, len(train), 0, 2)
    assert all(np.array_equal(a, b) for a, b in zip(one, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    neighbours = s.groupby("query")["candidate"].agg(set)
    for batch, extended in zip(plan, one, strict=True):
        assert np.array_equal(extended[: len(batch)], batch)
        added = extended[len(batch):] - len(train)
        assert len(added) <= 2 * len(batch) and len(np.unique(added)) == len(added)
        allowed = set().union(*(neighbours.get(q, set()) for i in batch for q in train.iloc[i][["question1", "question2"]]))
        assert set(rows["question1"].to_numpy()[added]) <= allowed
    assert sum(len(e) - len(b) for b, e in zip(plan, one, strict=True)) > len(train)


@pytest.mark.slow
def test_search_negatives_change_training_and_zero_leaves_it_as_it_was(parts, silver, tmp_path):  # noqa: F811
    _, p = parts
    _, s = silver
    vec = fit_vectorizer(list(p["train"]["question1"]) + list(p["train"]["question2"]), VocabConfig())
    cfg = TrainConfig(epochs=1, batch_size=32, deterministic=True)

    def run(name, **kw):
        train_cfg = cfg.model_copy(update={k: v for k, v in kw.items() if k != "silver_df"})
        r = train_model(p["train"], p["val"], vec, TINY, train_cfg, 0, tmp_path / name, log=lambda m: None,
                        silver_df=kw.get("silver_df"))
        from qdup.model.network import load_encoder

        return r, [w.copy() for w in load_encoder(r.encoder_path).get_weights()]

    base, w_base = run("base")
    off, w_off = run("off", silver_df=s)
    on, w_on = run("on", silver_df=s, search_negatives=2)
    assert off.facts == base.facts and off.history[0]["loss"] == base.history[0]["loss"]
    assert all(np.array_equal(a, b) for a, b in zip(w_base, w_off, strict=True))
    assert on.facts["search_negative_questions"] > 100 and base.facts["search_negative_questions"] == 0
    assert on.steps_per_epoch == base.steps_per_epoch and on.history[0]["loss"] != base.history[0]["loss"]
    assert not all(np.array_equal(a, b) for a, b in zip(w_base, w_on, strict=True))
    from qdup.errors import QdupError

    with pytest.raises(QdupError, match="silver split"):
        run("missing", search_negatives=1)


@pytest.mark.slow
def test_silver_duplicates_join_the_duplicate_pairs(parts, tmp_path):  # noqa: F811
    from qdup.config import ValidateConfig
    from qdup.data.silver import SILVER_FILE, read_silver
    from qdup.stages.silver import build_silver

    d, p = parts
    cfg = TrainConfig(epochs=1, batch_size=32, silver_positive_score=0.6, silver_negative_score=0.4)
    build_silver(d, cfg, ValidateConfig(), tmp_path, seed=3)
    s = read_silver(tmp_path / SILVER_FILE)
    vec = fit_vectorizer(list(p["train"]["question1"]) + list(p["train"]["question2"]), VocabConfig())
    r = train_model(p["train"], p["val"], vec, TINY, cfg, 0, tmp_path / "w", log=lambda m: None, silver_df=s)
    n_pos = int((s["kind"] == "silver_positive").sum())
    assert n_pos > 0 and r.facts["silver_duplicate_pairs"] == n_pos and r.facts["train_pairs"] == len(p["train"]) + n_pos
    assert r.facts["search_negative_questions"] == 0  # search_negatives is 0: the negatives rows stay out


def test_margin_mse_draws_the_encoders_margin_toward_the_teachers():
    from qdup.model.losses import _margin_mse

    rng = np.random.default_rng(5)
    v1, v2, n = _unit(rng, 2), _unit(rng, 2), _unit(rng, 2)
    y_pred = np.concatenate([np.concatenate([v1, n]), np.concatenate([v2, n])], axis=1)
    # Rows 2 and 3 are search negatives of pair 0 (teacher 0.3) and pair 1 (teacher 0.9).
    y_true = np.array([[0, 0, 1, 0, -1, 0], [1, 1, 1, 1, -1, 0], [7, 7, -1, 2, 0, 0.3], [8, 8, -1, 3, 1, 0.9]], np.float32)
    want = np.mean([((v1[0] @ v2[0] - v1[0] @ n[0]) - (1 - 0.3)) ** 2, ((v1[1] @ v2[1] - v1[1] @ n[1]) - (1 - 0.9)) ** 2])
    label = y_true[:, 2]
    got = float(ops.convert_to_numpy(_margin_mse(y_pred[:, :4], y_pred[:, 4:], y_true, label)))
    assert got == pytest.approx(want, rel=1e-5)
    # In the loss: the term, weighted; a batch without owners (validation's) gets the softmax alone.
    plain = float(ops.convert_to_numpy(InBatchSoftmaxLoss(scale=5.0)(y_true[:, :3], y_pred)))
    with_term = float(ops.convert_to_numpy(InBatchSoftmaxLoss(scale=5.0, distill_weight=2.0)(y_true, y_pred)))
    assert with_term == pytest.approx(plain + 2.0 * want, rel=1e-5)
    assert float(ops.convert_to_numpy(InBatchSoftmaxLoss(scale=5.0, distill_weight=2.0)(y_true[:, :3], y_pred))) == pytest.approx(plain)


def test_distillation_rows_belong_to_their_pair_and_carry_its_teacher_score(parts, silver):  # noqa: F811
    from qdup.model.search_batches import owned_neighbour_frame

    _, p = parts
    _, s = silver
    train = p["train"]
    scored = s.assign(teacher=np.linspace(0.0, 1.0, len(s), dtype=np.float32))
    rows, pool = owned_neighbour_frame(train, scored)
    assert (rows["is_duplicate"] == CANDIDATE_ONLY).all() and len(pool) == len(train)
    negatives = scored[scored["kind"] == "bm25_negative"]
    for i in range(0, len(train), 17):
        own = pool[i][pool[i] >= 0]
        assert (rows["owner"].to_numpy()[own] == i).all()
        want = negatives[negatives["query"] == train["question1"].iloc[i]].sort_values("rank")
        assert rows["question1"].to_numpy()[own].tolist() == want["candidate"].tolist()
        np.testing.assert_allclose(rows["teacher"].to_numpy()[own], want["teacher"].to_numpy())
    with pytest.raises(ValueError, match="teacher's score of every search negative"):
        owned_neighbour_frame(train, s.assign(teacher=np.nan))


def test_distillation_needs_the_softmax_and_search_negatives():
    from pydantic import ValidationError

    assert TrainConfig(distill_weight=1.0, search_negatives=2).uses_teacher
    for bad in ({"distill_weight": 1.0}, {"distill_weight": 1.0, "search_negatives": 2, "loss": "triplet"}):
        with pytest.raises(ValidationError, match="distill_weight > 0 needs"):
            TrainConfig(**bad)


@pytest.mark.slow
def test_distillation_trains_on_the_teacher_scored_silver_split(parts, tmp_path):  # noqa: F811
    from qdup.config import ValidateConfig
    from qdup.data.silver import SILVER_FILE, read_silver
    from qdup.stages.silver import build_silver

    d, p = parts
    cfg = TrainConfig(epochs=1, batch_size=32, search_negatives=2, distill_weight=1.0, deterministic=True)
    build_silver(d, cfg, ValidateConfig(), tmp_path, seed=3)
    s = read_silver(tmp_path / SILVER_FILE)
    assert s["teacher"].notna().all() and (s["kind"] == "bm25_negative").all()
    vec = fit_vectorizer(list(p["train"]["question1"]) + list(p["train"]["question2"]), VocabConfig())
    on = train_model(p["train"], p["val"], vec, TINY, cfg, 0, tmp_path / "on", log=lambda m: None, silver_df=s)
    off = train_model(p["train"], p["val"], vec, TINY, cfg.model_copy(update={"distill_weight": 0.0}), 0, tmp_path / "off",
                      log=lambda m: None, silver_df=s)
    assert on.facts["search_negative_questions"] > off.facts["search_negative_questions"] > 0  # one row per (pair, neighbour)
    assert on.history[0]["loss"] != off.history[0]["loss"]
