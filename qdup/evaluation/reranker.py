"""The pair reranker: seeded gradient-boosted trees over the pair features (`qdup.evaluation.pair_features`).

`fit_reranker` fits a scikit-learn HistGradientBoostingClassifier on labelled pairs the encoder neither trained nor
early-stopped on (the calibration split); `out_of_fold_scores` gives each calibration pair a score from a model that
did not see its group, for choosing the decision threshold honestly. A `Reranker` scores with its trees' ONNX form
(`qdup.evaluation.reranker_trees`); its files are written and read by `qdup.evaluation.reranker_io`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedGroupKFold
from threadpoolctl import ThreadpoolController

from qdup.data.graph import pair_components
from qdup.errors import QdupError
from qdup.evaluation.metrics import choose_threshold
from qdup.evaluation.pair_features import FEATURE_NAMES, PairFeaturizer
from qdup.evaluation.reranker_trees import TreeScorer

__all__ = ["BoostingParams", "PairFeaturizer", "Reranker", "check_labelled", "fit_reranker", "out_of_fold_scores", "pair_groups"]

# Features along which more similarity may never lower the score (BoostingParams.monotonic).
INCREASING = ("encoder_cosine", "char_tfidf_cosine", "word_jaccard", "idf_weighted_jaccard", "shared_share_of_shorter",
              "bm25_max_normalised")


@dataclass(frozen=True)
class BoostingParams:
    """HistGradientBoostingClassifier settings (the fields of qdup.config.RerankConfig that shape the trees)."""

    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 20
    l2_regularization: float = 1.0
    monotonic: bool = False

    def model(self, seed: int, features: tuple[str, ...] = FEATURE_NAMES) -> HistGradientBoostingClassifier:
        # No early stopping: its internal validation split would take pairs away from a small calibration split.
        cst = [1 if name in INCREASING else 0 for name in features] if self.monotonic else None
        return HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization, early_stopping=False,
            random_state=int(seed), monotonic_cst=cst,
        )


# The trees are fitted on a few thousand pairs: OpenMP threads cost more than they save there (scikit-learn's fits and
# predictions are many times slower with the default threads: bench.rerank_speed's trees_default_threads), and the
# results do not depend on the thread count. One controller for the process: building one scans every loaded library
# (milliseconds); it is built on first use, after this module's import loaded scikit-learn's OpenMP.
@functools.cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


def one_thread():
    return _controller().limit(limits=1, user_api="openmp")


def pair_groups(q1: Sequence[str], q2: Sequence[str]) -> np.ndarray:
    """Group label of each pair: pairs that share a question, directly or through others, share a group.

    Connected components of the question graph over every pair (either label): a question's pairs never
    fall on both sides of a fold, and duplicate clusters (transitive closure of duplicates) stay whole.
    """
    return pair_components(np.asarray(q1, dtype=object), np.asarray(q2, dtype=object))


def check_labelled(y: np.ndarray, where: str, folds: int, option: str = "rerank.enabled") -> None:
    """QdupError unless `y` has enough pairs of both classes for `folds` grouped folds."""
    pos = int(np.sum(y == 1))
    neg = int(np.sum(y == 0))
    if pos < folds or neg < folds:
        raise QdupError(
            f"{option}: the reranker is fitted on labelled {where} pairs and needs at least rerank.folds={folds} "
            f"duplicates and non-duplicates; {where} has {pos} and {neg}"
        )


def out_of_fold_scores(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, params: BoostingParams, folds: int, seed: int,
    where: str = "calibration", option: str = "rerank.enabled", features: tuple[str, ...] = FEATURE_NAMES,
) -> np.ndarray:
    """Each pair's duplicate probability from a model fitted on the other folds (grouped by `groups`, stratified)."""
    check_labelled(y, where, folds, option)
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise QdupError(f"{option}: the {where} pairs fall into {n_groups} group(s) of linked questions, fewer than "
                        f"rerank.folds={folds}; lower rerank.folds or give more labelled data")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=int(seed))
    scores = np.full(len(y), np.nan, dtype=np.float64)
    for k, (fit_idx, held_idx) in enumerate(splitter.split(x, y, groups)):
        if len(np.unique(y[fit_idx])) < 2:
            raise QdupError(f"rerank: fold {k} of {where} leaves one class to fit on; lower rerank.folds")
        with one_thread():
            model = params.model(seed, features).fit(x[fit_idx], y[fit_idx])
            scores[held_idx] = model.predict_proba(x[held_idx])[:, 1]
    return scores


@dataclass
class Reranker:
    """A fitted reranker: pair features -> duplicate probability; `threshold` chosen on out-of-fold calibration scores.

    `features` names the columns its trees read: the pair features (FEATURE_NAMES), or those followed by a search's
    first-stage features for a search reranker (`qdup.search.candidate_rerank`), whose rows only a search can build.
    """

    featurizer: PairFeaturizer
    # The fitted scikit-learn model; None for a reranker loaded from its trees file (scoring needs only the trees).
    model: HistGradientBoostingClassifier | None
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)
    trees: TreeScorer | None = field(default=None, repr=False, compare=False)
    features: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self):
        if self.trees is None:
            if self.model is None:
                raise QdupError("a reranker needs its fitted model or its trees")
            self.trees = TreeScorer.from_model(self.model, len(self.features))

    def score_features(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        return self.trees.predict_proba(x)

    def score(self, q1: Sequence[str], q2: Sequence[str], cosine: Sequence[float] | np.ndarray) -> np.ndarray:
        """Duplicate probability of each pair, given the encoder's cosine of it; 1 for a question and itself.

        Labelled pairs never hold one question twice, so the trees have not seen that case and may score it
        anywhere; the same words in the same order (after standardisation) ask the same thing by definition.
        """
        if self.features != FEATURE_NAMES:
            raise QdupError("this reranker reads a search's first-stage features: score it through qdup.search.candidate_rerank")
        x, same = self.featurizer.features_and_same(q1, q2, cosine)
        scores = self.score_features(x)
        scores[same] = 1.0
        return scores

    def decide(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= self.threshold


def fit_reranker(
    featurizer: PairFeaturizer, x: np.ndarray, y: np.ndarray, oof_scores: np.ndarray, params: BoostingParams, seed: int,
    info: dict[str, Any] | None = None, features: tuple[str, ...] = FEATURE_NAMES, where: str = "calibration",
) -> Reranker:
    """The final model on all of `x` (calibration); its threshold maximises accuracy on the out-of-fold scores."""
    check_labelled(y, where, 2)
    with one_thread():
        model = params.model(seed, features).fit(x, y)
    choice = choose_threshold(y, oof_scores)
    meta = {
        **(info or {}),
        "threshold": {"value": choice["accuracy_threshold"], "objective": "accuracy", "chosen_on": "calibration (out-of-fold)",
                      "calibration_accuracy": choice["accuracy"], "f1_threshold": choice["f1_threshold"]},
    }
    return Reranker(featurizer, model, choice["accuracy_threshold"], meta, features=features)
