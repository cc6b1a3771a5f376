"""Stage `index`: the question index of the dataset's distinct questions, encoded by the exported encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from qdup.config import SearchConfig
from qdup.search.encoder import load_query_encoder
from qdup.search.index import build_index, recall_against_exact, sample_queries

INDEX_DIR = "index"
# The version id is fixed only when publishing; publish_version relabels the index with it.
UNPUBLISHED = "unpublished"


def distinct_questions(table: pd.DataFrame) -> tuple[list[int], list[str]]:
    """Each distinct non-blank question of a pairs frame (qid1, qid2, question1, question2) once, with the qid of its
    first occurrence, in file order."""
    table = table[["qid1", "qid2", "question1", "question2"]]
    seen: dict[str, int] = {}
    for qid1, qid2, q1, q2 in table.itertuples(index=False):
        for qid, q in ((qid1, q1), (qid2, q2)):
            if isinstance(q, str) and q.strip() and q not in seen:
                seen[q] = int(qid)
    # Different texts sharing a qid keep the first; ids must be unique in an index.
    ids: dict[int, str] = {}
    for q, qid in seen.items():
        ids.setdefault(qid, q)
    texts = list(ids.values())
    qids = list(ids.keys())
    return qids, texts


def search_defaults(retrieval: dict[str, Any], search_cfg: SearchConfig) -> dict[str, Any]:
    """What search ranks with by default: the method best on the retrieval selection part, and the hybrid's form."""
    return {"method": retrieval["best"], "hybrid": dict(retrieval["hybrid"]), "rrf_k": search_cfg.rrf_k,
            "chosen_on": "retrieval selection part (the selection split)", "select_metric": retrieval["select_metric"]}


def build_question_index(
    validated_parquet: Path, export_dir: Path, retrieval: dict[str, Any], search_cfg: SearchConfig, seed: int,
    dataset_sha256: str, out_dir: Path,
) -> dict[str, Any]:
    """Write `out_dir/index/` (qdup.search.index format) with the hybrid choice of `retrieval` as its search defaults."""
    ids, texts = distinct_questions(pq.read_table(validated_parquet).to_pandas())
    encoder = load_query_encoder(export_dir)
    corpus = {"dataset_sha256": dataset_sha256, "questions": "distinct questions of the validated data set", "count": len(texts)}
    index = build_index(ids, texts, encoder.encode(texts), model_version=UNPUBLISHED, corpus=corpus, seed=seed, cfg=search_cfg)
    if index.backend != "exact":
        recall_against_exact(index, sample_queries(index, 1000, seed), 10)
    index.search_defaults = search_defaults(retrieval, search_cfg)
    manifest = index.save(out_dir / INDEX_DIR)
    return {"index_dir": INDEX_DIR, "count": len(index), "backend": index.backend, "search_defaults": index.search_defaults,
            "files": manifest["files"]}
