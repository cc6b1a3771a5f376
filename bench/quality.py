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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.harness.machine import provenance
from bench.harness.steps import bench_env, qdup_command, run_measured
from bench.quality_larger import larger_dataset
from bench.shared_data import SHARED

PROTOCOL_FILE = Path(__file__).with_name("quality_protocol.json")
PROTOCOLS = ("sample", "larger")
PAIR_METRICS = ("roc_auc", "pr_auc")
RETRIEVAL_METRICS = ("mrr@10", "ndcg@10", "recall@10")
# The configuration every other is compared with: the project's defaults before this benchmark's changes.
REFERENCE_LABEL = "today"


def load_protocol() -> dict[str, Any]:
    return json.loads(PROTOCOL_FILE.read_text())


# ---------------------------------------------------------------- cluster bootstrap


def cluster_weights(groups: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Per-item weights of each resample of the evaluation's cluster bootstrap (`resample_counts`): whole groups drawn
    with replacement, an item weighs its group's draws."""
    from qdup.evaluation.bootstrap import resample_counts

    for block in resample_counts(len(groups), resamples, seed, groups):
        yield from block


def _interval(values: list[float], level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(values, dtype=np.float64), [alpha, 1 - alpha])
    return float(low), float(high)


def pair_figures(y: np.ndarray, scores: dict[str, np.ndarray], groups: np.ndarray, boot: dict[str, Any], seed: int,
                 reference: str = "lexical") -> dict[str, Any]:
    """ROC-AUC and PR-AUC of every scorer with cluster-bootstrap intervals, and each scorer minus `reference` (paired):
    the evaluation's own `bootstrap_intervals` and `paired_difference`, on the same resamples for every scorer."""
    from qdup.evaluation.bootstrap import bootstrap_intervals, paired_difference

    draw = {"resamples": boot["resamples"], "seed": seed, "level": boot["level"], "groups": groups}
    # The threshold enters accuracy and F1 only, which these figures leave out.
    threshold = 0.5
    out: dict[str, Any] = {}
    for name, s in scores.items():
        iv = bootstrap_intervals(y, s, threshold, **draw)["metrics"]
        out[name] = {m: {k: iv[m][k] for k in ("estimate", "low", "high")} for m in PAIR_METRICS}
        if name != reference and reference in scores:
            d = paired_difference(y, s, threshold, scores[reference], threshold, "roc_auc", **draw)
            out[name][f"roc_auc_minus_{reference}"] = {"estimate": d["difference"], "low": d["low"], "high": d["high"]}
    return out


def pair_groups(df: pd.DataFrame) -> np.ndarray:
    """Cluster of each pair: connected components of its questions (pairs that share a question move together)."""
    from qdup.data.graph import pair_components

    return pair_components(df["question1"].to_numpy(dtype=object), df["question2"].to_numpy(dtype=object))


def retrieval_figures(per_query: dict[str, dict[str, np.ndarray]], groups: np.ndarray, boot: dict[str, Any], seed: int,
                      reference: str = "lexical") -> dict[str, Any]:
    """Mean of each per-query metric with a cluster-bootstrap interval, and each method minus `reference` (paired)."""
    weights = list(cluster_weights(groups, boot["resamples"], seed))
    out: dict[str, Any] = {}
    for method, metrics in per_query.items():
        out[method] = {}
        for m in RETRIEVAL_METRICS:
            v = metrics[m]
            low, high = _interval([float(w @ v / w.sum()) for w in weights], boot["level"])
            out[method][m] = {"estimate": float(v.mean()), "low": low, "high": high}
        if method != reference and reference in per_query:
            d = metrics["mrr@10"] - per_query[reference]["mrr@10"]
            low, high = _interval([float(w @ d / w.sum()) for w in weights], boot["level"])
            out[method][f"mrr@10_minus_{reference}"] = {"estimate": float(d.mean()), "low": low, "high": high}
    return out


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
            "retrieval_val_mrr@10": {m: retrieval[m]["val"]["mrr@10"] for m in ("dense", "lexical", "hybrid") if m in retrieval}}


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
    from qdup.search.service import VersionSearcher, load_version_reranker
    from qdup.stages.index import search_defaults

    store = ArtifactStore(str(home / "store"))
    version = record["published"]["version"]
    manifest = store.manifest(version)
    model_dir = store.open_version(version) / "model"
    encoder = load_query_encoder(model_dir)
    index = build_index(list(range(len(corpus))), corpus, encoder.encode(corpus), model_version=version,
                        corpus={"count": len(corpus)}, ann="exact", seed=0)
    index.search_defaults = search_defaults(manifest["retrieval"], index.cfg)
    return VersionSearcher(index, encoder, load_version_reranker(model_dir)), version


