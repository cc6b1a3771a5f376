"""Search-shaped hard negatives: each training question's BM25 neighbours among the training region's questions that
lie outside its duplicate cluster, the candidates a search would rank above its duplicates."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from qdup.data.silver import SCHEMA, empty_silver
from qdup.search.bm25 import build_lexical
from qdup.search.retrieval import duplicate_clusters


def _questions(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Distinct questions (by text, first-seen order) of `frames` with the id they first appear under."""
    parts = [pd.DataFrame({"qid": f[f"qid{i}"].to_numpy(), "text": f[f"question{i}"].astype(str).to_numpy()})
             for f in frames for i in (1, 2)]
    if not parts:
        return pd.DataFrame({"qid": pd.Series(dtype="int64"), "text": pd.Series(dtype=str)})
    return pd.concat(parts, ignore_index=True).drop_duplicates("text", keep="first").reset_index(drop=True)


def search_negatives(train: pd.DataFrame, negatives: pd.DataFrame, held_out: Iterable[pd.DataFrame], depth: int) -> pd.DataFrame:
    """Up to `depth` BM25 neighbours of every question of a `train` duplicate pair, outside its duplicate cluster.

    - The corpus is every distinct question of the training region (`train` and `negatives`: questions of labelled
      non-duplicates too) except those of `held_out` (val, test, calibration, selection, gate), by text or id, so that
      no held-out question is ever a query or a candidate.
    - Duplicate clusters are the components of the training region's duplicate pairs (`duplicate_clusters`, by text,
      transitive closure); a neighbour of the query's own cluster is skipped, never kept as a negative.
    - Neighbours come from the project's BM25 index (`build_lexical`) in its order (score, then corpus position);
      rows are ranked 1..depth per query, queries in first-seen order: the result depends only on the inputs.
    """
    held = list(held_out)
    held_texts = {str(q) for f in held for c in ("question1", "question2") for q in f[c]}
    held_ids = {int(q) for f in held for c in ("qid1", "qid2") for q in f[c]}
    region = pd.concat([train, negatives], ignore_index=True)
    corpus = _questions([train, negatives])
    corpus = corpus[~corpus["text"].isin(held_texts) & ~corpus["qid"].isin(held_ids)].reset_index(drop=True)
    if len(corpus) < 2:
        return empty_silver()
    texts, labels = duplicate_clusters(region)
    cluster_of = dict(zip(texts, labels.tolist(), strict=True))
    cluster = corpus["text"].map(cluster_of).to_numpy(dtype=np.int64)
    position = pd.Series(np.arange(len(corpus)), index=corpus["text"])
    query_texts = _questions([train])["text"]
    queries = position.reindex(query_texts).dropna().to_numpy(dtype=np.int64)
    if not len(queries):
        return empty_silver()
    # Enough neighbours that `depth` remain once the query's own cluster is left out.
    k = min(len(corpus) - 1, depth + int(np.bincount(cluster).max()) - 1)
    idx, scores = build_lexical(corpus["text"].tolist()).search_positions(queries, k)
    keep = (idx >= 0) & (cluster[np.maximum(idx, 0)] != cluster[queries][:, None])
    rank = np.cumsum(keep, axis=1)
    keep &= rank <= depth
    rows, cols = np.nonzero(keep)
    q, c = queries[rows], idx[rows, cols]
    out = pd.DataFrame({
        "query_qid": corpus["qid"].to_numpy()[q], "query": corpus["text"].to_numpy()[q],
        "candidate_qid": corpus["qid"].to_numpy()[c], "candidate": corpus["text"].to_numpy()[c],
        "kind": "bm25_negative", "rank": rank[rows, cols].astype(np.int32), "bm25": scores[rows, cols].astype(np.float32),
        "teacher": np.full(len(rows), np.nan, dtype=np.float32),
    })
    return out[SCHEMA.names]


def teacher_kinds(silver: pd.DataFrame, scores: np.ndarray, positive: float | None, negative: float | None) -> pd.DataFrame:
    """The silver rows with the teacher's `scores`: silver_positive where the score is at least `positive`, bm25_negative
    where it is at most `negative` (every other row when `negative` is None); rows in between are left out. Ranks are
    renumbered per query and kind."""
    out = silver.assign(teacher=np.asarray(scores, dtype=np.float32))
    pos = out["teacher"] >= positive if positive is not None else pd.Series(False, index=out.index)
    neg = ~pos & (out["teacher"] <= negative if negative is not None else True)
    out = out[pos | neg].assign(kind=np.where(pos[pos | neg], "silver_positive", "bm25_negative"))
    out["rank"] = (out.groupby(["query_qid", "kind"], sort=False).cumcount() + 1).astype(np.int32)
    return out[SCHEMA.names].reset_index(drop=True)
