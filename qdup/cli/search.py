"""Commands `qdup index build`, `qdup search` and `qdup mine`: a version's question index and what it finds."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from qdup.cli.common import STORE_HELP, add_command, add_model_option, export_folder, open_store, require_extra, resolve_version, settle_model
from qdup.errors import ConfigError, QdupError
from qdup.search.locations import find_index_dir, late_index_dir

DASK_HELP = ("Dask scheduler whose workers run the chunks, as a Prefect flow; the index (and model) folders must be "
             "at the same path on every worker (shared storage)")


def _version(args: argparse.Namespace):
    store = open_store(args)
    version = resolve_version(store, settle_model(args))
    return store, version


def _model(args: argparse.Namespace) -> tuple[str | None, Path, Path]:
    """(version id, model folder, the folder its index is looked for in) of --model: a version of the store, or an
    export folder (version None: its index is the one beside it, `index/`, or --index)."""
    folder = export_folder(settle_model(args))
    if folder is not None:
        return None, folder, folder.parent
    store, version = _version(args)
    version_dir = store.open_version(version)
    return version, version_dir / "model", version_dir


def _check_index_option(args: argparse.Namespace) -> None:
    """--index names a folder holding an index: checked first, before the store opens."""
    from qdup.search.locations import MANIFEST

    if args.index and not (Path(args.index) / MANIFEST).is_file():
        build = f"qdup index build --model {settle_model(args)}" + (" --questions FILE.tsv" if export_folder(args.model) else "")
        raise QdupError(f"--index {args.index}: no question index there ({MANIFEST} is missing); build one: {build} --index {args.index}")


def _index_dir(args: argparse.Namespace, version: str | None, where: Path) -> Path:
    """The index folder to search: --index (checked by `_check_index_option`), else the version's own; found before any load."""

    build = f"qdup index build --model {args.model}" + (" --questions FILE.tsv" if version is None else "")
    if args.index:
        return Path(args.index)
    found = find_index_dir(where)
    if found is None:
        what = f"version {version}" if version else f"export folder {args.model}"
        raise QdupError(f"{what} has no question index; build one: {build}" + (" --index DIR" if version is None else ""))
    return found


def _dataset_questions(manifest: dict[str, Any]) -> tuple[list, list[str], dict[str, Any]]:
    """The distinct questions of the data set a version was trained on, read from its source when the bytes still match."""
    from qdup.data import contracts
    from qdup.fileio import sha256_file
    from qdup.stages.index import distinct_questions

    dataset = manifest.get("dataset", {})
    source = Path(str(dataset.get("source", "")))
    if not source.is_file() or sha256_file(source) != dataset.get("sha256"):
        raise QdupError(f"--questions: the version's data set {source} is not here with sha256 {dataset.get('sha256')}; "
                        "pass a TSV with a 'question' column")
    _, typed = contracts.read_tsv(source)
    ids, texts = distinct_questions(typed.dropna(subset=["qid1", "qid2"]).astype({"qid1": "int64", "qid2": "int64"}))
    return ids, texts, {"dataset_sha256": dataset["sha256"], "questions": "distinct questions of the data set",
                        "count": len(texts)}


