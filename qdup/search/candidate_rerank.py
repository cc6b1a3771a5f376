"""A search reranker: trees fitted on what a search returns, the hybrid's first candidates of each query.

The pair reranker is fitted on labelled pairs, which all look alike on the surface (Quora chose them as possible
duplicates); a search's candidates include unrelated questions that share a word or two. A search reranker is fitted
on the rows a search produces: for each selection query, the hybrid's top `RERANK_DEPTH` questions, labelled by
duplicate cluster (a candidate is a duplicate iff it is in the query's cluster). Its features are the pair features
(`qdup.evaluation.pair_features`, with the pair reranker's train-fitted statistics) and what the first stage knows of
the candidate among the query's others (`FIRST_STAGE_FEATURES`). Served, it re-orders the hybrid's top
`RERANK_DEPTH`; the hits after them keep the hybrid's order.

Fitted on the selection part, it is cross-fitted over grouped folds (a query's whole duplicate cluster in one fold):
the selection figures that choose the default method are out-of-fold, and the model that serves is fitted on every
selection row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdup.errors import QdupError
from qdup.evaluation.pair_features import FEATURE_NAMES, PairFeaturizer
from qdup.evaluation.reranker import BoostingParams, Reranker, fit_reranker, out_of_fold_scores
from qdup.evaluation.reranker_io import verify_files
from qdup.evaluation.reranker_trees import TreeScorer
from qdup.fileio import atomic_write_bytes, atomic_write_json, read_json, sha256_file
from qdup.search.topk import rank_of, rank_with_scores

# Candidates of each query the search reranker orders: the hybrid's first 20 (the serving target allows 5 ms for
# reranking 20; the first stage's recall@20 is close to its recall@100 on Quora).
RERANK_DEPTH = 20
# What the first stage knows of a candidate among its query's: its place in the hybrid, dense and lexical lists
# (0-based; a list's length where the candidate is absent from it), its BM25 score over the best of the query's
# candidates, and its encoder cosine below the best of them.
FIRST_STAGE_FEATURES = ("hybrid_rank", "dense_rank", "lexical_rank", "lexical_share", "cosine_gap")
SEARCH_FEATURE_NAMES = FEATURE_NAMES + FIRST_STAGE_FEATURES
# The search reranker's own files: in the retrieval stage's folder `search_reranker/`, and beside the pair reranker's
# in a version's `model/`. It scores with the pair reranker's featurizer (the same train-fitted statistics), so only its
# trees and their description are saved.
FOLDER = "search_reranker"
META_FILE = "search_reranker.json"
MODEL_FILE = "search_reranker_trees.onnx"
FILES = (META_FILE, MODEL_FILE)
FORMAT = "qdup-search-reranker/1"


@dataclass(frozen=True)
class FirstStage:
    """n queries' first stage: `top` (n, d) the hybrid's first d positions (-1: none), the dense and lexical ranked
    lists it fused (n, K each), and each top candidate's encoder cosine and BM25 score with its query (n, d)."""

    top: np.ndarray
    dense: np.ndarray
    lexical: np.ndarray
    cosines: np.ndarray
    lexical_scores: np.ndarray


def first_stage_features(stage: FirstStage) -> np.ndarray:
    """(n, d, len(FIRST_STAGE_FEATURES)) float64; rows of absent candidates (top == -1) are NaN."""
    top = stage.top
    n, d = top.shape
    present = top >= 0
    out = np.full((n, d, len(FIRST_STAGE_FEATURES)), np.nan, dtype=np.float64)
    if n == 0 or d == 0:
        return out
    for j, ranked in ((1, stage.dense), (2, stage.lexical)):
        rank = rank_of(top, ranked)
        out[:, :, j] = np.where(rank > 0, rank - 1, ranked.shape[1])
    out[:, :, 0] = np.arange(d)[None, :]
    lex = np.where(present, np.asarray(stage.lexical_scores, dtype=np.float64), 0.0)
    lex = np.where(np.isfinite(lex), lex, 0.0)
    best_lex = lex.max(axis=1, keepdims=True)
    out[:, :, 3] = np.divide(lex, best_lex, out=np.zeros_like(lex), where=best_lex > 0)
    cos = np.where(present, np.asarray(stage.cosines, dtype=np.float64), -np.inf)
    best_cos = cos.max(axis=1, keepdims=True)
    out[:, :, 4] = np.where(present, best_cos - cos, 0.0)
    out[~present] = np.nan
    return out


