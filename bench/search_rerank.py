"""What orders the first candidates of a search, compared on a run's own retrieval parts:
python -m bench.search_rerank --home DIR --name NAME [--out bench/results/search_rerank] [--latency-queries 300]

DIR is a QDUP_HOME where `qdup run` finished on real data (its latest run is read: splits, encoder, pair reranker, the
retrieval stage's hybrid). On its retrieval selection part (what chooses) and test part (reported only), each method's
MRR@10 with a 95% cluster-bootstrap interval on test:
- hybrid: the run's chosen hybrid (the first stage every other row re-orders);
- pair reranker: the pair reranker (fitted on calibration pairs) re-ordering the hybrid's candidates;
- search reranker: `search.rerank_fit="candidates"`, as the retrieval stage fits it (selection out-of-fold);
- search reranker without the encoder: the same with the encoder's three features (cosine, dense rank, cosine gap)
  left out, to show what the encoder adds inside the reranker;
- one model: the pair reranker's trees fitted on calibration pairs and the selection candidates together, with a
  feature saying where a row came from (the issue's alternative); its selection figure is out-of-fold over the
  selection rows (calibration rows in every fit), and its test ROC-AUC on the test pairs is set beside the pair
  reranker's, since as one model it would also make the duplicate decision.
Latency: `reranked` minus `hybrid` per query through the served searcher (`VersionSearcher`), one query at a time,
interleaved, on the test part's questions (real-length text); the cost of re-ordering 20 does not depend on the
corpus size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.results import Run
from bench.harness.stats import interleaved_latencies, latency_summary
from bench.harness.tables import table

ENCODER_FEATURES = ("encoder_cosine", "dense_rank", "cosine_gap")


def latest_record(home: Path) -> dict[str, Any]:
    records = sorted((home / "runs" / "history").glob("*/run.json"))
    if not records:
        raise SystemExit(f"{home}: no finished `qdup run` (runs/history/*/run.json); run one on real data first")
    return json.loads(records[-1].read_text())


def _stage(record: dict[str, Any], name: str) -> Path:
    return Path(record["stages"][name]["path"])


def measure(home: Path, latency_queries: int) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    from bench.quality_figures import load_protocol, retrieval_figures
    from qdup.config import RetrainConfig
    from qdup.data.splits import read_split
    from qdup.evaluation.reranker import fit_reranker, one_thread, out_of_fold_scores, pair_groups
    from qdup.evaluation.reranker_io import load_reranker
    from qdup.model import network, vocab
    from qdup.model.encode import encode, similarities
    from qdup.search.bm25 import build_lexical
    from qdup.search.candidate_rerank import (
        RERANK_DEPTH,
        SEARCH_FEATURE_NAMES,
        SearchRerankFit,
        candidate_features,
        candidate_labels,
        fit_search_reranker,
        reorder,
        search_scores,
    )
    from qdup.search.lexical import first_stage_runs, hybrid_rankings, rerank_candidates, top_first_stage
    from qdup.search.retrieval import per_query_metrics, query_part
    from qdup.stages.rerank import boosting_params
    from qdup.stages.retrieval import retrieval_pairs, selection_pairs

    record = latest_record(home)
    cfg = RetrainConfig(**{k: v for k, v in record["config"].items() if k in RetrainConfig.model_fields})
    splits = _stage(record, "splits")
    encoder = network.load_encoder(_stage(record, "train") / "encoder.keras")
    vectorizer = vocab.load_vectorizer(_stage(record, "vocab") / "vocabulary.txt")
    pair = load_reranker(_stage(record, "rerank") / "reranker")
    retrieval = json.loads((_stage(record, "retrieval") / "retrieval.json").read_text())
    form, weight = retrieval["hybrid"]["method"], retrieval["hybrid"]["weight"]
    k, rrf_k, seed = cfg.search.retrieval_k, cfg.search.rrf_k, cfg.seed
    params = boosting_params(cfg.rerank)
    spec = SearchRerankFit(pair.featurizer, params, cfg.rerank.folds, seed)

    parts: dict[str, Any] = {}
    for name, pairs in (("selection", selection_pairs(splits)), ("test", retrieval_pairs(splits))):
        split = query_part(pairs)
        emb = encode(encoder, vectorizer, split.corpus, cfg.model.max_length)
        lexical = build_lexical(split.corpus)
        run = first_stage_runs(split.val, emb, lexical, k)
        hybrid = hybrid_rankings(run, form, weight, rrf_k, k)
        stage = top_first_stage(split.val, emb, lexical, run, hybrid, RERANK_DEPTH)
        texts = [split.corpus[int(q)] for q in split.val.queries]
        parts[name] = {"split": split, "run": run, "hybrid": hybrid, "stage": stage, "texts": texts}

    sel, test = parts["selection"], parts["test"]
    groups = sel["split"].cluster[sel["split"].val.queries]
    ranked: dict[str, dict[str, np.ndarray]] = {"selection": {}, "test": {}}
    for name, p in parts.items():
        ranked[name]["hybrid"] = p["hybrid"]
        ranked[name]["pair reranker"] = rerank_candidates(p["run"], p["split"].val, p["split"].corpus, pair.score, k)

    # The pipeline's search reranker.
    model, oof = fit_search_reranker(spec, sel["texts"], sel["split"].corpus, sel["stage"], sel["split"].val.relevant, groups)
    ranked["selection"]["search reranker"] = reorder(sel["hybrid"], oof)
    ranked["test"]["search reranker"] = reorder(test["hybrid"], search_scores(model, test["texts"], test["split"].corpus, test["stage"]))

    def rows(p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r, c, x = candidate_features(pair.featurizer, p["texts"], p["split"].corpus, p["stage"])
        return r, c, x, candidate_labels(p["stage"], p["split"].val.relevant)[r, c].astype(np.int64)

    def place(p: dict[str, Any], r: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
        out = np.full(p["stage"].top.shape, -np.inf)
        out[r, c] = s
        return reorder(p["hybrid"], out)

    (sr, sc, sx, sy), (tr, tc, tx, ty) = rows(sel), rows(test)
    row_groups = groups[sr]

    # Without the encoder: its features removed from the candidate rows.
    keep = [i for i, n in enumerate(SEARCH_FEATURE_NAMES) if n not in ENCODER_FEATURES]
    names = tuple(SEARCH_FEATURE_NAMES[i] for i in keep)
    oof_ne = out_of_fold_scores(sx[:, keep], sy, row_groups, params, cfg.rerank.folds, seed, where="selection candidate",
                                features=names)
    no_enc = fit_reranker(pair.featurizer, sx[:, keep], sy, oof_ne, params, seed, features=names, where="selection candidate")
    ranked["selection"]["search reranker without the encoder"] = place(sel, sr, sc, oof_ne)
    ranked["test"]["search reranker without the encoder"] = place(test, tr, tc, no_enc.score_features(tx[:, keep]))

    # One model: calibration pairs (first-stage features missing, source 0) and selection candidates (source 1).
    cal = read_split(splits / "calibration.parquet")
    c1, c2 = cal["question1"].astype(str).tolist(), cal["question2"].astype(str).tolist()
    cy = cal["is_duplicate"].to_numpy(dtype=np.int64)
    width = len(SEARCH_FEATURE_NAMES) - len(pair.features)
    cos = similarities(encoder, vectorizer, c1, c2, cfg.model.max_length)
    cx = np.hstack([pair.featurizer.features(c1, c2, cos), np.full((len(cy), width), np.nan), np.zeros((len(cy), 1))])
    one_names = (*SEARCH_FEATURE_NAMES, "from_search")
    sx1, tx1 = np.hstack([sx, np.ones((len(sy), 1))]), np.hstack([tx, np.ones((len(ty), 1))])
    oof_one = np.full(len(sy), np.nan)
    splitter = StratifiedGroupKFold(n_splits=cfg.rerank.folds, shuffle=True, random_state=seed)
    with one_thread():
        for fit_idx, held_idx in splitter.split(sx1, sy, row_groups):
            m = params.model(seed, one_names).fit(np.vstack([cx, sx1[fit_idx]]), np.concatenate([cy, sy[fit_idx]]))
            oof_one[held_idx] = m.predict_proba(sx1[held_idx])[:, 1]
        one = params.model(seed, one_names).fit(np.vstack([cx, sx1]), np.concatenate([cy, sy]))
        ranked["selection"]["one model (pairs + candidates)"] = place(sel, sr, sc, oof_one)
        ranked["test"]["one model (pairs + candidates)"] = place(test, tr, tc, one.predict_proba(tx1)[:, 1])
        tp = read_split(splits / "test.parquet")
        t1, t2 = tp["question1"].astype(str).tolist(), tp["question2"].astype(str).tolist()
        tpy = tp["is_duplicate"].to_numpy(dtype=np.int64)
        tcos = similarities(encoder, vectorizer, t1, t2, cfg.model.max_length)
        tpx = pair.featurizer.features(t1, t2, tcos)
        one_pairs = one.predict_proba(np.hstack([tpx, np.full((len(tpy), width), np.nan), np.zeros((len(tpy), 1))]))[:, 1]
    pair_auc = {"pair reranker": float(roc_auc_score(tpy, pair.score_features(tpx))),
                "one model (pairs + candidates)": float(roc_auc_score(tpy, one_pairs)), "test_pairs": len(tpy)}
    # Out-of-fold pair scores of calibration (what the pair reranker's threshold is chosen on), for reference.
    oof_pairs = out_of_fold_scores(cx[:, : len(pair.features)], cy, pair_groups(c1, c2), params, cfg.rerank.folds, seed)
    pair_auc["pair reranker, calibration out-of-fold"] = float(roc_auc_score(cy, oof_pairs))

    proto = load_protocol()
    out: dict[str, Any] = {"home": str(home), "run": record.get("run_id") or record.get("started"),
                           "hybrid": {"method": form, "weight": weight}, "depth": RERANK_DEPTH,
                           "rows": {"selection": int(len(sy)), "selection_duplicates": int(sy.sum()),
                                    "test": int(len(ty)), "test_duplicates": int(ty.sum())},
                           "queries": {n: len(p["split"].val) for n, p in parts.items()},
                           "corpus": {n: len(p["split"].corpus) for n, p in parts.items()},
                           "pair_roc_auc": pair_auc}
    for name, p in parts.items():
        per_query = {m: per_query_metrics(r, p["split"].val.relevant) for m, r in ranked[name].items()}
        clusters = p["split"].cluster[p["split"].val.queries]
        figs = retrieval_figures(per_query, clusters, proto["bootstrap"], proto["seed"], reference="hybrid")
        out[name] = {m: {"mrr@10": f["mrr@10"], "recall@10": f["recall@10"], "minus_hybrid": f.get("mrr@10_minus_hybrid")}
                     for m, f in figs.items()}
    out["latency"] = served_latency(record, home, test["split"], latency_queries)
    return out


def served_latency(record: dict[str, Any], home: Path, split: Any, n: int) -> dict[str, Any]:
    """Per-query wall time of hybrid and of reranked through the version's searcher over an exact index of `split`'s
    corpus, one query at a time, interleaved."""
    from qdup.registry.store import ArtifactStore
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import build_index
    from qdup.search.service import searcher_for
    from qdup.stages.index import search_defaults

    store = ArtifactStore(str(home / "store"))
    version = record["published"]["version"]
    model_dir = store.open_version(version) / "model"
    encoder = load_query_encoder(model_dir)
    corpus = split.corpus
    index = build_index(list(range(len(corpus))), corpus, encoder.encode(corpus), model_version=version,
                        corpus={"count": len(corpus)}, ann="exact", seed=0)
    index.search_defaults = search_defaults(store.manifest(version)["retrieval"], index.cfg)
    searcher = searcher_for(index, encoder, model_dir)
    if searcher.search_reranker is None:
        return {"skipped": f"version {version} has no search reranker"}
    queries = [corpus[int(q)] for q in split.val.queries[:n]]
    searcher.warm(["hybrid", "reranked"])
    warmup = min(20, len(queries) // 3)  # the first queries are answered, not timed
    walls = interleaved_latencies({m: (lambda q, m=m: searcher.ranking([q], 10, m)) for m in ("hybrid", "reranked")},
                                  queries, warmup=warmup)
    extra = [r - h for r, h in zip(walls["reranked"], walls["hybrid"], strict=True)]
    return {"queries": len(queries), "warmup": warmup, "corpus": len(corpus), "hybrid": latency_summary(walls["hybrid"]),
            "reranked": latency_summary(walls["reranked"]), "reranked_minus_hybrid": latency_summary(extra)}


def _iv(f: dict[str, Any] | None, signed: bool = False) -> str:
    if not f:
        return "—"
    fmt = "+.4f" if signed else ".4f"
    return f"{f['estimate']:{fmt}} ({f['low']:{fmt}} – {f['high']:{fmt}})"


def render(r: dict[str, Any]) -> str:
    from bench.harness.results import header

    lines = [*header(r), "",
             f"Run in `{r['home']}`; hybrid {r['hybrid']['method']} (dense weight {r['hybrid']['weight']}), re-ordered to depth "
             f"{r['depth']}. Selection: {r['queries']['selection']:,} queries in {r['corpus']['selection']:,} questions "
             f"({r['rows']['selection']:,} candidate rows, {r['rows']['selection_duplicates']:,} duplicates); test: "
             f"{r['queries']['test']:,} queries in {r['corpus']['test']:,} questions. Selection figures of fitted rows are "
             "out-of-fold; test figures are reported only. Intervals: 95% cluster bootstrap.", ""]
    methods = list(r["test"])
    lines.append(table(["method", "selection MRR@10", "test MRR@10", "test − hybrid", "test recall@10"],
                       [[m, f"{r['selection'][m]['mrr@10']['estimate']:.4f}", _iv(r["test"][m]["mrr@10"]),
                         _iv(r["test"][m]["minus_hybrid"], True), f"{r['test'][m]['recall@10']['estimate']:.4f}"] for m in methods]))
    a = r["pair_roc_auc"]
    lines += ["", f"Pair decision on the {a['test_pairs']:,} test pairs (ROC-AUC): pair reranker {a['pair reranker']:.4f}, one "
              f"model (pairs + candidates) {a['one model (pairs + candidates)']:.4f}; calibration out-of-fold (pair reranker) "
              f"{a['pair reranker, calibration out-of-fold']:.4f}.", ""]
    lat = r["latency"]
    if "skipped" in lat:
        lines.append(f"Latency: skipped ({lat['skipped']}).")
    else:
        lines.append(f"Latency over {lat['queries'] - lat.get('warmup', 0)} queries, corpus {lat['corpus']:,}, one query at a time: hybrid p50 "
                     f"{lat['hybrid']['p50_ms']:.2f} ms, reranked p50 {lat['reranked']['p50_ms']:.2f} ms; reranked − hybrid "
                     f"p50 {lat['reranked_minus_hybrid']['p50_ms']:.2f} ms, p90 {lat['reranked_minus_hybrid']['p90_ms']:.2f} ms "
                     "(target: at most 5 ms for re-ordering 20).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="QDUP_HOME where `qdup run` finished on real data")
    parser.add_argument("--out", type=Path, default=Path("bench/results/search_rerank"))
    parser.add_argument("--name", required=True, help="names the results files (search_rerank_NAME.json, .md): the data the run used")
    parser.add_argument("--latency-queries", type=int, default=300)
    args = parser.parse_args(argv)
    if not args.name.replace("-", "").replace("_", "").isalnum():
        parser.error(f"--name: letters, digits, '-' and '_' only, got {args.name!r}")
    run = Run("bench.search_rerank", argv)
    run.save(args.out, f"search_rerank_{args.name}.json", measure(args.home, args.latency_queries),
             f"search_rerank_{args.name}.md", render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
