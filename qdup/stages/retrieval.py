"""Stage `retrieval`: question retrieval of the trained encoder, a lexical baseline and their hybrid: chosen on the
selection split's pairs, reported on the test split's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qdup.config import CHOICE_SPLIT, ModelConfig, RerankConfig, SearchConfig
from qdup.data.splits import read_split
from qdup.errors import QdupError
from qdup.fileio import atomic_write_json, sha256_file
from qdup.search.candidate_rerank import FOLDER as SEARCH_RERANKER_DIR
from qdup.search.candidate_rerank import SearchRerankFit, save_search_reranker
from qdup.search.lexical import PairScorer, evaluate_retrieval
from qdup.search.retrieval import METRIC_NAMES, query_part
from qdup.stages.rerank import boosting_params

RESULT_FILE = "retrieval.json"
PAIRS_FILE = "retrieval_pairs.parquet"
SELECTION_PAIRS_FILE = "retrieval_selection_pairs.parquet"
# The splits whose questions training may see: `val`'s choose the epoch (early stopping) and the learning rate.
TRAINED_ON = ("train", "negatives", "val")
Encode = Callable[[Sequence[str]], np.ndarray]


def retrieval_pairs(splits_dir: Path) -> pd.DataFrame:
    """The retrieval test part's pairs: the `test` split minus any pair with a question training may see.

    Pairs holding a question of a split training reads (`train`, the `negatives` it may take as explicit negatives,
    and `val`, whose loss chooses the epoch) are dropped so that no query, relevant question or distractor was seen in
    training, as in the sentence-transformers Quora example. Test is reported only: nothing is chosen on this part.
    """
    seen: set[str] = set()
    for name in TRAINED_ON:
        part = read_split(splits_dir / f"{name}.parquet")
        seen |= set(part["question1"]) | set(part["question2"])
    held = read_split(splits_dir / "test.parquet")
    keep = ~(held["question1"].isin(seen) | held["question2"].isin(seen))
    return held.loc[keep, ["question1", "question2", "is_duplicate"]].reset_index(drop=True)


def selection_pairs(splits_dir: Path) -> pd.DataFrame:
    """The retrieval selection part's pairs: the `selection` split (question-disjoint from every fitted split by
    construction), where the hybrid's form and weight and the default method are chosen."""
    part = read_split(splits_dir / f"{CHOICE_SPLIT}.parquet")
    return part[["question1", "question2", "is_duplicate"]].reset_index(drop=True)


def evaluate_pairs(
    selection: pd.DataFrame, test: pd.DataFrame, encode: Encode, cfg: SearchConfig, rerank: PairScorer | None = None,
    rerank_seen: set[str] | None = None, search_fit: SearchRerankFit | None = None,
) -> dict[str, Any]:
    """Lexical, dense and hybrid (and, with `rerank`, reranked) retrieval of `encode`: chosen on the selection part
    ("val" in the result), reported on the test part ("test"), each part its own corpus of its own pairs' questions."""
    sel, held = query_part(selection), query_part(test)
    return evaluate_retrieval(sel, encode(sel.corpus), cfg=cfg, rerank=rerank, rerank_seen=rerank_seen,
                              test_split=held, test_embeddings=encode(held.corpus), search_fit=search_fit)


