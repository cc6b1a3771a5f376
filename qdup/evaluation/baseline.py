"""The lexical baseline: character n-gram TF-IDF cosine of the two questions, measured like the model.

The vectoriser is fitted on the train split's questions only; its threshold is chosen on the
calibration split with the model's rule (`choose_threshold`, max accuracy) and every test figure
comes from the same functions as the model's (`ranking_metrics`, `binary_metrics`), so the two
sides of the comparison differ only in the scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from qdup.errors import QdupError
from qdup.evaluation.metrics import THRESHOLD_OBJECTIVE, binary_metrics, choose_threshold, ranking_metrics

NAME = "char n-gram TF-IDF cosine"


@dataclass(frozen=True)
class BaselineScores:
    """Per-pair baseline similarities of the calibration and test splits, and how they were made."""

    calibration: np.ndarray
    test: np.ndarray
    params: dict[str, Any]


def _questions(df: pd.DataFrame, name: str) -> tuple[list[str], list[str]]:
    for col in ("question1", "question2"):
        if col not in df.columns:
            raise QdupError(f"the {name} split has no {col!r} column (columns: {list(df.columns)})")
    return df["question1"].astype(str).tolist(), df["question2"].astype(str).tolist()


def _train_docs(train_df: pd.DataFrame) -> list[str]:
    q1, q2 = _questions(train_df, "train")
    return list(dict.fromkeys(q1 + q2))


def fit_char_tfidf(
    train_df: pd.DataFrame, *, ngram_range: tuple[int, int] = (2, 5), min_df: int = 1, sublinear_tf: bool = True
) -> TfidfVectorizer:
    """A TF-IDF vectoriser of character n-grams within word boundaries, fitted on the train split only.

    Each distinct training question counts once: a question asked many times would otherwise
    weigh on the document frequencies in proportion to its popularity.
    """
    docs = _train_docs(train_df)
    if not docs:
        raise QdupError("the train split holds no questions to fit the lexical baseline on")
    vectorizer = TfidfVectorizer(
        analyzer="char_wb", ngram_range=tuple(ngram_range), min_df=min_df, lowercase=True, sublinear_tf=sublinear_tf,
        dtype=np.float64,
    )
    try:
        vectorizer.fit(docs)
    except ValueError as exc:  # e.g. min_df prunes every n-gram
        raise QdupError(f"lexical baseline: cannot fit on {len(docs):,} training questions: {exc}") from exc
    return vectorizer


def tfidf_pair_cosines(vectorizer: TfidfVectorizer, q1: Sequence[str], q2: Sequence[str]) -> np.ndarray:
    """Cosine (float64, in [0, 1]) of each pair's TF-IDF vectors; each distinct question is transformed once.

    Rows are L2-normalised by the vectoriser, so the cosine is the row-wise dot product; a
    question with no known n-gram has the zero vector and cosine 0 with everything.
    """
    if len(q1) != len(q2):
        raise QdupError(f"question lists differ in length: {len(q1)} question1 vs {len(q2)} question2")
    slot: dict[str, int] = {}
    i1 = np.fromiter((slot.setdefault(q, len(slot)) for q in q1), dtype=np.int64, count=len(q1))
    i2 = np.fromiter((slot.setdefault(q, len(slot)) for q in q2), dtype=np.int64, count=len(q2))
    x = vectorizer.transform(list(slot)).tocsr()
    cos = np.asarray(x[i1].multiply(x[i2]).sum(axis=1)).ravel()
    return np.clip(cos, 0.0, 1.0)


def lexical_scores(
    train_df: pd.DataFrame,
    calibration_df: pd.DataFrame,
    test_df: pd.DataFrame,
    *,
    ngram_range: tuple[int, int] = (2, 5),
    min_df: int = 1,
    sublinear_tf: bool = True,
) -> BaselineScores:
    """Fit on train; the baseline similarity of every calibration and test pair."""
    vectorizer = fit_char_tfidf(train_df, ngram_range=ngram_range, min_df=min_df, sublinear_tf=sublinear_tf)
    cal = tfidf_pair_cosines(vectorizer, *_questions(calibration_df, "calibration"))
    test = tfidf_pair_cosines(vectorizer, *_questions(test_df, "test"))
    params = {
        "analyzer": "char_wb",
        "ngram_range": [int(ngram_range[0]), int(ngram_range[1])],
        "min_df": int(min_df),
        "sublinear_tf": bool(sublinear_tf),
        "lowercase": True,
        "fitted_on": "train",
        "train_questions": len(_train_docs(train_df)),
        "features": len(vectorizer.idf_),
    }
    return BaselineScores(cal, test, params)


def _labels(df: pd.DataFrame, name: str) -> np.ndarray:
    if "is_duplicate" not in df.columns:
        raise QdupError(f"the {name} split has no 'is_duplicate' column (columns: {list(df.columns)})")
    return df["is_duplicate"].to_numpy(dtype=np.int64)


def baseline_metrics(scores: BaselineScores, calibration_df: pd.DataFrame, test_df: pd.DataFrame) -> dict[str, Any]:
    """The baseline block of metrics.json: its own calibrated threshold; ranking and metrics at it on calibration (what the
    gate's baseline-lift check reads) and on test (reported)."""
    y_cal, y_test = _labels(calibration_df, "calibration"), _labels(test_df, "test")
    choice = choose_threshold(y_cal, scores.calibration)
    threshold = choice["accuracy_threshold"]
    return {
        "name": NAME,
        "params": scores.params,
        "threshold": {
            "value": threshold,
            "objective": THRESHOLD_OBJECTIVE,
            "chosen_on": "calibration",
            "calibration_accuracy": choice["accuracy"],
        },
        "calibration": {
            "ranking": ranking_metrics(y_cal, scores.calibration),
            "at_threshold": binary_metrics(y_cal, scores.calibration, threshold),
        },
        "test": {
            "ranking": ranking_metrics(y_test, scores.test),
            "at_threshold": binary_metrics(y_test, scores.test, threshold),
        },
    }


def lexical_pair_baseline(
    train_df: pd.DataFrame,
    calibration_df: pd.DataFrame,
    test_df: pd.DataFrame,
    *,
    ngram_range: tuple[int, int] = (2, 5),
    min_df: int = 1,
    sublinear_tf: bool = True,
) -> dict[str, Any]:
    """The baseline block (JSON-able) for these splits; see `lexical_scores` for the per-pair similarities."""
    scores = lexical_scores(train_df, calibration_df, test_df, ngram_range=ngram_range, min_df=min_df, sublinear_tf=sublinear_tf)
    return baseline_metrics(scores, calibration_df, test_df)