def cmd_index_build(args: argparse.Namespace) -> int:
    if args.questions and not Path(args.questions).is_file():
        raise QdupError(f"--questions {args.questions}: no such file (a TSV with a 'question' column)")
    # Before the slow imports: a wrong name, or an index that exists already, answers at once.
    folder = export_folder(settle_model(args))
    if folder is not None:  # an export folder: no store to index into, nor a data set to read
        if not (args.questions and args.index):
            raise QdupError(f"--model {args.model}: an export folder needs --questions and --index: qdup index build "
                            f"--model {args.model} --questions FILE.tsv --index DIR")
        store = version = None
        model_dir, out, manifest = folder, Path(args.index), {}
    else:
        store, version = _version(args)
        version_dir = store.open_version(version)
        model_dir = version_dir / "model"
        existing = find_index_dir(version_dir)
        if args.index is None and existing is not None:
            raise QdupError(f"{existing}: version {version} already has an index; a published index is never replaced")
        if args.index is None and not store.is_local:
            raise QdupError("--index: a remote store takes no late index; give a local folder")
        out = Path(args.index) if args.index else late_index_dir(Path(store.root), version)
        manifest = store.manifest(version)
    if out.exists():
        raise QdupError(f"{out}: an index already exists; remove it first or pass --index elsewhere")
    from qdup.config import SearchConfig
    from qdup.fileio import sha256_file
    from qdup.search.batch import read_questions
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import build_index, recall_against_exact, sample_queries
    from qdup.stages.index import UNPUBLISHED, search_defaults

    if args.questions:
        questions = Path(args.questions)
        ids, texts = read_questions(questions)
        corpus = {"questions_file": str(questions.resolve()), "sha256": sha256_file(questions), "count": len(texts)}
    else:
        ids, texts, corpus = _dataset_questions(manifest)
    encoder = load_query_encoder(model_dir)
    cfg = SearchConfig()
    # build_index refuses empty and duplicated questions before any vector is computed from them.
    index = build_index(ids, texts, _encode_checked(encoder, texts), model_version=version or UNPUBLISHED, corpus=corpus, ann=args.ann,
                        seed=args.seed, cfg=cfg)
    if index.backend != "exact":
        recall_against_exact(index, sample_queries(index, 1000, args.seed), 10)
    if "retrieval" in manifest:  # the version's own hybrid choice, made on its retrieval validation part
        index.search_defaults = search_defaults(manifest["retrieval"], cfg)
    index.save(out)
    recall = f", recall@10 vs exact {index.recall['recall']:.4f}" if index.recall else ""
    print(f"indexed {len(index):,} questions with {version or args.model} ({index.backend}{recall}) in {out}")
    return 0


def _encode_checked(encoder, texts: list[str]):
    import numpy as np

    from qdup.search.index import check_corpus

    check_corpus(list(range(len(texts))), texts, np.zeros((len(texts), 1), np.float32))
    return encoder.encode(texts)


