"""The larger quality protocol's exclusions: no held-out region (calibration, selection, gate) of the pipeline's split
holds a training pair or a question of one, even though the shared pairs file holds the sample's own pairs."""

from __future__ import annotations

import pandas as pd

from bench import quality_larger
from bench.quality_figures import load_protocol
from qdup.config import SplitConfig
from qdup.data.demo import write_demo_tsv
from qdup.data.splits import make_splits


def test_held_out_regions_hold_no_training_pair_nor_a_question_of_one(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_demo_tsv(data_dir / "sample.tsv", rows=1000, seed=4)
    write_demo_tsv(tmp_path / "other.tsv", rows=1500, seed=5)
    sample = pd.read_csv(data_dir / "sample.tsv", sep="\t", keep_default_na=False)
    other = pd.read_csv(tmp_path / "other.tsv", sep="\t", keep_default_na=False)
    # The shared file holds duplicates of both, the sample's own among them (as the real one does).
    shared = pd.concat([sample[sample["is_duplicate"] == 1], other[other["is_duplicate"] == 1]])[["question1", "question2"]]
    shared.to_csv(data_dir / "shared.tsv", sep="\t", index=False)
    monkeypatch.setattr(quality_larger, "SHARED", tmp_path)
    proto = load_protocol()
    proto["larger"] = {**proto["larger"], "pairs_file": "shared.tsv", "sample_file": "sample.tsv", "sample_n_train": 800,
                       "sample_n_test": 200, "max_queries": 200}
    out = tmp_path / "larger.tsv"
    facts = quality_larger.larger_dataset(proto, out)
    data = pd.read_csv(out, sep="\t", keep_default_na=False)
    n_test = facts["counts"]["n_test"]
    assert n_test == 200 and len(data) == facts["counts"]["rows"]
    parts, _ = make_splits(data, SplitConfig(n_train=len(data) - n_test, n_test=n_test))
    fitted = pd.concat([parts[n] for n in ("train", "negatives", "val")])
    fitted_questions = set(fitted["question1"]) | set(fitted["question2"])
    fitted_pairs = {frozenset(p) for p in zip(fitted["question1"], fitted["question2"], strict=True)}
    for name in ("calibration", "selection", "gate"):
        held = parts[name]
        assert len(held) > 0 and held["is_duplicate"].nunique() == 2, name
        assert not ({frozenset(p) for p in zip(held["question1"], held["question2"], strict=True)} & fitted_pairs), name
        assert fitted_questions.isdisjoint(set(held["question1"]) | set(held["question2"])), name
    # Without the exclusions the shared file's copies of the sample's pairs would sit in training.
    assert facts["counts"]["train_shared_pairs"] > 0
    sample_questions = set(sample["question1"]) | set(sample["question2"])
    head = data.iloc[: facts["counts"]["train_shared_pairs"]]
    assert sample_questions.isdisjoint(set(head["question1"]) | set(head["question2"]))
