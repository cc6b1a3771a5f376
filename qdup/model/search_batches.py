"""Search-shaped hard negatives in training batches: each duplicate pair brings some of its questions' BM25 neighbours
(the silver split's bm25_negative rows) into its batch, where they are candidates of every anchor.

A neighbour enters the batch as a candidate-only row: question1 = question2 = the neighbour, label -1 (see
`qdup.model.losses`): it is a column of both directions of the symmetric softmax and is never an anchor, and the
losses' false-negative mask still drops it for an anchor of its own duplicate cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# The label of a candidate-only row.
CANDIDATE_ONLY = -1
# Mixed into (seed, epoch) so that drawing neighbours leaves the duplicate and labelled-negative batches as they were.
_SALT = 0x5EA6C4


@dataclass(frozen=True)
class SearchNegatives:
    """pool[i]: row numbers (from `offset` on, -1 padded) of duplicate pair i's neighbours; `per_pair` join its batch."""

    pool: np.ndarray
    per_pair: int
    offset: int

    def extend(self, plan: list[np.ndarray], n_dup: int, seed: int, epoch: int) -> list[np.ndarray]:
        """Each batch of `plan` plus up to `per_pair` neighbours of each of its duplicate pairs (drawn afresh each epoch,
        from (seed, epoch) alone), each neighbour once per batch."""
        rng = np.random.default_rng([seed, epoch, _SALT])
        keys = rng.random(self.pool.shape)
        keys[self.pool < 0] = np.inf
        take = np.argsort(keys, axis=1, kind="stable")[:, : self.per_pair]
        drawn = np.take_along_axis(self.pool, take, axis=1)
        out = []
        for batch in plan:
            rows = drawn[batch[batch < n_dup]].ravel()
            out.append(np.concatenate([batch, np.unique(rows[rows >= 0]) + self.offset]))
        return out


def neighbour_frame(train: pd.DataFrame, silver: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The candidate-only rows (one per distinct neighbour text, first-seen order) and each train pair's pool: the
    neighbours of its question1 then of its question2 (by rank), each once, as positions of those rows (-1 padded)."""
    negatives = silver[silver["kind"] == "bm25_negative"].sort_values(["query_qid", "rank"], kind="stable")
    texts = pd.unique(negatives["candidate"])
    position = pd.Series(np.arange(len(texts)), index=texts)
    by_query = negatives.assign(pos=position.reindex(negatives["candidate"]).to_numpy()).groupby("query", sort=False)["pos"]
    lists = {q: p.to_numpy() for q, p in by_query}
    none = np.empty(0, np.int64)
    pools = [pd.unique(np.concatenate([lists.get(a, none), lists.get(b, none)]))
             for a, b in zip(train["question1"], train["question2"], strict=True)]
    width = max((len(p) for p in pools), default=0)
    pool = np.full((len(pools), max(width, 1)), -1, dtype=np.int64)
    for i, p in enumerate(pools):
        pool[i, : len(p)] = p
    rows = pd.DataFrame({"question1": texts, "question2": texts, "is_duplicate": np.int8(CANDIDATE_ONLY)})
    return rows, pool


def owned_neighbour_frame(train: pd.DataFrame, silver: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """For distillation: one candidate-only row per (train pair i, BM25 neighbour n of its question1), with `owner` i and
    `teacher` the teacher's score of (question1_i, n), and each pair's pool of its own rows (by rank, -1 padded).

    A row belongs to one pair, so the loss knows whose teacher score it carries; a neighbour shared by two pairs is two
    rows. Only question1's neighbours: the term's anchor is the pair's first question."""
    negatives = silver[silver["kind"] == "bm25_negative"].sort_values(["query_qid", "rank"], kind="stable")
    if negatives["teacher"].isna().any():
        raise ValueError("distillation needs the teacher's score of every search negative; the silver split has none")
    by_query = {q: g for q, g in negatives.groupby("query", sort=False)}
    c, owner, teacher, pools = [], [], [], []
    for i, a in enumerate(train["question1"]):
        g = by_query.get(a)
        n = 0 if g is None else len(g)
        pools.append(np.arange(len(c), len(c) + n))
        if n:
            c += g["candidate"].tolist()
            teacher += g["teacher"].astype(np.float32).tolist()
            owner += [i] * n
    width = max((len(p) for p in pools), default=0)
    pool = np.full((len(pools), max(width, 1)), -1, dtype=np.int64)
    for i, p in enumerate(pools):
        pool[i, : len(p)] = p
    rows = pd.DataFrame({"question1": c, "question2": c, "is_duplicate": np.full(len(c), CANDIDATE_ONLY, np.int8),
                         "owner": np.asarray(owner, np.int64), "teacher": np.asarray(teacher, np.float32)})
    return rows, pool


def silver_duplicates(silver: pd.DataFrame) -> pd.DataFrame:
    """The silver split's teacher-labelled duplicates (kind silver_positive) as duplicate pairs to train on."""
    positive = silver[silver["kind"] == "silver_positive"]
    return pd.DataFrame({"question1": positive["query"].to_numpy(), "question2": positive["candidate"].to_numpy(),
                         "is_duplicate": np.ones(len(positive), dtype=np.int8)})
