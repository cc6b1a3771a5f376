"""The lexical baseline: TF-IDF fitted on train only, its own calibrated threshold, the model's metric functions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import cosine_similarity

from qdup.errors import QdupError
from qdup.evaluation.baseline import (
    baseline_metrics,
    fit_char_tfidf,
    lexical_pair_baseline,
    lexical_scores,
    tfidf_pair_cosines,
)
from qdup.evaluation.metrics import binary_metrics, choose_threshold, ranking_metrics


def frame(pairs: list[tuple[str, str, int]]) -> pd.DataFrame:
    # Question ids as the release gives them: one per distinct question text.
    qid, _ = pd.factorize(pd.Series([p[0] for p in pairs] + [p[1] for p in pairs]))
    return pd.DataFrame(
        {"id": range(len(pairs)), "qid1": qid[: len(pairs)] + 1, "qid2": qid[len(pairs) :] + 1,
         "question1": [p[0] for p in pairs], "question2": [p[1] for p in pairs],
         "is_duplicate": np.array([p[2] for p in pairs], dtype=np.int8)}
    )


TRAIN = frame([
    ("How do I learn Python?", "What is the best way to learn Python?", 1),
    ("How can I lose weight fast?", "What is the fastest way to lose weight?", 1),
    ("What is the capital of France?", "Which city is the capital of France?", 1),
    ("How do I cook rice?", "What is the best way to cook rice?", 1),
])
# Duplicates share most characters, non-duplicates few: a lexical scorer separates them perfectly.
CAL = frame([
    ("How do I learn Python?", "How do I learn Python quickly and easily at home?", 1),
    ("What is the capital of France?", "What is the capital city of France these days?", 1),
    ("How do I cook rice?", "Which city is the capital of France?", 0),
    ("How can I lose weight fast?", "How do I learn Python?", 0),
])
TEST = frame([
    ("How do I cook rice?", "How do I cook rice well?", 1),
    ("How can I lose weight fast?", "How can I lose weight very fast?", 1),
    ("What is the best way to learn Python?", "What is the fastest way to lose weight?", 0),
    ("How do I learn Python?", "What is the capital of France?", 0),
    ("Which city is the capital of France?", "How do I cook rice?", 0),
])


def test_cosine_is_the_tfidf_cosine_and_identical_questions_score_one():
    vec = fit_char_tfidf(TRAIN)
    q1, q2 = TEST["question1"].tolist(), TEST["question2"].tolist()
    got = tfidf_pair_cosines(vec, q1, q2)
    want = np.diag(cosine_similarity(vec.transform(q1), vec.transform(q2)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert tfidf_pair_cosines(vec, ["How do I cook rice?"], ["How do I cook rice?"])[0] == pytest.approx(1.0)


def test_the_vectoriser_knows_only_training_ngrams():
    vec = fit_char_tfidf(TRAIN, ngram_range=(2, 3))
    vocab = set(vec.vocabulary_)
    assert " py" in vocab and "qu" not in vocab  # "quickly" is in calibration only
    # A question made only of n-grams never seen in train is the zero vector: cosine 0 even with itself.
    assert tfidf_pair_cosines(vec, ["zzqqxx"], ["zzqqxx"])[0] == 0.0
    # Each distinct training question counts once in the document frequencies.
    doubled = pd.concat([TRAIN, TRAIN], ignore_index=True)
    np.testing.assert_array_equal(fit_char_tfidf(doubled).idf_, fit_char_tfidf(TRAIN).idf_)


def test_baseline_block_uses_calibration_threshold_and_the_model_metric_functions():
    scores = lexical_scores(TRAIN, CAL, TEST)
    block = baseline_metrics(scores, CAL, TEST)
    y_cal, y_test = CAL["is_duplicate"].to_numpy(), TEST["is_duplicate"].to_numpy()
    assert block["threshold"]["value"] == choose_threshold(y_cal, scores.calibration)["accuracy_threshold"]
    assert block["threshold"]["chosen_on"] == "calibration" and block["threshold"]["calibration_accuracy"] == 1.0
    assert block["test"]["ranking"] == ranking_metrics(y_test, scores.test)
    assert block["test"]["at_threshold"] == binary_metrics(y_test, scores.test, block["threshold"]["value"])
    # Crafted to be separable lexically: perfect ranking and accuracy on test.
    assert block["test"]["ranking"]["roc_auc"] == 1.0 and block["test"]["ranking"]["pr_auc"] == 1.0
    assert block["test"]["at_threshold"]["accuracy"] == 1.0
    assert roc_auc_score(y_test, scores.test) == block["test"]["ranking"]["roc_auc"]
    assert block["params"]["ngram_range"] == [2, 5] and block["params"]["fitted_on"] == "train"
    assert block["params"]["train_questions"] == 8 and block["params"]["features"] > 100
    assert json.loads(json.dumps(block)) == block
    assert lexical_pair_baseline(TRAIN, CAL, TEST) == block


def test_baseline_on_generated_data_beats_chance(tmp_path):
    from qdup.config import SplitConfig
    from qdup.data.demo import generate_pairs
    from qdup.data.splits import make_splits

    splits, _ = make_splits(generate_pairs(3000, seed=4), SplitConfig(n_train=0.8, n_test=0.2))
    block = lexical_pair_baseline(splits["train"], splits["calibration"], splits["test"], ngram_range=(2, 4))
    assert block["test"]["ranking"]["positives"] + block["test"]["ranking"]["negatives"] == 600
    assert 0.6 < block["test"]["ranking"]["roc_auc"] < 1.0
    assert block["test"]["at_threshold"]["accuracy"] > 0.63  # above predicting "not duplicate" for all


@pytest.mark.parametrize("drop, match", [("question2", "test split has no 'question2'"), ("is_duplicate", "test split has no 'is_duplicate'")])
def test_missing_columns_are_named(drop, match):
    with pytest.raises(QdupError, match=match):
        lexical_pair_baseline(TRAIN, CAL, TEST.drop(columns=[drop]))


def test_untrainable_baseline_is_a_clear_error():
    with pytest.raises(QdupError, match="cannot fit"):
        fit_char_tfidf(TRAIN, min_df=100)