def _load(args: argparse.Namespace, timings: dict[str, float] | None = None):
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    # Before the slow imports: a wrong name, or a folder without an index, answers at once.
    _check_index_option(args)
    version, model_dir, where = _model(args)
    index_dir = _index_dir(args, version, where)
    timings["resolve version"] = time.perf_counter() - t0
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import load_index
    from qdup.search.service import searcher_for

    t0 = time.perf_counter()
    index = load_index(index_dir, expected_model_version=version)
    timings["load index"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    encoder = load_query_encoder(model_dir)
    timings["load encoder"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    searcher = searcher_for(index, encoder, model_dir)  # with the version's pair and search rerankers
    timings["load reranker"] = time.perf_counter() - t0
    return searcher


def _index_location(args: argparse.Namespace) -> tuple[str | None, Path, Path]:
    """(version, index folder, model folder) of --model, as absolute paths that Dask workers on shared storage can read."""
    _check_index_option(args)
    version, model_dir, where = _model(args)
    return version, _index_dir(args, version, where).resolve(), model_dir.resolve()


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


def _rows(searcher, queries: list[str], k: int, method: str | None) -> list[dict[str, Any]]:
    rows = []
    for query, hits in zip(queries, searcher.search(queries, k, method), strict=True):
        for rank, hit in enumerate(hits, start=1):
            rows.append({"query": query, "rank": rank, **hit})
    return rows


def _score_label(kind: str) -> str:
    return {"cosine": "cosine", "bm25": "BM25", "rrf": "RRF score", "weighted": "weighted score", "reranker": "reranker",
            "search_reranker": "search reranker"}[kind]


def _columns(kind: str, duplicate_by: str) -> list[tuple[str, str, str]]:
    """(header, row key, number format) of each score column: the ranking score as `score (kind)`, then the cosine and
    the reranker's score when they are other scores (each score named once)."""
    label = f"score ({ {'bm25': 'BM25', 'rrf': 'RRF'}.get(kind, kind)})"
    columns = [(label, "score", ".4f")]
    if kind != "cosine":
        columns.append(("cosine", "similarity", ".3f"))
    if duplicate_by == "reranker_score" and kind != "reranker":
        columns.append(("reranker", "reranker_score", ".4f"))
    return columns


def table_header(kind: str, duplicate_by: str) -> str:
    """The header of `qdup search`'s table."""
    scores = "  ".join(f"{name:>{max(len(name), 8)}}" for name, _, _ in _columns(kind, duplicate_by))
    return f"{'rank':>4}  {scores}  {'duplicate':<9}  question"


def table_row(row: dict[str, Any], kind: str, duplicate_by: str) -> str:
    """One hit as a row of `qdup search`'s table, its columns under `table_header`'s."""
    scores = "  ".join(f"{row[key]:>{max(len(name), 8)}{fmt}}" for name, key, fmt in _columns(kind, duplicate_by))
    mark = "DUPLICATE" if row["duplicate"] else "-"
    return f"{row['rank']:>4}  {scores}  {mark:<9}  {row['question']}  (id {row['id']})"


def cmd_search(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise QdupError(f"-k: must be >= 1, got {args.k}")
    if bool(args.query) == bool(args.queries):
        raise QdupError('give one query text or --queries FILE.tsv, not both or neither: qdup search "How do I learn Python?"')
    if args.queries and not args.out:
        raise QdupError("--queries needs --out FILE.parquet")
    if args.dask and not args.queries:
        raise QdupError("--dask spreads batch search (--queries FILE --out FILE) over a cluster; one query runs here")
    if args.query is not None and not args.query.strip():
        raise QdupError("query: empty question")
    if args.queries and not Path(args.queries).is_file():
        raise QdupError(f"--queries {args.queries}: no such file (a TSV with a 'question' column)")
    if args.dask:
        require_extra("pipeline", "search --dask")
        from qdup.config import BatchSearchConfig

        version, index_dir, model_dir = _index_location(args)
        config = _dask_config(BatchSearchConfig, {
            "index_dir": index_dir, "model_dir": model_dir, "queries": Path(args.queries).resolve(), "out": Path(args.out).resolve(),
            "k": args.k, "chunk_size": args.chunk_size, "model_version": version, "dask": args.dask, "method": args.method,
        })
        from flows.runners import check_scheduler
        from flows.search import run_search_queries

        check_scheduler(args.dask)
        summary = run_search_queries(config)
        print(f"wrote {summary['rows']:,} results for {summary['queries']:,} queries to {args.out} "
              f"({summary['method']} ranking, {summary['chunks']} chunks on {args.dask})")
        return 0
    timings: dict[str, float] = {}
    started = time.perf_counter()
    searcher = _load(args, timings)
    from qdup.search.batch import read_questions

    query_ids, queries = ([0], [args.query]) if args.query else read_questions(Path(args.queries))
    method = args.method or searcher.default_method
    t0 = time.perf_counter()
    searcher.warm([method])  # once per process: its cost is shown apart from the query's
    timings["warm-up"] = time.perf_counter() - t0
    if args.out:
        from qdup.search.batch import search_table
        from qdup.search.mine import write_mined

        table = search_table(searcher, queries, args.k, method, query_ids)
        write_mined(table, Path(args.out))
        print(f"wrote {table.num_rows:,} results for {len(queries):,} queries ({method} ranking) to {args.out}")
        return 0
    t0 = time.perf_counter()
    rows = _rows(searcher, queries, args.k, method)
    timings["search"] = time.perf_counter() - t0
    if getattr(args, "verbose", False):
        timings["total"] = time.perf_counter() - started
        print("timing: " + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timings.items()), file=sys.stderr)
    kind = searcher.score_kind(method)
    rule = searcher.duplicate_rule()
    if args.json:
        print(json.dumps({"version": searcher.index.model_version, "method": method, "score_kind": kind,
                          "threshold": searcher.encoder.threshold, "duplicate_by": rule["by"],
                          "duplicate_threshold": rule["threshold"], "results": rows}, indent=2, default=str))
    else:
        by = "similarity (encoder cosine)" if rule["by"] == "similarity" else "reranker score"
        print(f"version {searcher.index.model_version}, {method} ranking: hits ordered by their {_score_label(kind)}; "
              f"duplicate when {by} >= {rule['threshold']:.4f}")
        print(table_header(kind, rule["by"]))
        for r in rows:
            print(table_row(r, kind, rule["by"]))
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    if args.k is None and args.threshold is None:
        raise QdupError("give -k (neighbours per question), --threshold, or both: qdup mine -k 10 --out pairs.parquet")
    if args.dask:
        require_extra("pipeline", "mine --dask")
        from qdup.config import MineConfig

        version, index_dir, _ = _index_location(args)
        config = _dask_config(MineConfig, {
            "index_dir": index_dir, "out": Path(args.out).resolve(), "k": args.k,
            "threshold": args.threshold, "chunk_size": args.chunk_size, "model_version": version, "dask": args.dask,
        })
        from flows.mine import run_mine_corpus
        from flows.runners import check_scheduler

        check_scheduler(args.dask)
        summary = run_mine_corpus(config)
        print(f"wrote {summary['pairs']:,} pairs from {summary['questions']:,} questions to {args.out} "
              f"({summary['chunks']} chunks on {args.dask})")
        return 0
    index = _load(args).index
    from qdup.search.mine import mine

    table = mine(index, k=args.k, threshold=args.threshold, chunk_size=args.chunk_size, out=Path(args.out))
    print(f"wrote {table.num_rows:,} pairs from {len(index):,} questions to {args.out}")
    return 0


def register(subparsers) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        add_model_option(p)
        p.add_argument("--store", default=None, help=STORE_HELP)
        p.add_argument("--index", default=None,
                       help="index folder (default: the version's own index/, else <store>/indexes/<version>)")

    index = add_command(subparsers, "index", "question indexes of model versions (see: qdup index build --help)",
                        ["qdup index build -m 20261123T010203456Z-a1b2c3"])
    isub = index.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND", help="build: make a version's index")
    build = add_command(isub, "build", "encode distinct questions with a version's encoder and index them", [
        "qdup index build                                   # production, over its own data set",
        "qdup index build -m latest --questions questions.tsv",
    ], cmd_index_build)
    common(build)
    build.add_argument("--questions", help="TSV with a 'question' column and an optional 'id' (default: the version's data set)")
    build.add_argument("--ann", choices=("auto", "exact", "ivf"), default="auto",
                       help="exact search, a faiss IVF index, or auto: exact up to 100,000 questions (default: %(default)s)")
    build.add_argument("--seed", type=int, default=42, help="seed of the IVF training sample (default: %(default)s)")

    search = add_command(subparsers, "search", "nearest indexed questions of a query", [
        'qdup search "How do I learn Python?" -k 5',
        'qdup search -m latest "How do I learn Python?" --method lexical --json',
        "qdup search --queries queries.tsv --out hits.parquet",
    ], cmd_search)
    common(search)
    search.add_argument("query", nargs="?", help="one question")
    search.add_argument("-k", type=int, default=10, help="results per query (default: %(default)s)")
    search.add_argument("--json", action="store_true", help="machine-readable output")
    search.add_argument("--method", choices=("dense", "lexical", "hybrid", "reranked"), default=None,
                        help="ranking (default: the version's best on its retrieval validation part)")
    search.add_argument("--queries", help="TSV with a 'question' column (batch mode)")
    search.add_argument("--out", help="Parquet output of batch mode")
    search.add_argument("--chunk-size", type=int, default=8192, help="queries per task of a --dask run (default: %(default)s)")
    search.add_argument("--dask", metavar="tcp://HOST:PORT", default=None, help=DASK_HELP)

    mine = add_command(subparsers, "mine", "duplicate pairs inside an indexed corpus (Parquet)", [
        "qdup mine -k 10 --out pairs.parquet",
        "qdup mine -m latest --threshold 0.9 --out pairs.parquet",
    ], cmd_mine)
    common(mine)
    mine.add_argument("-k", type=int, default=None, help="nearest neighbours per question")
    mine.add_argument("--threshold", type=float, default=None, help="keep pairs with similarity >= this")
    mine.add_argument("--chunk-size", type=int, default=None, help="questions per chunk (default: the search configuration's mine_chunk_size)")
    mine.add_argument("--out", required=True, help="Parquet output of the pairs")
    mine.add_argument("--dask", metavar="tcp://HOST:PORT", default=None, help=DASK_HELP)
