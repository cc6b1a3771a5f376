"""Benchmark of the trust checks at full scale: lexical baseline, bootstrap intervals, paired difference, drift.

python -m bench.trust --out /tmp/qdup-trust [--rows 404290] [--resamples 1000]

On generated data (`qdup.data.demo.generate_pairs`, the release's size by default) split as the
flow splits it: times `lexical_scores` + `baseline_metrics` (fit on train, score calibration and
test), `bootstrap_intervals` and `paired_difference` on the test split (and on 2,000 test pairs),
`profile_dataset` and `check_drift` of a second generated data set against the first's profile.
With the real 10k-row sample beside the checkout (../shared/data, or --shared), also: the lexical
baseline on its positional split, and drift of its second half against its first half's profile
and of generated data against the real profile. Writes trust.json to --out and prints it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.harness.procs import peak_rss_bytes
from bench.harness.results import Run
from bench.harness.stats import timed
from bench.shared_data import SAMPLE


def _real(sample: Path) -> dict[str, Any]:
    """Baseline and drift figures on the real sample (read at run time, never copied)."""
    from qdup.config import DriftTolerances, SplitConfig
    from qdup.data.contracts import read_tsv, to_int_frame
    from qdup.data.demo import generate_pairs
    from qdup.data.drift import check_drift
    from qdup.data.profile import profile_dataset
    from qdup.data.splits import make_splits
    from qdup.evaluation.baseline import lexical_pair_baseline
    from qdup.text import standardize

    df = to_int_frame(read_tsv(sample)[1]).dropna(subset=["question1", "question2"]).reset_index(drop=True)
    splits, _ = make_splits(df, SplitConfig(n_train=0.8, n_test=0.2))
    block, seconds = timed(lexical_pair_baseline, splits["train"], splits["calibration"], splits["test"])
    out: dict[str, Any] = {"rows": len(df), "baseline_s": seconds, "baseline_test": {
        "roc_auc": block["test"]["ranking"]["roc_auc"], "pr_auc": block["test"]["ranking"]["pr_auc"],
        "accuracy": block["test"]["at_threshold"]["accuracy"], "f1": block["test"]["at_threshold"]["f1"],
        "threshold": block["threshold"]["value"]}}
    half = len(df) // 2
    first, second = df.iloc[:half], df.iloc[half:].reset_index(drop=True)
    train = splits["train"]
    vocab = ["", "[UNK]", *sorted({t for q in train["question1"].tolist() + train["question2"].tolist() for t in standardize(q)})]
    prof = profile_dataset(first, vocab)
    for name, new in (("second_half_vs_first", second), ("generated_vs_real_first_half", generate_pairs(half, 0))):
        r = check_drift(new, prof, vocab, "warn", DriftTolerances())
        out[name] = {"status": r.status, "failing": [f.split(" (")[0] for f in r.failing],
                     "observed": {k: (float(v) if isinstance(v, float) else v) for k, v in r.as_dict()["observed"].items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=404_290)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--shared", type=Path, default=None, help="folder holding data/ (default: ../shared or $QDUP_SHARED, else /work/shared)")
    ap.add_argument("--skip-generated", action="store_true")
    args = ap.parse_args(argv)
    sample = args.shared / "data" / SAMPLE.name if args.shared else SAMPLE
    run = Run("bench.trust", argv)
    report: dict[str, Any] = {"rows": args.rows, "resamples": args.resamples}
    if sample.is_file():
        report["real_sample"] = _real(sample)
    else:
        report["real_sample"] = f"skipped: {sample} not found"
    if args.skip_generated:
        run.save(args.out, "trust.json", report)
        return 0

    import numpy as np

    from qdup.config import DriftTolerances, SplitConfig
    from qdup.data.demo import generate_pairs
    from qdup.data.drift import check_drift
    from qdup.data.profile import profile_dataset
    from qdup.data.splits import make_splits
    from qdup.evaluation.baseline import baseline_metrics, lexical_scores
    from qdup.evaluation.bootstrap import bootstrap_intervals, paired_difference
    from qdup.text import standardize

    df, report["generate_s"] = timed(generate_pairs, args.rows, 0)
    split_cfg = SplitConfig() if args.rows >= 320_000 else SplitConfig(n_train=0.75, n_test=0.025)
    splits, _ = make_splits(df, split_cfg)
    train, cal, test = splits["train"], splits["calibration"], splits["test"]
    report["split_rows"] = {k: len(v) for k, v in splits.items()}

    scores, report["baseline_scores_s"] = timed(lexical_scores, train, cal, test)
    block, report["baseline_metrics_s"] = timed(baseline_metrics, scores, cal, test)
    report["baseline"] = {"features": scores.params["features"], "test_roc_auc": block["test"]["ranking"]["roc_auc"],
                          "test_accuracy": block["test"]["at_threshold"]["accuracy"]}

    y = test["is_duplicate"].to_numpy()
    thr = block["threshold"]["value"]
    rng = np.random.default_rng(0)
    other = scores.test + rng.normal(0, 0.05, len(y))  # a second scorer for the paired difference
    for n in (2000, len(y)):
        _, report[f"bootstrap_{n}_s"] = timed(bootstrap_intervals, y[:n], scores.test[:n], thr, resamples=args.resamples, seed=42)
        _, report[f"paired_roc_auc_{n}_s"] = timed(
            paired_difference, y[:n], scores.test[:n], thr, other[:n], thr, "roc_auc", resamples=args.resamples, seed=42
        )

    vocab = ["", "[UNK]", *sorted({t for q in train["question1"].tolist() + train["question2"].tolist() for t in standardize(q)})]
    prof, report["profile_s"] = timed(profile_dataset, df, vocab)
    report["profile_distinct_questions"] = prof.summary["questions"]["distinct"]
    new = generate_pairs(args.rows, 1)
    drift, report["check_drift_s"] = timed(check_drift, new, prof, vocab, "warn", DriftTolerances())
    report["drift_status"] = drift.status
    report["drift_failing"] = drift.failing
    report["peak_rss_mb"] = round(peak_rss_bytes() / 2**20, 1)
    run.save(args.out, "trust.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
