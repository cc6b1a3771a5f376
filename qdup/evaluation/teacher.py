"""A teacher for silver pairs (Augmented SBERT): the pair reranker's trees over lexical pair features, cross-fitted on
the training region's labelled pairs, scoring candidate pairs that search finds.

It exists before the encoder is trained, so it never sees the encoder cosine: that feature is held at 0 for every pair
(a constant the trees cannot split on). Cross-fitting: the labelled pairs fall into grouped folds (pairs sharing a
question, directly or through others, stay together); a candidate pair is scored by the model fitted without its
query's fold, so no candidate is scored by a model that was fitted on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from qdup.errors import QdupError
from qdup.evaluation.pair_features import fit_featurizer
from qdup.evaluation.reranker import BoostingParams, one_thread, pair_groups  # one_thread: its OpenMP limit for small fits


def cross_fit_scores(
    labelled: pd.DataFrame, queries: pd.Series, candidates: pd.Series, params: BoostingParams, folds: int, seed: int,
    ngram_range: tuple[int, int] = (2, 5), min_df: int = 1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Duplicate probability of each (query, candidate) pair, every query a question of `labelled`, and facts (the
    teacher's out-of-fold ROC-AUC on the labelled pairs among them)."""
    q1, q2 = labelled["question1"].astype(str).tolist(), labelled["question2"].astype(str).tolist()
    y = labelled["is_duplicate"].to_numpy(dtype=np.int64)
    if min(int((y == 1).sum()), int((y == 0).sum())) < folds:
        raise QdupError(f"teacher: the training region has {int((y == 1).sum())} duplicates and {int((y == 0).sum())} labelled "
                        f"non-duplicates; cross-fitting needs at least rerank.folds={folds} of each")
    featurizer = fit_featurizer(labelled, ngram_range=ngram_range, min_df=min_df)
    x = featurizer.features(q1, q2, np.zeros(len(y)))
    qs, cs = queries.astype(str).tolist(), candidates.astype(str).tolist()
    xc = featurizer.features(qs, cs, np.zeros(len(qs)))
    groups = pair_groups(q1, q2)
    # Every question of a labelled pair has its pair's group; a question's pairs all share one group.
    group_of = dict(zip(q1 + q2, np.concatenate([groups, groups]).tolist(), strict=True))
    missing = [q for q in qs if q not in group_of]
    if missing:
        raise QdupError(f"teacher: {len(missing)} candidate quer(ies) in no labelled pair, e.g. {missing[0][:60]!r}")
    fold_of_group: dict[int, int] = {}
    oof = np.full(len(y), np.nan)
    scores = np.full(len(qs), np.nan)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=int(seed))
    models = []
    for k, (fit_idx, held_idx) in enumerate(splitter.split(x, y, groups)):
        with one_thread():
            model = params.model(seed).fit(x[fit_idx], y[fit_idx])
            oof[held_idx] = model.predict_proba(x[held_idx])[:, 1]
        fold_of_group.update(dict.fromkeys(groups[held_idx].tolist(), k))
        models.append(model)
    fold = np.array([fold_of_group[group_of[q]] for q in qs], dtype=np.int64)
    for k, model in enumerate(models):
        rows = np.flatnonzero(fold == k)
        if len(rows):
            with one_thread():
                scores[rows] = model.predict_proba(xc[rows])[:, 1]
    facts = {"labelled_pairs": len(y), "folds": folds, "seed": seed, "encoder_cosine": "held at 0 (no encoder yet)",
             "out_of_fold_roc_auc": round(float(roc_auc_score(y, oof)), 6)}
    return scores, facts