def rank_queries(searcher, corpus: list[str], queries: np.ndarray, relevant: list[np.ndarray], k: int,
                 methods: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per-query metrics of each method; the query (indexed too) is left out of its own results."""
    from qdup.search.retrieval import per_query_metrics
    from qdup.search.service import METHODS

    texts = [corpus[i] for i in queries]
    out = {}
    for method in [m for m in methods if m in METHODS and (m != "reranked" or searcher.reranker is not None)]:
        print(f"[quality] ranking {len(texts):,} queries by {method}", flush=True)
        ranked, _ = searcher.rank(texts, k + 1, method)
        ranked = np.where(ranked == queries[:, None], -1, ranked)
        order = np.argsort(ranked < 0, axis=1, kind="stable")
        out[method] = per_query_metrics(np.take_along_axis(ranked, order, axis=1)[:, :k], relevant)
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


# ---------------------------------------------------------------- report


def _fig(f: dict[str, Any] | None, signed: bool = False) -> str:
    if not f:
        return "—"
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f"{fmt.format(f['estimate'])} ({fmt.format(f['low'])} – {fmt.format(f['high'])})"


def test_frame(proto: dict[str, Any], name: str) -> pd.DataFrame:
    """The test pairs of a protocol, in the pipeline's test-split order: in both, the sample's test rows."""
    p = proto["sample"] if name == "sample" else proto["larger"]
    n_train = p["n_train"] if name == "sample" else p["sample_n_train"]
    n_test = p["n_test"] if name == "sample" else p["sample_n_test"]
    sample = pd.read_csv(SHARED / "data" / proto["sample"]["file"], sep="\t", keep_default_na=False)
    return sample.iloc[n_train: n_train + n_test].reset_index(drop=True)


def versus(results: dict[str, dict[str, Any]], proto: str, reference: str, boot: dict[str, Any], seed: int) -> list[str]:
    """Rows: each configuration's encoder (and reranker) ROC-AUC minus `reference`'s encoder on the same test pairs,
    with a paired cluster-bootstrap interval: reported only, never what a default is chosen by (`chosen`)."""
    ref = results.get(reference, {}).get(proto)
    if not ref or "test_scores" not in ref:
        return []
    test = test_frame(load_protocol(), proto)
    if len(test) != len(ref["test_scores"]["encoder"]):
        return []
    y = test["is_duplicate"].to_numpy(dtype=np.int64)
    rows = []
    for label, r in results.items():
        if label == reference or proto not in r or "test_scores" not in r[proto]:
            continue
        for scorer in ("encoder", "reranker"):
            if scorer not in r[proto]["test_scores"]:
                continue
            scores = {"new": np.asarray(r[proto]["test_scores"][scorer]), "old": np.asarray(ref["test_scores"]["encoder"])}
            f = pair_figures(y, scores, pair_groups(test), boot, seed, reference="old")["new"]["roc_auc_minus_old"]
            rows.append(f"| {label} {scorer} − {reference} encoder | {_fig(f, True)} |")
    return rows


def chosen(results: dict[str, dict[str, Any]], proto: str) -> str | None:
    """The configuration a default is taken from: the best calibration ROC-AUC, ties broken by the best selection-part
    MRR@10 of any method; test figures play no part."""
    have = {label: r[proto]["selection"] for label, r in results.items() if proto in r and r[proto].get("selection")}
    if not have:
        return None
    return max(have, key=lambda k: (have[k]["calibration_roc_auc"], max(have[k]["retrieval_val_mrr@10"].values(), default=0.0)))


def render(results: dict[str, dict[str, Any]]) -> str:
    lines = ["# Real-data quality benchmark", "",
             "`python -m bench.quality --out bench/results/quality [--protocol sample|larger] [--config FILE.json] [--label NAME]`; "
             "protocol decisions in [bench/quality_protocol.json](../../quality_protocol.json). Figures: estimate (95% cluster-bootstrap "
             "interval, 1,000 resamples of whole duplicate clusters).", ""]
    for proto in PROTOCOLS:
        have = {label: r[proto] for label, r in results.items() if proto in r}
        if not have:
            continue
        lines += [f"## {proto}", "", "Pairs (test split):", "",
                  "| configuration | scorer | ROC-AUC | PR-AUC | ROC-AUC − lexical |", "|---|---|---|---|---|"]
        for label, r in have.items():
            for scorer, f in r["pairs"].items():
                lines.append(f"| {label} | {scorer} | {_fig(f['roc_auc'])} | {_fig(f['pr_auc'])} | {_fig(f.get('roc_auc_minus_lexical'), True)} |")
        lines += ["", "Retrieval (test queries):", "",
                  "| configuration | method | MRR@10 | nDCG@10 | recall@10 | MRR@10 − lexical |", "|---|---|---|---|---|---|"]
        for label, r in have.items():
            for method, f in r["retrieval"].items():
                mark = " (search default)" if method == r.get("search_default") else ""
                lines.append(f"| {label} | {method}{mark} | {_fig(f['mrr@10'])} | {_fig(f['ndcg@10'])} | {_fig(f['recall@10'])} "
                             f"| {_fig(f.get('mrr@10_minus_lexical'), True)} |")
        lines += ["", "Selection figures (what configurations are chosen by; never test):", "",
                  "| configuration | calibration ROC-AUC (encoder) | selection-part MRR@10: dense / lexical / hybrid |", "|---|---|---|"]
        for label, r in have.items():
            sel = r.get("selection")
            if sel:
                mrr = " / ".join(f"{v:.4f}" for v in sel["retrieval_val_mrr@10"].values())
                lines.append(f"| {label} | {sel['calibration_roc_auc']:.4f} | {mrr} |")
        if (best := chosen(results, proto)) is not None:
            lines += ["", f"Chosen on these selection figures alone: `{best}`."]
        lines += ["", "| configuration | training s | epochs (best) | whole run s (CPU s) | peak RSS GiB | scoring pairs/s (per CPU s) | measured |",
                  "|---|---|---|---|---|---|---|"]
        for label, r in have.items():
            t = r["training"]
            pre = f" + pretrain {t['pretrain_seconds']}" if "pretrain_seconds" in t else ""
            sc = r.get("scoring")
            score = f"{sc['pairs_per_s']:,} ({sc['pairs_per_cpu_s']:,})" if sc else "—"
            lines.append(f"| {label} | {t['train_seconds']}{pre} | {t['epochs_run']} ({t['best_epoch']}) | {t['run_wall_seconds']} "
                         f"({t['run_cpu_seconds']}) | {t['peak_rss_gib']} | {score} | {results[label]['meta']['finished'][:16]}, "
                         f"load {results[label]['meta']['load_before']} |")
        diffs = versus(results, proto, REFERENCE_LABEL, load_protocol()["bootstrap"], load_protocol()["seed"])
        if diffs:
            lines += ["", f"Test ROC-AUC against `{REFERENCE_LABEL}`'s encoder (paired, same resamples):", "",
                      "| comparison | difference (95% interval) |", "|---|---|", *diffs]
        if proto == "larger":
            c = next(iter(have.values()))["data"]
            lines += ["", f"Larger data: {c['rows']:,} rows ({c['train_shared_pairs']:,} shared training-cluster pairs, "
                      f"{c['drawn_negatives']:,} drawn negatives, {c['sample_training_rows_kept']:,} sample training-range rows, "
                      f"{c['n_test']:,} sample test rows); {c['test_clusters']:,} of {c['shared_clusters']:,} clusters held out; "
                      f"retrieval: {c['queries']:,} queries against {c['corpus']:,} questions."]
        lines.append("")
    for label, r in results.items():
        lines.append(f"- `{label}`: config {r['meta']['config'] or 'defaults'}; commit {r['meta']['commit']}")
    return "\n".join(lines) + "\n"


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
