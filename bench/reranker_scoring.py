"""Reranker tree scoring runtimes: python -m bench.reranker_scoring [--pairs 4000] [--repeats 5] [--out DIR].

Fits the reranker (RerankConfig's defaults) on the features of generated pairs (`qdup demo-data`'s generator, seeded
cosines), then scores one pair and 1,000 pairs with each public way of running the fitted trees, against scikit-learn's
own predict_proba:
  onnxruntime   qdup's scorer: the trees as an ONNX TreeEnsemble (qdup.evaluation.reranker_trees), one thread;
  treelite      treelite's GTIL interpreter on the same treelite import, one thread;
  scikit-learn  HistGradientBoostingClassifier.predict_proba under one OpenMP thread, as the fit runs;
  skl2onnx      skl2onnx's converter, when it is installed and converts the model (its outcome is reported).
Each figure is microseconds per call, the best of --repeats interleaved rounds; "max_abs_difference" is against scikit-learn's
probabilities on all pairs. The 1-minute load average before the rounds is recorded: a shared machine's timings are noisy.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.results import Run, page
from bench.harness.stats import mean_call_us


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    run = Run("bench.reranker_scoring", argv)

    import treelite

    from qdup.config import RerankConfig
    from qdup.data.demo import generate_pairs
    from qdup.evaluation.pair_features import fit_featurizer
    from qdup.evaluation.reranker import fit_reranker, one_thread
    from qdup.stages.rerank import boosting_params

    df = generate_pairs(args.pairs, seed=0)
    rng = np.random.default_rng(0)
    y = df["is_duplicate"].to_numpy()
    cos = np.clip(0.4 * y + rng.normal(0.4, 0.2, len(df)), -1, 1)
    f = fit_featurizer(df)
    x = f.features(df["question1"].tolist(), df["question2"].tolist(), cos)
    params = boosting_params(RerankConfig())
    reranker = fit_reranker(f, x, y, rng.random(len(y)), params, seed=0)
    model = reranker.model
    tl = treelite.sklearn.import_model(model)

    def sklearn_proba(rows: np.ndarray) -> np.ndarray:
        with one_thread():
            return model.predict_proba(rows)[:, 1]

    runtimes: dict[str, Callable[[np.ndarray], np.ndarray] | str] = {
        "onnxruntime": reranker.score_features,
        "treelite": lambda rows: treelite.gtil.predict(tl, rows, nthread=1).reshape(len(rows)),
        "scikit-learn": sklearn_proba,
    }
    try:
        import onnxruntime as ort
        from skl2onnx import to_onnx

        session = ort.InferenceSession(to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        runtimes["skl2onnx"] = lambda rows: session.run(None, {"X": rows})[1][:, 1]
    except Exception as exc:  # reported, not timed: the candidate that does not run
        runtimes["skl2onnx"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"

    want = sklearn_proba(x)
    result: dict[str, Any] = {"pairs_fitted": len(x), "trees": int(model.n_iter_), "max_leaf_nodes": params.max_leaf_nodes,
                              "repeats": args.repeats, "load_average_1min_before": os.getloadavg()[0],
                              "runtimes": {}}
    timed = {name: fn for name, fn in runtimes.items() if not isinstance(fn, str)}
    best: dict[str, dict[str, float]] = {name: {"one_pair_us": np.inf, "pairs_1000_us": np.inf} for name in timed}
    # Rounds interleave the runtimes, so that a busy moment of a shared machine falls on all of them alike.
    for _ in range(args.repeats):
        for name, fn in timed.items():
            for key, rows in (("one_pair_us", x[:1]), ("pairs_1000_us", x[:1000])):
                best[name][key] = min(best[name][key], mean_call_us(fn, rows))
    for name, fn in runtimes.items():
        result["runtimes"][name] = {"error": fn} if isinstance(fn, str) else {
            **{k: round(v, 1) for k, v in best[name].items()}, "max_abs_difference": float(np.max(np.abs(fn(x) - want)))}
    lines = [f"{result['trees']} trees of up to {params.max_leaf_nodes} leaves, microseconds per call (best of {args.repeats}).",
             "", "| runtime | 1 pair | 1,000 pairs | max abs difference from scikit-learn |", "|---|---:|---:|---:|"]
    for name, r in result["runtimes"].items():
        lines.append(f"| {name} | {r['one_pair_us']:,} | {r['pairs_1000_us']:,} | {r['max_abs_difference']:.3g} |"
                     if "error" not in r else f"| {name} | fails: {r['error']} | | |")
    run.save(args.out, "reranker_scoring.json", result, "reranker_scoring.md",
             lambda r: page("Reranker tree scoring runtimes", r, lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