def build_retrieval(
    splits_dir: Path, vocab_file: Path, encoder_file: Path, model_cfg: ModelConfig, search_cfg: SearchConfig, seed: int,
    out_dir: Path, reranker_dir: Path | None = None, rerank_cfg: RerankConfig | None = None,
) -> dict[str, Any]:
    """Write retrieval.json (lexical, dense, hybrid on the selection and test parts; the hybrid and the default method
    chosen on the selection part alone).

    With `reranker_dir` (the rerank stage's reranker, fitted on calibration pairs), `reranked` is measured too:
    - search.rerank_fit="candidates": a search reranker (`qdup.search.candidate_rerank`, the pair reranker's features
      and tree settings `rerank_cfg`) is fitted on the selection queries' hybrid top candidates and saved to
      out_dir/search_reranker/; its selection figures are out-of-fold.
    - search.rerank_fit="pair": the pair reranker re-orders the hybrid's candidates. The selection split shares no
      question with calibration; on the test part, queries that are calibration questions are left out of the
      reranker's own figures ("unseen_by_reranker").
    """
    from qdup.model import network, vocab
    from qdup.model.encode import encode

    selection, pairs = selection_pairs(splits_dir), retrieval_pairs(splits_dir)
    for name, part in (("selection", selection), ("test", pairs)):
        if int(part["is_duplicate"].sum()) < 2:
            raise QdupError(f"{splits_dir}: {int(part['is_duplicate'].sum())} {name} duplicate pairs without training "
                            f"questions; the retrieval evaluation needs more {name} data")
    encoder = network.load_encoder(encoder_file)
    vectorizer = vocab.load_vectorizer(vocab_file)
    rerank, seen, fit = None, None, None
    if reranker_dir is not None:
        from qdup.evaluation.reranker_io import load_reranker

        reranker = load_reranker(reranker_dir)
        if search_cfg.rerank_fit == "candidates":
            if rerank_cfg is None:
                raise QdupError("search.rerank_fit='candidates' fits trees with the rerank section's settings; none given")
            fit = SearchRerankFit(reranker.featurizer, boosting_params(rerank_cfg), rerank_cfg.folds, seed)
        else:
            rerank = reranker.score
            calibration = read_split(splits_dir / "calibration.parquet")
            seen = set(calibration["question1"].astype(str)) | set(calibration["question2"].astype(str))
    result = evaluate_pairs(selection, pairs, lambda texts: encode(encoder, vectorizer, list(texts), model_cfg.max_length),
                            search_cfg, rerank, seen, fit)
    search_reranker = result.pop("search_reranker_model", None)
    saved: dict[str, Any] = {}
    if search_reranker is not None:
        saved = {"search_reranker_dir": SEARCH_RERANKER_DIR,
                 "search_reranker_sha256": save_search_reranker(search_reranker, out_dir / SEARCH_RERANKER_DIR)}
    # The lexical index (BM25, the one the question index is built with) is built on each part's corpus itself, as a
    # deployed one is on the questions it searches (IDF needs no labels, so this leaks nothing).
    result["lexical_fitted_on"] = "each part's corpus"
    result["pairs"] = {"rows": len(pairs), "duplicates": int(pairs["is_duplicate"].sum()), "from": ["test"],
                       "excluded": f"pairs with a question of the {' or '.join(TRAINED_ON)} split"}
    result["selection_pairs"] = {"rows": len(selection), "duplicates": int(selection["is_duplicate"].sum()),
                                 "from": [CHOICE_SPLIT]}
    atomic_write_json(out_dir / RESULT_FILE, result)
    pairs.to_parquet(out_dir / PAIRS_FILE, index=False)
    selection.to_parquet(out_dir / SELECTION_PAIRS_FILE, index=False)
    # What fixes the parts: equal entries mean two models were measured on the same queries and corpora.
    split = {"pairs_sha256": sha256_file(out_dir / PAIRS_FILE), "selection_sha256": sha256_file(out_dir / SELECTION_PAIRS_FILE)}
    return {"result": RESULT_FILE, "pairs": PAIRS_FILE, "selection_pairs": SELECTION_PAIRS_FILE, "split": split,
            "search": search_cfg.model_dump(), **saved, **summary(result)}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures that go into the lineage manifest: each method's selection-part ("val": what chose the hybrid and the
    default method) and test (reported only) metrics, the hybrid's choice, the best method (the default search serves)."""
    return {
        "best": result["best"],
        "select_metric": result["select_metric"],
        "hybrid": {"method": result["hybrid"]["method"], "weight": result["hybrid"]["weight"]},
        "val": {name: result[name]["val"] for name in methods(result)},
        "test": {name: result[name]["test"] for name in methods(result)},
        "counts": result["counts"],
        **({"unseen_by_reranker": result["unseen_by_reranker"]} if "unseen_by_reranker" in result else {}),
        **({"reranked_by": result["reranked_by"]} if "reranked_by" in result else {}),
    }


def methods(result: dict[str, Any]) -> tuple[str, ...]:
    """The methods a retrieval result measured: lexical, dense, hybrid, and reranked when a reranker was given."""
    return ("lexical", "dense", "hybrid", "reranked") if "reranked" in result else ("lexical", "dense", "hybrid")


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Test metrics of each method as table rows."""
    return [{"method": name, **{m: round(result["test"][name][m], 4) for m in METRIC_NAMES}}
            for name in ("lexical", "dense", "hybrid", "reranked") if name in result["test"]]