def candidate_features(
    featurizer: PairFeaturizer, queries: Sequence[str], texts: Sequence[str], stage: FirstStage
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows and columns of the present candidates of `stage.top` and their (m, len(SEARCH_FEATURE_NAMES)) features;
    `queries[i]` is query i's text, `texts[p]` the question at position p."""
    rows, cols = np.nonzero(stage.top >= 0)
    q = [queries[int(r)] for r in rows]
    c = [texts[int(stage.top[r, k])] for r, k in zip(rows, cols, strict=True)]
    pair = featurizer.features(q, c, np.asarray(stage.cosines, dtype=np.float64)[rows, cols])
    return rows, cols, np.hstack([pair, first_stage_features(stage)[rows, cols]])


def reorder_with_scores(ranked: np.ndarray, scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """`ranked` (n, k) with its first `depth` columns re-ordered by descending `scores` (ties keep their order), and the
    scores in that order (`scores` covers the columns given; those after `depth` keep their place)."""
    first, first_scores = rank_with_scores(ranked[:, :depth], scores[:, :depth], depth)
    return (np.concatenate([first, ranked[:, depth:]], axis=1),
            np.concatenate([first_scores, scores[:, depth:]], axis=1))


def reorder(ranked: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`ranked` (n, k) with its first scores.shape[1] columns re-ordered by descending score (ties keep their order)."""
    return reorder_with_scores(ranked, scores, scores.shape[1])[0]


def candidate_labels(stage: FirstStage, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """(n, d) True where candidate stage.top[i, j] is in `relevant[i]` (query i's duplicate cluster)."""
    hit = np.zeros(stage.top.shape, dtype=bool)
    for i, rel in enumerate(relevant):
        hit[i] = np.isin(stage.top[i], rel) & (stage.top[i] >= 0)
    return hit


def search_scores(reranker: Reranker, queries: Sequence[str], texts: Sequence[str], stage: FirstStage) -> np.ndarray:
    """The search reranker's score of each candidate of `stage.top` (n, d); -inf where there is none."""
    if reranker.features != SEARCH_FEATURE_NAMES:
        raise QdupError("a search reranker is needed (trees over the pair and first-stage features); this is a pair reranker")
    rows, cols, x = candidate_features(reranker.featurizer, queries, texts, stage)
    out = np.full(stage.top.shape, -np.inf, dtype=np.float64)
    out[rows, cols] = reranker.score_features(x)
    return out


@dataclass(frozen=True)
class SearchRerankFit:
    """How to fit a search reranker: the pair reranker's featurizer, its tree settings, grouped folds and seed."""

    featurizer: PairFeaturizer
    params: BoostingParams
    folds: int
    seed: int
    depth: int = RERANK_DEPTH


def fit_search_reranker(
    spec: SearchRerankFit, queries: Sequence[str], texts: Sequence[str], stage: FirstStage,
    relevant: Sequence[np.ndarray], groups: np.ndarray,
) -> tuple[Reranker, np.ndarray]:
    """The search reranker fitted on every candidate row of `stage` (labelled: in `relevant[i]`, query i's duplicate
    cluster), and each row's out-of-fold score (n, d; -inf where no candidate) from trees fitted on other folds of
    `groups` (query i's duplicate cluster: a cluster's queries share a fold, so no fold scores a pair it saw reversed)."""
    rows, cols, x = candidate_features(spec.featurizer, queries, texts, stage)
    y = candidate_labels(stage, relevant)[rows, cols].astype(np.int64)
    oof = out_of_fold_scores(x, y, np.asarray(groups)[rows], spec.params, spec.folds, spec.seed,
                             where="search selection candidate", option="search.rerank_fit", features=SEARCH_FEATURE_NAMES)
    info = {"fitted_on": f"the selection queries' hybrid top {spec.depth}, labelled by duplicate cluster",
            "rows": len(y), "duplicates": int(y.sum()), "queries": int(len(stage.top)), "folds": spec.folds,
            "seed": spec.seed, "depth": spec.depth}
    reranker = fit_reranker(spec.featurizer, x, y, oof, spec.params, spec.seed, info, features=SEARCH_FEATURE_NAMES,
                            where="search selection candidate")
    scores = np.full(stage.top.shape, -np.inf, dtype=np.float64)
    scores[rows, cols] = oof
    return reranker, scores


def save_search_reranker(reranker: Reranker, out_dir: Path) -> dict[str, str]:
    """Write the search reranker's trees and description into `out_dir` (created); file name -> sha256."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / MODEL_FILE, reranker.trees.data)
    digests = {MODEL_FILE: sha256_file(out_dir / MODEL_FILE)}
    atomic_write_json(out_dir / META_FILE, {
        "format": FORMAT, "features": list(SEARCH_FEATURE_NAMES), "sha256": digests,
        "score": "probability that the candidate is a duplicate of the query; orders the hybrid's first "
                 f"{reranker.info.get('depth', RERANK_DEPTH)} (the duplicate decision stays the pair reranker's or the encoder's)",
        "featurizer": "the pair reranker's, in the folder above", **reranker.info,
    })
    return {**digests, META_FILE: sha256_file(out_dir / META_FILE)}


def has_search_reranker(model_dir: Path) -> bool:
    return (Path(model_dir) / META_FILE).is_file()


def load_search_reranker(folder: Path, featurizer: PairFeaturizer) -> Reranker:
    """The search reranker in `folder` (hash-checked), scoring with `featurizer` (its version's pair reranker's)."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise QdupError(f"{folder}: no search reranker ({META_FILE} is missing)")
    meta: dict[str, Any] = read_json(meta_path)
    if meta.get("format") != FORMAT or list(meta.get("features") or []) != list(SEARCH_FEATURE_NAMES):
        raise QdupError(f"{meta_path}: format {meta.get('format')!r} is not a search reranker this qdup reads ({FORMAT} "
                        "with its features); rerun the retrieval stage to rebuild it")
    verify_files(folder, meta, (MODEL_FILE,), META_FILE)
    trees = TreeScorer((folder / MODEL_FILE).read_bytes(), len(SEARCH_FEATURE_NAMES), folder / MODEL_FILE)
    info = {k: v for k, v in meta.items() if k != "sha256"}
    # The threshold at which out-of-fold accuracy peaked: recorded, never used to decide (the pair decision is not its).
    return Reranker(featurizer, None, float(meta["threshold"]["value"]), info, trees, features=SEARCH_FEATURE_NAMES)


def load_version_search_reranker(model_dir: Path, reranker: Reranker | None, meta: dict[str, Any]) -> Reranker | None:
    """The search reranker a version's `model/` holds (its export description `meta` names it), hash-checked and scoring
    with the version's pair reranker's featurizer; None for a version without one."""
    if not meta.get("search_reranker"):
        return None
    if reranker is None or not has_search_reranker(model_dir):
        raise QdupError(f"{model_dir}: its description names a search reranker but it holds none with its pair reranker")
    return load_search_reranker(Path(model_dir), reranker.featurizer)
