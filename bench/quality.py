"""Real-data quality benchmark: python -m bench.quality --out bench/results/quality [--protocol sample|larger] [--config F] [--label L]."""

# Two protocols on the real Quora text of ../shared/data (read at run time, never copied; skipped cleanly
# when absent), every decision of which lies in bench/quality_protocol.json:
# - sample: `qdup run` on the real 10k sample (--n-train 8000 --n-test 2000): pair figures on the test
#   rows; the retrieval stage's figures, re-ranked here so that each gets an interval;
# - larger: the shared real duplicate pairs grouped into clusters and split by cluster; `qdup run` on the
#   sample's training range plus the training clusters (with drawn negatives), tested on the sample's test
#   rows; retrieval of every test-cluster question against all questions of the shared file and the sample.
# Every figure gets a 95% cluster-bootstrap interval; training time and peak memory (wait4's ru_maxrss of
# the `qdup run` process) are recorded. Each configuration is written as <label>.json in --out and all
# labels found there are rendered side by side into quality.md.

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.harness.machine import provenance
from bench.harness.steps import bench_env, qdup_command, run_measured
from bench.quality_figures import PROTOCOLS, load_protocol, pair_figures, pair_groups, retrieval_figures
from bench.quality_larger import larger_dataset
from bench.quality_report import render
from bench.shared_data import SHARED

# ---------------------------------------------------------------- running the pipeline


def qdup_run(home: Path, source: Path, n_train: int, n_test: int, config: Path | None, log: Path, timeout_s: float) -> dict[str, Any]:
    """`qdup run` in a fresh process with its own QDUP_HOME; returns the run record and the process's measurements."""
    cmd = [*qdup_command(), "run", "--source", str(source), "--n-train", str(n_train), "--n-test", str(n_test)]
    if config is not None:
        cmd += ["--config", str(config)]
    env = bench_env({"QDUP_HOME": str(home), "PREFECT_HOME": str(home / "prefect")})
    print(f"[quality] qdup run on {source.name} ({n_train:,} + {n_test:,} rows), log {log}", flush=True)
    measured = run_measured(cmd, log, env, timeout_s)
    records = sorted((home / "runs" / "history").glob("*/run.json"))
    if measured["rc"] != 0 or not records:
        raise SystemExit(f"qdup run failed (exit {measured['rc']}); see {log}")
    record = json.loads(records[-1].read_text())
    return {"record": record, "process": measured}


def stage_path(record: dict[str, Any], stage: str) -> Path | None:
    s = record["stages"].get(stage)
    return Path(s["path"]) if s else None


def selection_figures(record: dict[str, Any]) -> dict[str, Any]:
    """What configurations are chosen by (never the test figures): the encoder's calibration ROC-AUC and each
    retrieval method's MRR@10 on the retrieval stage's selection part (the selection split)."""
    metrics = json.loads((stage_path(record, "evaluate") / "metrics.json").read_text())
    retrieval = json.loads((stage_path(record, "retrieval") / "retrieval.json").read_text())
    return {"calibration_roc_auc": metrics["calibration"]["ranking"]["roc_auc"],
            "retrieval_val_mrr@10": {m: retrieval[m]["val"]["mrr@10"] for m in ("dense", "lexical", "hybrid", "reranked")
                                     if m in retrieval},
            # What orders `reranked`: the search reranker (selection figure out-of-fold) or the pair reranker.
            "reranked_by": (retrieval.get("reranked_by") or {}).get("reranker", "pair" if "reranked" in retrieval else None)}


def training_facts(record: dict[str, Any], process: dict[str, Any]) -> dict[str, Any]:
    train = record["stages"]["train"]["manifest"]
    history = train["history"]
    out = {
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "epochs_run": train["epochs_run"],
        "best_epoch": train["best_epoch"],
        "run_wall_seconds": round(process["wall_seconds"], 1),
        "run_cpu_seconds": round(process["cpu_seconds"], 1),
        "peak_rss_gib": round(process["ru_maxrss_bytes"] / 2**30, 2),
    }
    pre = record["stages"].get("pretrain")
    if pre:
        out["pretrain_seconds"] = round(sum(h["seconds"] for h in pre["manifest"].get("history", [])), 1)
    return out


