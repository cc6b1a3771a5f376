"""Commands `qdup index build`, `qdup search` and `qdup mine`: a version's question index and what it finds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from qdup.errors import ConfigError, QdupError

DASK_HELP = ("Dask scheduler whose workers run the chunks, as a Prefect flow; the index (and model) folders must be "
             "at the same path on every worker (shared storage)")


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


def cmd_index_build(args: argparse.Namespace) -> int:
    from qdup.config import SearchConfig
    from qdup.fileio import sha256_file
    from qdup.search.batch import read_questions
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import build_index, recall_against_exact, sample_queries

    store, version = _version(args)
    out = _index_dir(args, store, version)
    if out.exists():
        raise QdupError(f"{out}: an index already exists; remove it first or pass --index elsewhere")
    if not args.questions:
        raise QdupError("--questions: a TSV with a 'question' column (and optional 'id') is needed")
    questions = Path(args.questions)
    ids, texts = read_questions(questions)
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


def _dask_config(cls, values: dict[str, Any]):
    """A flow's config from the command line; a bad value is one line naming its flag."""
    from pydantic import ValidationError

    flags = {"dask": "--dask", "chunk_size": "--chunk-size", "threshold": "--threshold", "k": "-k"}
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        raise ConfigError(f"{flags.get(where, where or 'arguments')}: {err['msg'].removeprefix('Value error, ')}") from None


def cmd_search(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise QdupError(f"-k: must be >= 1, got {args.k}")
    if bool(args.query) == bool(args.queries):
        raise QdupError("give one query text or --queries FILE.tsv, not both or neither")
    if args.queries and not args.out:
        raise QdupError("--queries needs --out FILE.parquet")
    if args.dask and not args.queries:
        raise QdupError("--dask spreads batch search (--queries FILE --out FILE) over a cluster; one query runs here")
    if args.query is not None and not args.query.strip():
        raise QdupError("query: empty question")
    if args.dask:
        from qdup.config import BatchSearchConfig

        store, version = _version(args)
        config = _dask_config(BatchSearchConfig, {
            "index_dir": _index_dir(args, store, version).resolve(), "model_dir": (store.local_path(version) / "model").resolve(),
            "queries": Path(args.queries).resolve(), "out": Path(args.out).resolve(), "k": args.k,
            "chunk_size": args.chunk_size, "model_version": version, "dask": args.dask,
        })
        from flows.runners import check_scheduler
        from flows.search import run_search_queries

        check_scheduler(args.dask)
        summary = run_search_queries(config)
        print(f"wrote {summary['rows']:,} results for {summary['queries']:,} queries to {args.out} "
              f"({summary['chunks']} chunks on {args.dask})")
        return 0
    from qdup.search.batch import read_questions, search_table

    queries = [args.query] if args.query else read_questions(Path(args.queries))[1]
    index, encoder = _load(args)
    table = search_table(index, encoder, queries, args.k)
    if args.out:
        from qdup.search.mine import write_mined

        write_mined(table, Path(args.out))
        print(f"wrote {table.num_rows:,} results for {len(queries):,} queries to {args.out}")
        return 0
    rows = table.to_pylist()
    if args.json:
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
    if args.dask:
        from qdup.config import MineConfig

        store, version = _version(args)
        config = _dask_config(MineConfig, {
            "index_dir": _index_dir(args, store, version).resolve(), "out": Path(args.out).resolve(), "k": args.k,
            "threshold": args.threshold, "chunk_size": args.chunk_size, "model_version": version, "dask": args.dask,
        })
        from flows.mine import run_mine_corpus
        from flows.runners import check_scheduler

        check_scheduler(args.dask)
        summary = run_mine_corpus(config)
        print(f"wrote {summary['pairs']:,} pairs from {summary['questions']:,} questions to {args.out} "
              f"({summary['chunks']} chunks on {args.dask})")
        return 0
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
    search.add_argument("--chunk-size", type=int, default=8192, help="queries per task of a --dask run")
    search.add_argument("--dask", metavar="tcp://HOST:PORT", default=None, help=DASK_HELP)
    search.set_defaults(func=cmd_search)

    mine = subparsers.add_parser("mine", help="duplicate pairs inside an indexed corpus (Parquet)")
    common(mine)
    mine.add_argument("-k", type=int, default=None, help="nearest neighbours per question")
    mine.add_argument("--threshold", type=float, default=None, help="keep pairs with similarity >= this")
    mine.add_argument("--chunk-size", type=int, default=None)
    mine.add_argument("--out", required=True)
    mine.add_argument("--dask", metavar="tcp://HOST:PORT", default=None, help=DASK_HELP)
    mine.set_defaults(func=cmd_mine)
