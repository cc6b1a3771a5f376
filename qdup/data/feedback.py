"""Feedback pairs as training data: the snapshot's Parquet form, how conflicting labels resolve, and how the pairs join
the training side of the splits (never test).

Resolution rule (one label per pair, pairs compared by `pair_sha256`, the order-independent hash of the normalised
texts): the label most rows of the pair give wins; on a tie the latest row's label wins. A pair with both labels is a
conflict: counted and reported, then resolved by that rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qdup.fileio import sha256_file

LABELS: tuple[str, ...] = ("duplicate", "not_duplicate")
RESOLUTION_RULE = "per pair (order-independent hash of the normalised texts): the majority label; on a tie, the latest label"
SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("at", pa.string(), nullable=False),
    pa.field("version", pa.string(), nullable=False),
    pa.field("question1", pa.string(), nullable=False),
    pa.field("question2", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("note", pa.string(), nullable=True),
    pa.field("pair_sha256", pa.string(), nullable=False),
])
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)


def normalise(text: str) -> str:
    """The form a pair is compared in: Unicode NFKC, case-folded, runs of whitespace as one space, trimmed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def pair_sha256(question1: str, question2: str) -> str:
    """The same hash for (a, b) and (b, a), and for texts that differ only in case or spacing."""
    return hashlib.sha256(json.dumps(sorted((normalise(question1), normalise(question2)))).encode()).hexdigest()


def write_feedback(frame: pd.DataFrame, path: Path) -> dict[str, Any]:
    """Write feedback rows as Parquet (explicit schema, no pandas metadata: the same rows give the same bytes), by a
    temporary file renamed into place; its rows, labels and sha256."""
    # Missing values as None whatever pandas read them as (NaN in a str column): the same rows, the same bytes.
    columns = {name: frame[name].astype(object).where(frame[name].notna(), None).tolist() for name in COLUMNS}
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    labels = frame["label"].value_counts().to_dict()
    return {"rows": len(frame), "labels": {k: int(labels.get(k, 0)) for k in LABELS}, "sha256": sha256_file(path)}


def read_feedback(path: Path) -> pd.DataFrame:
    return pq.read_table(path, schema=SCHEMA).to_pandas()


def resolve(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per pair by RESOLUTION_RULE (the latest row of the pair with the winning label), oldest pair first; and
    the number of pairs that had both labels."""
    if not len(frame):
        return frame.copy(), 0
    f = frame.sort_values("id", kind="stable").reset_index(drop=True)
    votes = f.groupby(["pair_sha256", "label"], sort=False).agg(n=("id", "size"), last=("id", "max")).reset_index()
    conflicts = int((votes.groupby("pair_sha256")["label"].nunique() > 1).sum())
    # Highest count first, then the latest row: the first row of each pair is its winner.
    winners = votes.sort_values(["n", "last"], ascending=False).drop_duplicates("pair_sha256")
    resolved = f[f["id"].isin(winners["last"])].sort_values("id").reset_index(drop=True)
    return resolved, conflicts


def join_training(parts: dict[str, pd.DataFrame], all_rows: pd.DataFrame, feedback: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """`parts` (the splits) with the resolved feedback pairs added to `train` (duplicates) and `negatives` (not), and facts.

    A pair with a question (normalised) that test holds is held out, so that test never meets a question through
    feedback. Questions keep the id (qid) they have in `all_rows` (the validated data), so a duplicate cluster stays
    one cluster; new questions get new ids after the largest, in order of first appearance; pairs get new ids after
    the largest pair id.
    """
    resolved, conflicts = resolve(feedback)
    test = parts["test"]
    test_questions = {normalise(q) for q in pd.concat([test["question1"], test["question2"]])}
    n1, n2 = resolved["question1"].map(normalise), resolved["question2"].map(normalise)
    held = (n1.isin(test_questions) | n2.isin(test_questions)).to_numpy(dtype=bool)
    keep = resolved[~held].reset_index(drop=True)
    known: dict[str, int] = {}
    for qid, text in zip(pd.concat([all_rows["qid1"], all_rows["qid2"]]), pd.concat([all_rows["question1"], all_rows["question2"]]), strict=True):
        if isinstance(text, str):
            known.setdefault(normalise(text), int(qid))
    next_qid = int(max(all_rows["qid1"].max(), all_rows["qid2"].max())) + 1

    def qid(text: str) -> int:
        nonlocal next_qid
        key = normalise(text)
        if key not in known:
            known[key], next_qid = next_qid, next_qid + 1
        return known[key]

    q1 = [qid(t) for t in keep["question1"]]
    q2 = [qid(t) for t in keep["question2"]]
    added = pd.DataFrame({
        "id": np.arange(len(keep), dtype=np.int64) + int(all_rows["id"].max()) + 1,
        "qid1": np.asarray(q1, dtype=np.int64), "qid2": np.asarray(q2, dtype=np.int64),
        "question1": keep["question1"].astype(object), "question2": keep["question2"].astype(object),
        "is_duplicate": (keep["label"] == "duplicate").to_numpy().astype(np.int8),
    })
    out = dict(parts)
    dup = added["is_duplicate"] == 1
    out["train"] = pd.concat([parts["train"], added[dup]], ignore_index=True)
    out["negatives"] = pd.concat([parts["negatives"], added[~dup]], ignore_index=True)
    facts = {
        "rows": len(feedback),
        "pairs": len(resolved),
        "conflicting_pairs": conflicts,
        "resolution": RESOLUTION_RULE,
        "held_out_test_question": int(held.sum()),
        "added": {"train": int(dup.sum()), "negatives": int((~dup).sum())},
    }
    return out, facts
