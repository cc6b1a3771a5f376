"""Pair reranker speed: python -m bench.rerank_speed --model DIR [--pairs 20000] [--against REV] [--profile] [--out DIR]."""

# Scores --pairs pairs drawn (seeded) from ../shared/data/quora_real_duplicate_pairs.tsv, half of them real duplicate
# pairs and half question1 with a shuffled question2, with the reranker saved in DIR (a version's model/ folder) and
# seeded random encoder cosines (the encoder is not timed; the reranker's work does not depend on the cosine's value).
# Reranker.score in pairs/s:
#   cold    a freshly loaded reranker (empty caches), the first CHUNK pairs in one call;
#   stream  a freshly loaded reranker, all pairs in calls of CHUNK (batch scoring of a file: caches warm up);
#   repeat  the first CHUNK pairs again after the stream (every question seen before: a search's repeated candidates);
#   calls_of_N  after the stream, pairs of rows the stream did not score, in calls of N pairs (a server's requests);
# features_repeat and trees: the two parts of `repeat` apart; trees_default_threads: the trees at their runtime's
# default thread count instead of one (what qdup runs): ONNX Runtime's, or OpenMP's for an older-format reranker. With --against REV the same measurements,
# interleaved, for qdup/evaluation/reranker.py as of git revision REV loaded beside this checkout's, and a check that
# both give the same scores to the last bit (this checkout's in one call and in calls of 32). Every figure is the best
# of --repeats. --profile prints cProfile's top functions of a cold call. Reads ../shared/data at run time; exits 2
# with one line when it is absent.

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import pstats
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bench.harness.results import Run, page
from bench.shared_data import REAL_PAIRS, REPO

SEED = 20261201
SMALL_CALLS = (1, 32, 256)
SMALL_PAIRS = {1: 64, 32: 2048, 256: 4096}  # pairs scored in calls of each size
CHUNK = 5000


def real_pairs(n: int, offset: int = 0, seed: int = SEED) -> tuple[list[str], list[str], np.ndarray]:
    """n pairs from rows offset.. of a seeded shuffle of the file: the first half as they are (duplicates), the rest
    question1 with another of these rows' question2; seeded cosines."""
    import pandas as pd

    df = pd.read_csv(REAL_PAIRS, sep="\t", keep_default_na=False, dtype=str)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(df))[offset:offset + n]
    q1, q2 = df.question1.to_numpy()[rows].tolist(), df.question2.to_numpy()[rows].tolist()
    half = len(rows) // 2
    q2 = q2[:half] + [q2[half:][i] for i in rng.permutation(len(rows) - half)]
    return q1, q2, rng.uniform(-0.2, 1.0, len(q1))


