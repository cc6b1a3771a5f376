"""Paraphrase mining inside an indexed corpus: top-k neighbours or all pairs above a threshold, chunked, each pair once."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qdup.errors import QdupError
from qdup.search.index import QuestionIndex, query_block_rows

CHUNK_SCHEMA = pa.schema([("i", pa.int64()), ("j", pa.int64()), ("similarity", pa.float32())])


def chunk_bounds(count: int, chunk_size: int) -> list[tuple[int, int]]:
    """The (start, stop) question ranges that `mine_chunk` takes, in order: one unit of work each."""
    if chunk_size < 1:
        raise QdupError(f"chunk_size must be >= 1, got {chunk_size}")
    return [(s, min(s + chunk_size, count)) for s in range(0, count, chunk_size)]


def _check_mode(k: int | None, threshold: float | None) -> None:
    if k is None and threshold is None:
        raise QdupError("mining needs k (neighbours per question), a threshold (all pairs above it), or both")
    if k is not None and k < 1:
        raise QdupError(f"k must be >= 1, got {k}")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise QdupError(f"threshold must be a cosine in [-1, 1], got {threshold}")


def mine_chunk(index: QuestionIndex, start: int, stop: int, k: int | None, threshold: float | None) -> pa.Table:
    """Pairs found from the questions at positions [start, stop): columns i < j (positions) and similarity.

    With k: each question's k nearest other questions (the index's backend: IVF or exact), kept when
    similarity >= threshold if one is given. Without k: every pair (i, j > i) with similarity >= threshold,
    scored exactly in blocks of at most cfg.block_elements scores. A pair may come from both its questions'
    chunks in top-k mode; `merge_mined` keeps it once.
    """
    _check_mode(k, threshold)
    if not 0 <= start <= stop <= len(index):
        raise QdupError(f"chunk [{start}, {stop}) is outside the index's {len(index)} questions")
    rows = np.arange(start, stop, dtype=np.int64)
    if k is not None:
        nbr, scores = index.search(index.embeddings[start:stop], k, exclude=rows)
        src = np.broadcast_to(rows[:, None], nbr.shape)
        keep = nbr >= 0
        if threshold is not None:
            keep &= scores >= threshold
        a, b, s = src[keep], nbr[keep], scores[keep]
    else:
        parts_a, parts_b, parts_s = [], [], []
        block = query_block_rows(len(index), index.cfg.block_elements)
        for lo in range(start, stop, block):
            hi = min(lo + block, stop)
            # Only columns j > i are scored: each pair once, and no question paired with itself.
            sims = index.embeddings[lo:hi] @ index.embeddings[lo + 1 :].T
            sims[np.arange(hi - lo)[:, None] >= np.arange(sims.shape[1])[None, :] + 1] = -np.inf
            r, c = np.nonzero(sims >= threshold)
            parts_a.append(r + lo)
            parts_b.append(c + lo + 1)
            parts_s.append(np.clip(sims[r, c], -1.0, 1.0))
        a = np.concatenate(parts_a) if parts_a else np.empty(0, np.int64)
        b = np.concatenate(parts_b) if parts_b else np.empty(0, np.int64)
        s = np.concatenate(parts_s) if parts_s else np.empty(0, np.float32)
    i, j = np.minimum(a, b), np.maximum(a, b)
    return pa.table(
        {"i": pa.array(i, pa.int64()), "j": pa.array(j, pa.int64()), "similarity": pa.array(s.astype(np.float32), pa.float32())},
        schema=CHUNK_SCHEMA,
    )


def merge_mined(tables: Iterable[pa.Table], index: QuestionIndex) -> pa.Table:
    """One table of distinct pairs from `mine_chunk` results: id1, id2, question1, question2, similarity.

    Rows are ordered by similarity (highest first), then by position of the first and second question.
    """
    tables = [t.select(["i", "j", "similarity"]).cast(CHUNK_SCHEMA) for t in tables]
    merged = pa.concat_tables(tables) if tables else CHUNK_SCHEMA.empty_table()
    i = merged.column("i").to_numpy()
    j = merged.column("j").to_numpy()
    s = merged.column("similarity").to_numpy()
    keys = i * np.int64(max(1, len(index))) + j
    _, first = np.unique(keys, return_index=True)
    i, j, s = i[first], j[first], s[first]
    order = np.lexsort((j, i, -s))
    i, j, s = i[order], j[order], s[order]
    texts = pa.array(index.texts, pa.string())
    id_type = pa.int64() if index.ids.dtype.kind in "iu" else pa.string()
    ids = pa.array(index.ids.tolist(), id_type)
    return pa.table(
        {
            "id1": ids.take(pa.array(i)),
            "id2": ids.take(pa.array(j)),
            "question1": texts.take(pa.array(i)),
            "question2": texts.take(pa.array(j)),
            "similarity": pa.array(s, pa.float32()),
        }
    )


def write_mined(table: pa.Table, path: Path) -> None:
    """Write mined pairs to Parquet at `path` so that readers see no file or the whole file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def mine(
    index: QuestionIndex,
    *,
    k: int | None = 10,
    threshold: float | None = None,
    chunk_size: int | None = None,
    out: Path | None = None,
) -> pa.Table:
    """Mine the whole index locally, chunk after chunk (the same units a distributed flow maps to workers)."""
    _check_mode(k, threshold)
    size = chunk_size or index.cfg.mine_chunk_size
    tables = [mine_chunk(index, lo, hi, k, threshold) for lo, hi in chunk_bounds(len(index), size)]
    result = merge_mined(tables, index)
    if out is not None:
        write_mined(result, out)
    return result
