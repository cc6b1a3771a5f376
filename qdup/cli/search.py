"""Commands `qdup index build`, `qdup search` and `qdup mine`: a version's question index and what it finds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from qdup.errors import QdupError


def _version(args: argparse.Namespace):
    from qdup.registry.store import ArtifactStore

    store = ArtifactStore(args.store)
    version = store.resolve(args.model)
    return store, version


def _index_dir(args: argparse.Namespace, store, version: str) -> Path:
    if args.index:
        return Path(args.index)
    # Indexes sit in the store beside the versions, one folder per version.
    return Path(store.root) / "indexes" / version


def _read_questions(path: Path):
    import pandas as pd

    if not path.is_file():
        raise QdupError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise QdupError(f"{path}: not a readable TSV ({e})") from None
    if "question" not in df.columns:
        raise QdupError(f"{path}: no 'question' column (columns: {list(df.columns)})")
    ids: Any = df["id"].tolist() if "id" in df.columns else list(range(len(df)))
    if "id" in df.columns:
        try:
            ids = [int(i) for i in ids]
        except ValueError:
            pass  # string ids are kept as strings
    return ids, df["question"].tolist()


def cmd_index_build(args: argparse.Namespace) -> int:
    from qdup.config import SearchConfig
    from qdup.fileio import sha256_file
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import build_index, recall_against_exact, sample_queries

    store, version = _version(args)
    out = _index_dir(args, store, version)
    if out.exists():
        raise QdupError(f"{out}: an index already exists; remove it first or pass --index elsewhere")
    if not args.questions:
        raise QdupError("--questions: a TSV with a 'question' column (and optional 'id') is needed")
    questions = Path(args.questions)
    ids, texts = _read_questions(questions)
    encoder = load_query_encoder(store.local_path(version) / "model")
    cfg = SearchConfig()
    corpus = {"questions_file": str(questions.resolve()), "sha256": sha256_file(questions), "count": len(texts)}
    # build_index refuses empty and duplicated questions before any vector is computed from them.
    index = build_index(ids, texts, _encode_checked(encoder, texts), model_version=version, corpus=corpus, ann=args.ann,
                        seed=args.seed, cfg=cfg)
    if index.backend != "exact":
        recall_against_exact(index, sample_queries(index, 1000, args.seed), 10)
    index.save(out)
    recall = f", recall@10 vs exact {index.recall['recall']:.4f}" if index.recall else ""
    print(f"indexed {len(index):,} questions with {version} ({index.backend}{recall}) in {out}")
    return 0


def _encode_checked(encoder, texts: list[str]):
    import numpy as np

    from qdup.search.index import check_corpus

    check_corpus(list(range(len(texts))), texts, np.zeros((len(texts), 1), np.float32))
    return encoder.encode(texts)


def _load(args: argparse.Namespace):
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import load_index

    store, version = _version(args)
    index = load_index(_index_dir(args, store, version), expected_model_version=version)
    return index, load_query_encoder(store.local_path(version) / "model")


def _rows(index, encoder, queries: list[str], k: int) -> list[dict[str, Any]]:
    vectors = encoder.encode_one(queries[0]) if len(queries) == 1 else encoder.encode(queries)
    positions, scores = index.search(vectors, k)
    rows = []
    for qi, query in enumerate(queries):
        for rank, (p, s) in enumerate(zip(positions[qi], scores[qi], strict=True), start=1):
            if p < 0:
                continue
            rows.append({
                "query": query, "rank": rank, "id": index.ids[p].item() if hasattr(index.ids[p], "item") else index.ids[p],
                "question": index.texts[p], "similarity": float(s), "duplicate": bool(s >= encoder.threshold),
            })
    return rows


def cmd_search(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise QdupError(f"-k: must be >= 1, got {args.k}")
    if bool(args.query) == bool(args.queries):
        raise QdupError("give one query text or --queries FILE.tsv, not both or neither")
    if args.queries and not args.out:
        raise QdupError("--queries needs --out FILE.parquet")
    if args.query is not None and not args.query.strip():
        raise QdupError("query: empty question")
    queries = [args.query] if args.query else _read_questions(Path(args.queries))[1]
    index, encoder = _load(args)
    rows = _rows(index, encoder, queries, args.k)
    if args.out:
        import pyarrow as pa

        from qdup.search.mine import write_mined

        write_mined(pa.Table.from_pylist(rows), Path(args.out))
        print(f"wrote {len(rows):,} results for {len(queries):,} queries to {args.out}")
    elif args.json:
        print(json.dumps({"threshold": encoder.threshold, "results": rows}, indent=2, default=str))
    else:
        print(f"threshold {encoder.threshold:.4f}")
        for r in rows:
            mark = "DUPLICATE" if r["duplicate"] else "-"
            print(f"{r['rank']:>3}  {r['similarity']:.4f}  {mark:<9}  id={r['id']}  {r['question']}")
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from qdup.search.mine import mine

    if args.k is None and args.threshold is None:
        raise QdupError("give -k (neighbours per question), --threshold, or both")
    index, _ = _load(args)
    table = mine(index, k=args.k, threshold=args.threshold, chunk_size=args.chunk_size, out=Path(args.out))
    print(f"wrote {table.num_rows:,} pairs from {len(index):,} questions to {args.out}")
    return 0


def register(subparsers) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="version id or alias (production, latest)")
        p.add_argument("--store", default=None, help="artifact store URL (default: $QDUP_HOME/store)")
        p.add_argument("--index", default=None, help="index folder (default: <store>/indexes/<version>)")

    index = subparsers.add_parser("index", help="question indexes of model versions")
    isub = index.add_subparsers(dest="index_command", required=True)
    build = isub.add_parser("build", help="encode distinct questions with a version's encoder and index them")
    common(build)
    build.add_argument("--questions", help="TSV with a 'question' column and an optional 'id'")
    build.add_argument("--ann", choices=("auto", "exact", "ivf"), default="auto")
    build.add_argument("--seed", type=int, default=42)
    build.set_defaults(func=cmd_index_build)

    search = subparsers.add_parser("search", help="nearest indexed questions of a query")
    common(search)
    search.add_argument("query", nargs="?", help="one question")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--json", action="store_true")
    search.add_argument("--queries", help="TSV with a 'question' column (batch mode)")
    search.add_argument("--out", help="Parquet output of batch mode")
    search.set_defaults(func=cmd_search)

    mine = subparsers.add_parser("mine", help="duplicate pairs inside an indexed corpus (Parquet)")
    common(mine)
    mine.add_argument("-k", type=int, default=None, help="nearest neighbours per question")
    mine.add_argument("--threshold", type=float, default=None, help="keep pairs with similarity >= this")
    mine.add_argument("--chunk-size", type=int, default=None)
    mine.add_argument("--out", required=True)
    mine.set_defaults(func=cmd_mine)