def module_at(rev: str) -> ModuleType:
    """qdup/evaluation/reranker.py as of git revision `rev`, loaded as a module of its own."""
    src = subprocess.run(["git", "show", f"{rev}:qdup/evaluation/reranker.py"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    name = f"reranker_at_{rev.replace('-', '_').replace('.', '_')}"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(src, f"{rev}:qdup/evaluation/reranker.py", "exec"), module.__dict__)
    return module


def measure(module: ModuleType, model: Path, pairs: tuple, new: tuple) -> dict[str, float]:
    """One round of every measurement for one implementation: seconds per len(pairs[0]) pairs."""
    q1, q2, cos = pairs
    n = len(q1)
    out: dict[str, float] = {}
    r = module.load_reranker(model)
    t = time.perf_counter()
    r.score(q1[:CHUNK], q2[:CHUNK], cos[:CHUNK])
    out["cold"] = (time.perf_counter() - t) / min(n, CHUNK) * n
    r = module.load_reranker(model)
    t = time.perf_counter()
    for s in range(0, n, CHUNK):
        r.score(q1[s:s + CHUNK], q2[s:s + CHUNK], cos[s:s + CHUNK])
    out["stream"] = time.perf_counter() - t
    t = time.perf_counter()
    r.score(q1[:CHUNK], q2[:CHUNK], cos[:CHUNK])
    out["repeat"] = (time.perf_counter() - t) / min(n, CHUNK) * n
    t = time.perf_counter()
    x = r.featurizer.features(q1[:CHUNK], q2[:CHUNK], cos[:CHUNK])
    out["features_repeat"] = (time.perf_counter() - t) / len(x) * n
    t = time.perf_counter()
    r.score_features(x)
    out["trees"] = (time.perf_counter() - t) / len(x) * n
    if r.model is not None:  # a reranker of an older format, loaded with its scikit-learn model
        default_threads = r.model.predict_proba
    else:  # the ONNX trees on ONNX Runtime's default thread count
        import onnxruntime as ort

        session = ort.InferenceSession(r.trees.data, providers=["CPUExecutionProvider"])

        def default_threads(rows: np.ndarray) -> list[np.ndarray]:
            return session.run(None, {session.get_inputs()[0].name: rows})
    t = time.perf_counter()
    default_threads(x)
    out["trees_default_threads"] = (time.perf_counter() - t) / len(x) * n
    a1, a2, acos = new
    start = 0
    for size in SMALL_CALLS:  # rows the stream did not score, each call size its own
        m = min(len(a1) - start, SMALL_PAIRS[size])
        t = time.perf_counter()
        for s in range(start, start + m, size):
            r.score(a1[s:s + size], a2[s:s + size], acos[s:s + size])
        out[f"calls_of_{size}"] = (time.perf_counter() - t) / m * n
        start += m
    return out


def profile(module: ModuleType, model: Path, q1: list[str], q2: list[str], cos: np.ndarray, top: int = 25) -> str:
    r = module.load_reranker(model)
    prof = cProfile.Profile()
    prof.runcall(r.score, q1[:CHUNK], q2[:CHUNK], cos[:CHUNK])
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True, help="a folder holding a saved reranker (a version's model/)")
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", help="also measure qdup/evaluation/reranker.py as of this git revision")
    ap.add_argument("--profile", action="store_true", help="print cProfile's top functions of a cold call")
    ap.add_argument("--out", type=Path, help="write rerank_speed.json here")
    args = ap.parse_args(argv)
    if not REAL_PAIRS.is_file():
        print(f"bench.rerank_speed: real pairs not found at {REAL_PAIRS}; nothing measured", file=sys.stderr)
        return 2
    from qdup.evaluation import reranker as current

    run = Run("bench.rerank_speed", argv)
    q1, q2, cos = pairs = real_pairs(args.pairs)
    new = real_pairs(sum(SMALL_PAIRS.values()), offset=args.pairs)
    impls = {"this checkout": current}
    if args.against:
        impls[args.against] = module_at(args.against)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in impls}
    for _ in range(args.repeats):
        for name, module in impls.items():  # interleaved: a busy machine slows both alike
            rounds[name].append(measure(module, args.model, pairs, new))
    n = len(q1)
    result: dict[str, Any] = {"pairs": n, "distinct_questions": len(set(q1) | set(q2)), "repeats": args.repeats,
                              "model": str(args.model), "pairs_per_s": {}}
    for name, rs in rounds.items():
        secs = {k: min(r[k] for r in rs) for k in rs[0]}
        result["pairs_per_s"][name] = {k: round(n / v) for k, v in secs.items()}
    if args.against:
        # In one call and in calls of 32, against REV's in one call.
        cur = current.load_reranker(args.model)
        a = np.concatenate([cur.score(q1, q2, cos)] + [cur.score(q1[s:s + 32], q2[s:s + 32], cos[s:s + 32])
                                                        for s in range(0, min(n, 4096), 32)])
        b = impls[args.against].load_reranker(args.model).score(q1, q2, cos)
        b = np.concatenate([b, b[:min(n, 4096)]])
        result["same_scores"] = {"equal": int(np.sum(a == b)), "of": len(a),
                                 "max_abs_difference": float(np.max(np.abs(a - b)))}

    names = list(result["pairs_per_s"])
    keys = list(result["pairs_per_s"][names[0]])
    lines = [f"Reranker.score, {n:,} real pairs ({result['distinct_questions']:,} distinct questions), calls of "
             f"{CHUNK:,} unless named, pairs/s (best of {args.repeats}; see bench/rerank_speed.py for each row)", "",
             "| measurement | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {k} | " + " | ".join(f"{result['pairs_per_s'][m][k]:,}" for m in names) + " |" for k in keys]
    if "same_scores" in result:
        s = result["same_scores"]
        lines += ["", f"Same scores: {s['equal']:,} of {s['of']:,} equal (max |difference| {s['max_abs_difference']:.3g})."]
    run.save(args.out, "rerank_speed.json", result, "rerank_speed.md", lambda r: page("Reranker speed", r, lines))
    if args.profile:
        print("\nProfile of a cold call (this checkout):\n" + profile(current, args.model, q1, q2, cos))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