def pair_scores(record: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The test split and each scorer's test scores: the encoder, the lexical baseline (refitted on train as the
    evaluate stage does) and, when the version has one, the reranker."""
    from qdup.data.splits import read_split
    from qdup.evaluation.baseline import lexical_scores
    from qdup.evaluation.scores import TEST_SCORES_FILE, read_test_scores

    splits = stage_path(record, "splits")
    evaluate = stage_path(record, "evaluate")
    train, cal, test = (read_split(splits / f"{n}.parquet") for n in ("train", "calibration", "test"))
    ev = record["config"]["evaluate"]
    base = lexical_scores(train, cal, test, ngram_range=tuple(ev["baseline_ngram_range"]), min_df=ev["baseline_min_df"])
    scores = {"encoder": read_test_scores(evaluate / TEST_SCORES_FILE), "lexical": np.asarray(base.test)}
    rerank = stage_path(record, "rerank")
    if rerank is not None:
        from qdup.stages.rerank import SCORES_FILE

        scores["reranker"] = pd.read_parquet(rerank / SCORES_FILE)["reranker"].to_numpy()
    return test, scores


def version_searcher(record: dict[str, Any], home: Path, corpus: list[str]):
    """The published version's encoder (and reranker) over an exact index of `corpus`, with the version's search defaults."""
    from qdup.registry.store import ArtifactStore
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import build_index
    from qdup.search.service import searcher_for
    from qdup.stages.index import search_defaults

    store = ArtifactStore(str(home / "store"))
    version = record["published"]["version"]
    manifest = store.manifest(version)
    model_dir = store.open_version(version) / "model"
    encoder = load_query_encoder(model_dir)
    index = build_index(list(range(len(corpus))), corpus, encoder.encode(corpus), model_version=version,
                        corpus={"count": len(corpus)}, ann="exact", seed=0)
    index.search_defaults = search_defaults(manifest["retrieval"], index.cfg)
    return searcher_for(index, encoder, model_dir), version


def rank_queries(searcher, corpus: list[str], queries: np.ndarray, relevant: list[np.ndarray], k: int,
                 methods: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per-query metrics of each method; the query (indexed too) is left out of its own first stages, as the retrieval
    evaluation leaves it out (`VersionSearcher.ranking`'s `exclude`)."""
    from qdup.search.retrieval import per_query_metrics
    from qdup.search.service import METHODS

    texts = [corpus[i] for i in queries]
    out = {}
    for method in [m for m in methods if m in METHODS and (m != "reranked" or searcher.reranker is not None)]:
        print(f"[quality] ranking {len(texts):,} queries by {method}", flush=True)
        ranked, _ = searcher.rank(texts, k, method, exclude=np.asarray(queries))
        out[method] = per_query_metrics(ranked, relevant)
    return out


# ---------------------------------------------------------------- protocols


def scoring_throughput(record: dict[str, Any], home: Path, test: pd.DataFrame, repeats: int = 5) -> dict[str, Any]:
    """In-process batch scoring of the test pairs (real-length text) by the exported model: pairs per second."""
    import time

    from qdup.registry.store import ArtifactStore
    from qdup.serving.predictor import load_inference

    store = ArtifactStore(str(home / "store"))
    predictor = load_inference(store.open_version(record["published"]["version"]) / "model")
    q1, q2 = test["question1"].tolist(), test["question2"].tolist()
    predictor.similarity(q1, q2)  # warm: graph tracing
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        predictor.similarity(q1, q2)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"pairs_per_s": round(repeats * len(q1) / wall), "pairs_per_cpu_s": round(repeats * len(q1) / cpu), "pairs": len(q1),
            "repeats": repeats, "load": round(os.getloadavg()[0], 2)}


