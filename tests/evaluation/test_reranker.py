"""The pair reranker: features by hand, grouped folds, save/load round trip and refusal, the rerank stage on generated data."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from qdup.config import EvalConfig, ModelConfig, RerankConfig, SplitConfig, ValidateConfig, VocabConfig
from qdup.errors import QdupError
from qdup.evaluation.reranker import (
    BM25_B,
    BM25_K1,
    FEATURE_NAMES,
    FILES,
    MODEL_FILE,
    BoostingParams,
    fit_featurizer,
    fit_reranker,
    load_reranker,
    out_of_fold_scores,
    pair_groups,
    save_reranker,
    standard_tokens,
)

TRAIN = pd.DataFrame({
    "question1": ["How do I learn Python?", "What is the capital of France?"],
    "question2": ["How can I learn Python fast?", "Which city is the capital of France?"],
})


def feature(x: np.ndarray, name: str) -> np.ndarray:
    return x[:, FEATURE_NAMES.index(name)]


def test_tokens_follow_the_vocabulary_standardisation():
    assert standard_tokens("What's  the C++ deal, Mr. O'Neil?\tYes") == ["whats", "the", "c", "deal", "mr", "oneil", "yes"]


def test_features_by_hand():
    f = fit_featurizer(TRAIN)
    # 4 distinct training questions; "learn" is in 2 of them, "python" in 2, "capital" in 2, "fast" in 1.
    assert f.documents == 4
    assert f.bm25_idf["learn"] == pytest.approx(math.log(1 + (4 - 2 + 0.5) / (2 + 0.5)))
    assert f.bm25_idf["fast"] == pytest.approx(math.log(1 + (4 - 1 + 0.5) / (1 + 0.5)))
    assert f.bm25_unseen_idf == pytest.approx(math.log(1 + 4.5 / 0.5))
    q1, q2 = ["learn python fast", "zebra 2019 one"], ["python learn", "zebra 2020 one two"]
    x = f.features(q1, q2, [0.5, -0.25])
    assert x.shape == (2, len(FEATURE_NAMES))
    assert feature(x, "encoder_cosine").tolist() == [0.5, -0.25]
    assert feature(x, "word_jaccard") == pytest.approx([2 / 3, 2 / 5])
    assert feature(x, "shared_tokens").tolist() == [2, 2]
    assert feature(x, "shared_share_of_shorter") == pytest.approx([1.0, 2 / 3])
    assert feature(x, "tokens_min").tolist() == [2, 3] and feature(x, "tokens_max").tolist() == [3, 4]
    assert feature(x, "tokens_abs_diff").tolist() == [1, 1]
    assert feature(x, "tokens_ratio") == pytest.approx([2 / 3, 3 / 4])
    assert feature(x, "chars_abs_diff").tolist() == [len(q1[0]) - len(q2[0]), len(q2[1]) - len(q1[1])]
    assert feature(x, "digit_tokens_differ").tolist() == [0.0, 1.0]
    assert feature(x, "same_first_word").tolist() == [0.0, 1.0]
    # BM25 of "python learn" (doc, 2 tokens) for the query "learn python fast": two matching terms, tf 1 each.
    norm = BM25_K1 * (1 - BM25_B + BM25_B * 2 / f.bm25_avgdl)
    doc_for_q1 = (f.bm25_idf["learn"] + f.bm25_idf["python"]) * (BM25_K1 + 1) / (1 + norm)
    assert f.bm25(["learn", "python", "fast"], ["python", "learn"]) == pytest.approx(doc_for_q1)
    assert max(feature(x, "bm25_max")[0], 0) >= feature(x, "bm25_min")[0] > 0
    # Identical questions: TF-IDF cosine 1, every overlap feature at its maximum.
    same = f.features(["How do I learn Python?"], ["How do I learn Python?"], [1.0])
    assert feature(same, "char_tfidf_cosine")[0] == pytest.approx(1.0)
    assert feature(same, "word_jaccard")[0] == feature(same, "idf_weighted_jaccard")[0] == 1.0
    assert feature(same, "bm25_max_normalised")[0] == pytest.approx(1.0)


def test_features_are_symmetric():
    f = fit_featurizer(TRAIN)
    a, b = ["How do I learn Python 3?", "capital of France"], ["Best way to learn python?", "Which is the capital city of Spain?"]
    assert np.array_equal(f.features(a, b, [0.1, 0.2]), f.features(b, a, [0.1, 0.2]))


def test_pair_groups_join_pairs_that_share_a_question():
    groups = pair_groups(["a", "c", "b", "x", "e"], ["b", "d", "z", "y", "d"])
    # a-b, b-z together; c-d, e-d together; x-y alone.
    assert groups[0] == groups[2] and groups[1] == groups[4]
    assert len({groups[0], groups[1], groups[3]}) == 3


def _synthetic(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    words = ["learn", "python", "paris", "france", "money", "online", "best", "way", "city", "river"]
    q1, q2 = [], []
    for i in range(n):
        base = list(rng.choice(words, size=4, replace=False))
        other = base[:3] + ["fast"] if y[i] else list(rng.choice(words, size=4, replace=False))
        q1.append(f"what {' '.join(base)} {i}")
        q2.append(f"how {' '.join(other)} {i + n}")
    cos = np.clip(0.3 * y + rng.normal(0.4, 0.2, n), -1, 1)
    return q1, q2, cos, y


def test_out_of_fold_scores_cover_every_pair_and_beat_chance():
    q1, q2, cos, y = _synthetic()
    f = fit_featurizer(TRAIN)
    x = f.features(q1, q2, cos)
    oof = out_of_fold_scores(x, y, pair_groups(q1, q2), BoostingParams(max_iter=30), folds=4, seed=1)
    assert oof.shape == y.shape and np.isfinite(oof).all() and ((oof >= 0) & (oof <= 1)).all()
    assert np.mean(oof[y == 1]) > np.mean(oof[y == 0]) + 0.2
    again = out_of_fold_scores(x, y, pair_groups(q1, q2), BoostingParams(max_iter=30), folds=4, seed=1)
    assert np.array_equal(oof, again)  # seeded


def test_one_class_calibration_is_refused_by_field():
    x = np.zeros((10, len(FEATURE_NAMES)))
    with pytest.raises(QdupError, match=r"rerank\.enabled.*calibration has 0 and 10"):
        out_of_fold_scores(x, np.zeros(10, dtype=np.int64), np.arange(10), BoostingParams(), folds=2, seed=0)


def test_save_load_round_trip_and_refusal_of_an_altered_file(tmp_path):
    q1, q2, cos, y = _synthetic(200)
    f = fit_featurizer(TRAIN)
    x = f.features(q1, q2, cos)
    params = BoostingParams(max_iter=20)
    oof = out_of_fold_scores(x, y, pair_groups(q1, q2), params, folds=3, seed=3)
    reranker = fit_reranker(f, x, y, oof, params, seed=3)
    digests = save_reranker(reranker, tmp_path)
    assert set(digests) == set(FILES) and all(len(d) == 64 for d in digests.values())
    loaded = load_reranker(tmp_path)
    new = ["How do I learn Python quickly?", "zzz unseen words 42"]
    old = ["Best way to learn python", "capital of France"]
    assert np.array_equal(loaded.score(new, old, [0.7, 0.1]), reranker.score(new, old, [0.7, 0.1]))
    assert np.array_equal(loaded.score(q1, q2, cos), reranker.score(q1, q2, cos))
    assert loaded.threshold == reranker.threshold and 0 <= loaded.threshold <= 1
    meta = json.loads((tmp_path / "reranker.json").read_text())
    assert meta["features"] == list(FEATURE_NAMES) and meta["threshold_choice"]["chosen_on"].startswith("calibration")

    data = bytearray((tmp_path / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(QdupError, match=r"reranker\.skops: sha256 .* differs .* refusing to load"):
        load_reranker(tmp_path)
    (tmp_path / MODEL_FILE).unlink()
    with pytest.raises(QdupError, match="reranker file reranker.skops is missing"):
        load_reranker(tmp_path)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, demo_tsv):
    """Real validate, splits and vocabulary stages on generated data; an untrained tiny encoder."""
    import keras

    from qdup.model.network import build_encoder
    from qdup.model.vocab import load_vectorizer
    from qdup.stages.splits import build_splits
    from qdup.stages.validate import build_validate
    from qdup.stages.vocab import build_vocab

    root = tmp_path_factory.mktemp("rerank")
    build_validate(demo_tsv, ValidateConfig(), root / "validate")
    build_splits(root / "validate" / "validated.parquet", SplitConfig(n_train=0.7, n_test=0.3), ValidateConfig(), root / "splits")
    build_vocab(root / "splits", VocabConfig(), root / "vocab")
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=16)
    keras.utils.set_random_seed(0)
    build_encoder(load_vectorizer(root / "vocab" / "vocabulary.txt").vocabulary_size(), cfg).save(root / "encoder.keras")
    return root, cfg


def test_the_stage_fits_on_calibration_and_reports_all_three_on_test(small_run, tmp_path):
    from qdup.evaluation.reranker import load_reranker
    from qdup.stages.rerank import METRICS_FILE, build_rerank

    root, cfg = small_run
    out = tmp_path / "rerank"
    out.mkdir()
    manifest = build_rerank(root / "splits", root / "vocab" / "vocabulary.txt", root / "encoder.keras", 0.5, cfg,
                            EvalConfig(bootstrap_resamples=200), RerankConfig(max_iter=40, folds=3), 5, out)
    metrics = json.loads((out / METRICS_FILE).read_text())
    rr, enc, base = metrics["reranker"], metrics["encoder"], metrics["baseline"]
    assert rr["fitted_on"] == "calibration" and rr["threshold"]["chosen_on"] == "calibration (out-of-fold)"
    assert rr["calibration_pairs"] == len(pd.read_parquet(root / "splits" / "calibration.parquet"))
    # The lexical features carry the generated paraphrases; an untrained encoder carries little.
    assert rr["test"]["ranking"]["roc_auc"] > enc["test"]["ranking"]["roc_auc"] + 0.05
    assert rr["test"]["ranking"]["roc_auc"] > 0.65 and base["test"]["ranking"]["roc_auc"] > 0.6
    assert metrics["test"]["rows"] == len(pd.read_parquet(root / "splits" / "test.parquet"))
    for name in ("reranker", "encoder", "baseline"):
        iv = metrics[name]["intervals"]["metrics"]["roc_auc"]
        assert iv["low"] <= metrics[name]["test"]["ranking"]["roc_auc"] <= iv["high"]
    diff = metrics["differences"]["reranker_minus_encoder"]
    assert diff["metric"] == "roc_auc" and diff["difference"] == pytest.approx(
        rr["test"]["ranking"]["roc_auc"] - enc["test"]["ranking"]["roc_auc"])
    assert set(metrics["differences"]) == {"reranker_minus_encoder", "reranker_minus_baseline"}
    scores = pd.read_parquet(out / manifest["scores_file"])
    loaded = load_reranker(out / manifest["reranker_dir"])
    test = pd.read_parquet(root / "splits" / "test.parquet")
    again = loaded.score(test.question1.tolist()[:20], test.question2.tolist()[:20], scores.encoder.to_numpy()[:20])
    assert np.allclose(again, scores.reranker.to_numpy()[:20], atol=1e-12)
    assert manifest["metrics"]["reranker"]["roc_auc"] == rr["test"]["ranking"]["roc_auc"]


def test_a_question_and_itself_score_one_and_monotonic_trees_never_fall_with_similarity():
    q1, q2, cos, y = _synthetic(300, seed=4)
    f = fit_featurizer(TRAIN)
    x = f.features(q1, q2, cos)
    params = BoostingParams(max_iter=40, monotonic=True)
    reranker = fit_reranker(f, x, y, out_of_fold_scores(x, y, pair_groups(q1, q2), params, 3, 0), params, 0)
    assert reranker.score(["How do I learn Python?", "a b"], ["how do I learn python", "b a"], [-1.0, -1.0])[0] == 1.0
    assert reranker.score(["a b"], ["b a"], [-1.0])[0] < 1.0
    for name in ("encoder_cosine", "char_tfidf_cosine", "word_jaccard"):
        higher = x.copy()
        higher[:, FEATURE_NAMES.index(name)] += 0.3
        assert (reranker.score_features(higher) >= reranker.score_features(x) - 1e-12).all()
