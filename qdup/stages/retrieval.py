"""Stage `retrieval`: question retrieval of the trained encoder, a lexical baseline and their hybrid, on held-out pairs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qdup.config import ModelConfig, SearchConfig
from qdup.data.splits import read_split
from qdup.errors import QdupError
from qdup.fileio import atomic_write_json, sha256_file
from qdup.search.lexical import PairScorer, evaluate_retrieval
from qdup.search.retrieval import METRIC_NAMES, dense_rankings, ranking_metrics, retrieval_split

RESULT_FILE = "retrieval.json"
PAIRS_FILE = "retrieval_pairs.parquet"
# The splits whose questions training may see: `val`'s choose the epoch (early stopping) and the learning rate.
TRAINED_ON = ("train", "negatives", "val")
Encode = Callable[[Sequence[str]], np.ndarray]


def retrieval_pairs(splits_dir: Path) -> pd.DataFrame:
    """The labelled pairs the retrieval evaluation may use: test and calibration, minus any pair with a training question.

    Test and calibration rows are never trained on (calibration only chooses the threshold and gates
    promotion; early stopping uses `val`, which calibration does not hold). Pairs holding a question of a
    split training reads (`train`, the `negatives` it may take as explicit negatives, and `val`, whose loss
    chooses the epoch) are dropped so that no query, relevant question or distractor was seen in training:
    the split is question-disjoint from training, as the sentence-transformers Quora example's is.
    """
    seen: set[str] = set()
    for name in TRAINED_ON:
        part = read_split(splits_dir / f"{name}.parquet")
        seen |= set(part["question1"]) | set(part["question2"])
    held = pd.concat([read_split(splits_dir / f"{n}.parquet") for n in ("test", "calibration")], ignore_index=True)
    held = held.drop_duplicates(subset=["id"]) if "id" in held.columns else held
    keep = ~(held["question1"].isin(seen) | held["question2"].isin(seen))
    return held.loc[keep, ["question1", "question2", "is_duplicate"]].reset_index(drop=True)


def evaluate_pairs(
    pairs: pd.DataFrame, encode: Encode, cfg: SearchConfig, seed: int, rerank: PairScorer | None = None,
    rerank_seen: set[str] | None = None,
) -> dict[str, Any]:
    """Lexical, dense and hybrid (and, with `rerank`, reranked) retrieval metrics of `encode` on the retrieval split of `pairs`."""
    split = retrieval_split(pairs, val_fraction=cfg.retrieval_val_fraction, seed=seed)
    return evaluate_retrieval(split, encode(split.corpus), cfg=cfg, rerank=rerank, rerank_seen=rerank_seen)


def dense_part_metrics(pairs: pd.DataFrame, encode: Encode, cfg: SearchConfig, seed: int, part: str = "val") -> dict[str, float]:
    """The dense figures alone on one part, "val" or "test" (re-scoring another model on a challenger's split: the
    gate reads the validation part)."""
    if part not in ("val", "test"):
        raise QdupError(f"retrieval part must be 'val' or 'test', got {part!r}")
    split = retrieval_split(pairs, val_fraction=cfg.retrieval_val_fraction, seed=seed)
    queries = split.val if part == "val" else split.test
    ranked, _ = dense_rankings(encode(split.corpus), queries.queries, cfg.retrieval_k)
    return ranking_metrics(ranked, queries.relevant)


def build_retrieval(
    splits_dir: Path, vocab_file: Path, encoder_file: Path, model_cfg: ModelConfig, search_cfg: SearchConfig, seed: int,
    out_dir: Path, reranker_dir: Path | None = None,
) -> dict[str, Any]:
    """Write retrieval.json (lexical, dense, hybrid on validation and test; the hybrid and best chosen on validation).

    With `reranker_dir` (the rerank stage's reranker, fitted on calibration pairs), `reranked` re-orders the
    hybrid's candidates by it; the queries of calibration pairs are left out of its own comparison
    ("unseen_by_reranker"), where the best method is chosen.
    """
    from qdup.model import network, vocab
    from qdup.model.encode import encode

    pairs = retrieval_pairs(splits_dir)
    if int(pairs["is_duplicate"].sum()) < 2:
        raise QdupError(f"{splits_dir}: {int(pairs['is_duplicate'].sum())} held-out duplicate pairs without training "
                        "questions; the retrieval evaluation needs more test/calibration data")
    encoder = network.load_encoder(encoder_file)
    vectorizer = vocab.load_vectorizer(vocab_file)
    rerank, seen = None, None
    if reranker_dir is not None:
        from qdup.evaluation.reranker import load_reranker

        reranker = load_reranker(reranker_dir)
        rerank = reranker.score
        calibration = read_split(splits_dir / "calibration.parquet")
        seen = set(calibration["question1"].astype(str)) | set(calibration["question2"].astype(str))
    result = evaluate_pairs(pairs, lambda texts: encode(encoder, vectorizer, list(texts), model_cfg.max_length), search_cfg, seed,
                            rerank, seen)
    # The lexical index (BM25, the one the question index is built with) is built on the retrieval corpus itself, as a
    # deployed one is on the questions it searches (IDF needs no labels, so this leaks nothing).
    result["lexical_fitted_on"] = "retrieval corpus"
    result["pairs"] = {"rows": len(pairs), "duplicates": int(pairs["is_duplicate"].sum()), "from": ["test", "calibration"],
                       "excluded": f"pairs with a question of the {' or '.join(TRAINED_ON)} split"}
    atomic_write_json(out_dir / RESULT_FILE, result)
    pairs.to_parquet(out_dir / PAIRS_FILE, index=False)
    # What fixes the split: equal entries mean two models were measured on the same queries and corpus.
    split = {"pairs_sha256": sha256_file(out_dir / PAIRS_FILE), "seed": seed, "val_fraction": search_cfg.retrieval_val_fraction}
    return {"result": RESULT_FILE, "pairs": PAIRS_FILE, "split": split, "search": search_cfg.model_dump(), **summary(result)}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures that go into the lineage manifest: each method's validation (what the gate reads) and test (reported
    only) metrics, the hybrid's choice, the best method."""
    return {
        "best": result["best"],
        "select_metric": result["select_metric"],
        "hybrid": {"method": result["hybrid"]["method"], "weight": result["hybrid"]["weight"]},
        "val": {name: result[name]["val"] for name in methods(result)},
        "test": {name: result[name]["test"] for name in methods(result)},
        "counts": result["counts"],
        **({"unseen_by_reranker": result["unseen_by_reranker"]} if "unseen_by_reranker" in result else {}),
    }


def methods(result: dict[str, Any]) -> tuple[str, ...]:
    """The methods a retrieval result measured: lexical, dense, hybrid, and reranked when a reranker was given."""
    return ("lexical", "dense", "hybrid", "reranked") if "reranked" in result else ("lexical", "dense", "hybrid")


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Test metrics of each method as table rows."""
    return [{"method": name, **{m: round(result["test"][name][m], 4) for m in METRIC_NAMES}}
            for name in ("lexical", "dense", "hybrid", "reranked") if name in result["test"]]