def run_sample(proto: dict[str, Any], work: Path, config: Path | None, timeout_s: float) -> dict[str, Any]:
    from qdup.search.retrieval import query_part

    p = proto["sample"]
    run = qdup_run(work / "sample", SHARED / "data" / p["file"], p["n_train"], p["n_test"], config, work / "sample.log", timeout_s)
    record = run["record"]
    test, scores = pair_scores(record)
    y = test["is_duplicate"].to_numpy(dtype=np.int64)
    result: dict[str, Any] = {"training": training_facts(record, run["process"]), "test_pairs": len(y),
                              "test_scores": {k: np.round(v, 6).tolist() for k, v in scores.items()},
                              "selection": selection_figures(record),
                              "pairs": pair_figures(y, scores, pair_groups(test), proto["bootstrap"], proto["seed"])}
    # The retrieval stage's test part (test clusters, no training question), re-ranked here for per-query figures.
    retrieval = stage_path(record, "retrieval")
    rcfg = record["config"]["search"]
    split = query_part(pd.read_parquet(retrieval / "retrieval_pairs.parquet"))
    searcher, version = version_searcher(record, work / "sample", split.corpus)
    per_query = rank_queries(searcher, split.corpus, split.test.queries, split.test.relevant, rcfg["retrieval_k"], proto["methods"])
    result["retrieval"] = retrieval_figures(per_query, split.cluster[split.test.queries], proto["bootstrap"], proto["seed"])
    result["retrieval_counts"] = {"corpus": len(split.corpus), "queries": len(split.test)}
    result["search_default"] = searcher.default_method
    result["version"] = version
    result["scoring"] = scoring_throughput(record, work / "sample", test)
    return result


def run_larger(proto: dict[str, Any], work: Path, config: Path | None, timeout_s: float) -> dict[str, Any]:
    p = proto["larger"]
    (work / "larger").mkdir(parents=True, exist_ok=True)
    data = larger_dataset(proto, work / "larger-data.tsv")
    c = data["counts"]
    run = qdup_run(work / "larger", work / "larger-data.tsv", c["n_train"], c["n_test"], config, work / "larger.log", timeout_s)
    record = run["record"]
    test, scores = pair_scores(record)
    y = test["is_duplicate"].to_numpy(dtype=np.int64)
    result: dict[str, Any] = {"training": training_facts(record, run["process"]), "data": c, "test_pairs": len(y),
                              "test_scores": {k: np.round(v, 6).tolist() for k, v in scores.items()},
                              "selection": selection_figures(record),
                              "pairs": pair_figures(y, scores, pair_groups(test), proto["bootstrap"], proto["seed"])}
    searcher, version = version_searcher(record, work / "larger", data["corpus"])
    per_query = rank_queries(searcher, data["corpus"], data["queries"], data["relevant"], p["retrieval_k"], proto["methods"])
    result["retrieval"] = retrieval_figures(per_query, data["query_clusters"], proto["bootstrap"], proto["seed"])
    result["search_default"] = searcher.default_method
    result["version"] = version
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/quality"), help="folder of <label>.json and quality.md")
    parser.add_argument("--protocol", choices=PROTOCOLS, action="append", help="run only this protocol (repeatable); default both")
    parser.add_argument("--config", type=Path, help="a RetrainConfig JSON passed to every `qdup run` (default: project defaults)")
    parser.add_argument("--label", default="defaults", help="name of this configuration in the report")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    proto = load_protocol()
    needed = {proto["sample"]["file"], proto["larger"]["pairs_file"], proto["larger"]["sample_file"]}
    missing = [n for n in sorted(needed) if not (SHARED / "data" / n).is_file()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found under {SHARED / 'data'}")
        return 0
    if not args.label.replace("-", "").replace("_", "").replace(".", "").isalnum():
        print(f"--label: letters, digits, '-', '_' and '.' only, got {args.label!r}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="qdup-quality-"))
    config = args.config.resolve() if args.config else None
    result: dict[str, Any] = {"meta": {
        "label": args.label, "config": str(args.config) if args.config else None,
        "config_json": json.loads(args.config.read_text()) if args.config else None,
        **provenance("bench.quality", argv), "load_before": round(os.getloadavg()[0], 2), "work": str(work)}}
    for name in args.protocol or PROTOCOLS:
        run = run_sample if name == "sample" else run_larger
        result[name] = run(proto, work, config, proto["timeout_s"])
        print(f"[quality] {name}: " + json.dumps({k: v for k, v in result[name].items() if k in ("pairs", "training")})[:600], flush=True)
    result["meta"]["finished"] = dt.datetime.now(dt.UTC).isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.label}.json"
    if path.is_file():
        # A run of one protocol keeps the other protocol's figures of the same label.
        old = json.loads(path.read_text())
        result = {**old, **result}
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    results = {p.stem: json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))}
    (args.out / "quality.md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
