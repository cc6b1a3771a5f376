"""The larger quality protocol's data set (bench.quality): the shared real duplicate pairs split by cluster, the sample's
rows after them, and the exclusions that keep every held-out region (calibration, selection, gate) free of training
pairs and of their questions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.shared_data import SHARED

# How many passes `exclusive_held_regions` may take before it gives up (each drops at least one row).
MAX_PASSES = 200


def exclusive_held_regions(data: pd.DataFrame, n_test: int) -> tuple[pd.DataFrame, int]:
    """`data` (qdup's TSV columns, test rows last) less the training-range rows that would put a question of a training
    split (train, negatives, val) into calibration, under the pipeline's default split fractions (selection and gate
    leave such pairs out themselves). Dropping a row moves the cuts, so this repeats until no such row is left; returns
    the kept rows and how many were dropped."""
    from qdup.config import SplitConfig
    from qdup.data.splits import make_splits

    dropped = 0
    for _ in range(MAX_PASSES):
        parts, _ = make_splits(data, SplitConfig(n_train=len(data) - n_test, n_test=n_test))
        fitted = pd.concat([parts[n] for n in ("train", "negatives", "val")])
        seen = set(fitted["qid1"]) | set(fitted["qid2"])
        cal = parts["calibration"]
        bad = cal["id"][cal["qid1"].isin(seen) | cal["qid2"].isin(seen)]
        if not len(bad):
            return data.reset_index(drop=True), dropped
        dropped += len(bad)
        data = data[~data["id"].isin(set(bad))]
    raise RuntimeError(f"calibration still shares questions with training after {MAX_PASSES} passes")


def larger_dataset(proto: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write the larger protocol's TSV to `out`; return the retrieval corpus, queries and relevance, and counts."""
    from qdup.data.graph import components

    p = proto["larger"]
    rng = np.random.default_rng([proto["seed"], 0x1A6])
    sample = pd.read_csv(SHARED / "data" / p["sample_file"], sep="\t", keep_default_na=False)
    shared = pd.read_csv(SHARED / "data" / p["pairs_file"], sep="\t", keep_default_na=False, dtype=str)
    shared = shared[shared["question1"] != shared["question2"]].reset_index(drop=True)
    train_range, test_rows = sample.iloc[: p["sample_n_train"]], sample.iloc[p["sample_n_train"]: p["sample_n_train"] + p["sample_n_test"]]
    texts = pd.concat([shared["question1"], shared["question2"], sample["question1"], sample["question2"]], ignore_index=True)
    codes, corpus = pd.factorize(texts)
    ns, nm = len(shared), len(sample)
    s1, s2 = codes[:ns], codes[ns: 2 * ns]
    m1, m2 = codes[2 * ns: 2 * ns + nm], codes[2 * ns + nm:]
    dup = sample["is_duplicate"].to_numpy() == 1
    a = np.concatenate([s1, m1[dup]])
    b = np.concatenate([s2, m2[dup]])
    cluster = components(a, b, len(corpus))
    shared_clusters = np.unique(cluster[s1])
    test_clusters = set(rng.permutation(shared_clusters)[: round(len(shared_clusters) * (1 - p["train_cluster_share"]))].tolist())
    in_test_cluster = np.isin(cluster, list(test_clusters))
    test_questions = np.zeros(len(corpus), dtype=bool)
    test_questions[m1[p["sample_n_train"]: p["sample_n_train"] + p["sample_n_test"]]] = True
    test_questions[m2[p["sample_n_train"]: p["sample_n_train"] + p["sample_n_test"]]] = True
    blocked = test_questions | in_test_cluster
    # No question of the sample's rows (training range or test) in a shared training pair: the sample's training-range
    # rows become the pipeline's calibration, selection and gate regions, which must hold no training pair nor a
    # question of one (the shared file holds the sample's pairs too).
    sample_questions = np.zeros(len(corpus), dtype=bool)
    sample_questions[m1] = True
    sample_questions[m2] = True
    train_shared = ~in_test_cluster[s1] & ~blocked[s1] & ~blocked[s2] & ~sample_questions[s1] & ~sample_questions[s2]
    tr1, tr2 = s1[train_shared], s2[train_shared]
    # Drawn negatives: two questions of different training clusters.
    pool = np.unique(np.concatenate([tr1, tr2]))
    n_neg = int(round(len(tr1) * p["drawn_negatives_per_train_pair"]))
    n1, n2 = rng.choice(pool, n_neg), rng.choice(pool, n_neg)
    ok = cluster[n1] != cluster[n2]
    n1, n2 = n1[ok], n2[ok]
    head = pd.DataFrame({"q1": np.concatenate([tr1, n1]), "q2": np.concatenate([tr2, n2]),
                         "is_duplicate": np.r_[np.ones(len(tr1), int), np.zeros(len(n1), int)]})
    head = head.iloc[rng.permutation(len(head))]
    rng_rows = slice(0, p["sample_n_train"])
    keep_range = ~blocked[m1[rng_rows]] & ~blocked[m2[rng_rows]]
    mid = pd.DataFrame({"q1": m1[rng_rows][keep_range], "q2": m2[rng_rows][keep_range],
                        "is_duplicate": train_range["is_duplicate"].to_numpy()[keep_range]})
    tail_rows = slice(p["sample_n_train"], p["sample_n_train"] + p["sample_n_test"])
    tail = pd.DataFrame({"q1": m1[tail_rows], "q2": m2[tail_rows], "is_duplicate": test_rows["is_duplicate"].to_numpy()})
    frame = pd.concat([head, mid, tail], ignore_index=True)
    data = pd.DataFrame({"id": np.arange(len(frame)), "qid1": frame["q1"] + 1, "qid2": frame["q2"] + 1,
                         "question1": corpus[frame["q1"]], "question2": corpus[frame["q2"]], "is_duplicate": frame["is_duplicate"]})
    data, held_dropped = exclusive_held_regions(data, len(tail))
    data.to_csv(out, sep="\t", index=False)
    # Retrieval: every question of a test cluster against every distinct question of both files.
    members = np.flatnonzero(in_test_cluster)
    groups = pd.Series(members).groupby(cluster[members]).apply(lambda s: s.to_numpy())
    groups = groups[groups.map(len) >= 2]
    chosen: list[int] = []
    for g in rng.permutation(groups.index.to_numpy()):
        if len(chosen) >= p["max_queries"]:
            break
        chosen.extend(groups[g].tolist())
    queries = np.asarray(sorted(chosen), dtype=np.int64)
    relevant = [groups[cluster[q]][groups[cluster[q]] != q] for q in queries]
    return {
        "corpus": [str(t) for t in corpus], "queries": queries, "relevant": relevant, "query_clusters": cluster[queries],
        "counts": {"rows": len(data), "n_train": len(data) - len(tail), "n_test": len(tail), "train_shared_pairs": int(len(tr1)),
                   "held_rows_dropped": held_dropped,
                   "drawn_negatives": int(len(n1)), "sample_training_rows_kept": int(keep_range.sum()),
                   "shared_clusters": int(len(shared_clusters)), "test_clusters": len(test_clusters),
                   "corpus": len(corpus), "queries": int(len(queries))},
    }


