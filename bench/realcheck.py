"""Real-data retrieval check: python -m bench.realcheck --home DIR [--out bench/results/realcheck]."""

# Trains (unless DIR's store already has a production version) on the real 10k sample with
# `qdup run --source ../shared/data/quora_duplicate_questions_first10k.tsv --n-train 8000 --n-test 2000`,
# indexes every distinct question of ../shared/data/quora_real_duplicate_pairs.tsv with production's
# encoder, searches with each question1 (itself left out of its results) and scores finding its question2:
# MRR@10 and recall@1/10/100 for dense, lexical and hybrid (production's hybrid form and weight, chosen on
# its retrieval validation part). Writes realcheck.json and realcheck.md to --out.

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness.results import Run, page
from bench.shared_data import REAL_PAIRS, SAMPLE, real_pair_codes, train_on_sample

METHODS = ("dense", "lexical", "hybrid")


def evaluate(home: Path, k: int = 100) -> dict[str, Any]:
    import numpy as np

    from qdup.registry.store import ArtifactStore
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import build_index
    from qdup.search.retrieval import ranking_metrics
    from qdup.search.service import VersionSearcher
    from qdup.stages.index import search_defaults

    store = ArtifactStore(str(home / "store"))
    version = store.resolve("production")
    manifest = store.manifest(version)
    encoder = load_query_encoder(store.open_version(version) / "model")
    texts, q1, q2 = real_pair_codes()
    t0 = time.perf_counter()
    index = build_index(list(range(len(texts))), texts, encoder.encode(texts), model_version=version,
                        corpus={"file": REAL_PAIRS.name, "count": len(texts)}, ann="exact", seed=0)
    index.search_defaults = search_defaults(manifest["retrieval"], index.cfg)
    searcher = VersionSearcher(index, encoder)
    result: dict[str, Any] = {"version": version, "pairs": int(len(q1)), "corpus": len(texts),
                              "index_s": time.perf_counter() - t0, "search_defaults": index.search_defaults,
                              "trained_on": manifest["dataset"]["source"], "methods": {}}
    queries = [texts[i] for i in q1]
    relevant = [np.array([b]) for b in q2]
    for method in METHODS:
        t1 = time.perf_counter()
        ranked, _ = searcher.rank(queries, k + 1, method)
        # The query is indexed too: leave it out of its own results, as the retrieval evaluation does.
        ranked = np.where(ranked == q1[:, None], -1, ranked)
        order = np.argsort(ranked < 0, axis=1, kind="stable")
        ranked = np.take_along_axis(ranked, order, axis=1)[:, :k]
        result["methods"][method] = {"seconds": time.perf_counter() - t1, **ranking_metrics(ranked, relevant)}
    return result


def render(r: dict[str, Any]) -> str:
    d = r["search_defaults"]
    lines = [
        f"Model {r['version']} trained on `{Path(r['trained_on']).name}`; {r['corpus']:,} distinct questions indexed "
        f"from `{REAL_PAIRS.name}`; {r['pairs']:,} queries (question1; relevant: its question2 only).",
        f"Hybrid: {d['hybrid']['method']} (weight {d['hybrid']['weight']}), chosen on the model's retrieval validation part; "
        f"search default: {d['method']}.", "",
        "| method | MRR@10 | recall@1 | recall@10 | recall@100 | seconds |", "|---|---|---|---|---|---|",
    ]
    for name, m in r["methods"].items():
        lines.append(f"| {name} | {m['mrr@10']:.4f} | {m['recall@1']:.4f} | {m['recall@10']:.4f} | {m['recall@100']:.4f} "
                     f"| {m['seconds']:.1f} |")
    return page("Real-data retrieval check", r, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, required=True, help="QDUP_HOME holding (or to hold) the trained model")
    parser.add_argument("--out", type=Path, default=Path("bench/results/realcheck"))
    args = parser.parse_args(argv)
    for path in (REAL_PAIRS, SAMPLE):
        if not path.is_file():
            print(f"skipped: {path} not found")
            return 0
    from qdup.registry.store import ArtifactStore

    run = Run("bench.realcheck", argv)
    if "production" not in ArtifactStore(str(args.home / "store")).aliases():
        train_on_sample(args.home)
    run.save(args.out, "realcheck.json", evaluate(args.home), "realcheck.md", render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
