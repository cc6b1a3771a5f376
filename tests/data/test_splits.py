"""Tests for tasks/splits.py: positional splits, counts, proportions and Parquet output."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from qdup.config import SplitConfig
from qdup.data import contracts, splits
from qdup.errors import ConfigError


def _frame(labels: list[int]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "id": range(n),
            "qid1": range(1, 2 * n, 2),
            "qid2": range(2, 2 * n + 1, 2),
            "question1": [f"question {i}" for i in range(n)],
            "question2": [f"other {i}" for i in range(n)],
            "is_duplicate": pd.array(labels, dtype="int8"),
        }
    )


def test_positional_split_matches_hand_computed_rows():
    # rows 0..11 training range, 12..15 test; duplicates at 1,2,4,6,7,9,10,11 (8 of them)
    labels = [0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1]
    parts, facts = splits.make_splits(_frame(labels), SplitConfig(n_train=12, n_test=4))
    assert parts["train"]["id"].tolist() == [1, 2, 4, 6, 7, 9]  # int(8 * 0.8) = 6, file order
    assert parts["val"]["id"].tolist() == [10, 11]
    assert parts["test"]["id"].tolist() == [12, 13, 14, 15]
    assert parts["calibration"]["id"].tolist() == [10, 11]  # from the first val duplicate to row 11
    assert facts["val_start_row"] == 10
    assert facts["n_rows"] == 18


def test_calibration_holds_both_labels_and_no_training_row():
    labels = [1, 0] * 50
    parts, _ = splits.make_splits(_frame(labels), SplitConfig(n_train=80, n_test=20))
    assert set(parts["calibration"]["is_duplicate"]) == {0, 1}
    assert set(parts["calibration"]["id"]).isdisjoint(parts["train"]["id"])
    assert set(parts["val"]["id"]) <= set(parts["calibration"]["id"])
    assert set(parts["test"]["id"]).isdisjoint(set(range(80)))


@pytest.mark.parametrize(
    ("n_train", "n_test", "expected"),
    [(0.5, 0.25, (50, 25)), (60, 40, (60, 40)), (0.9, 10, (90, 10))],
)
def test_counts_or_fractions(n_train, n_test, expected):
    assert splits.plan_splits(100, SplitConfig(n_train=n_train, n_test=n_test)) == expected


def test_too_small_data_is_a_clear_error_suggesting_fractions():
    with pytest.raises(ConfigError, match=r"100 rows.*fractions"):
        splits.plan_splits(100, SplitConfig(n_train=90, n_test=20))


def test_rows_with_a_missing_question_are_dropped_and_counted():
    frame = _frame([1] * 10 + [0] * 5)
    frame.loc[3, "question2"] = None
    frame.loc[12, "question1"] = None
    parts, facts = splits.make_splits(frame, SplitConfig(n_train=10, n_test=5))
    assert facts["dropped_missing_question"] == {"train": 1, "val": 0, "test": 1, "calibration": 0}
    assert 3 not in parts["train"]["id"].tolist() and len(parts["test"]) == 4


def test_written_parquet_has_the_explicit_schema_and_a_stable_content_hash(tmp_path):
    parts, _ = splits.make_splits(_frame([1, 0, 1, 1, 0, 1, 1, 0, 1, 0]), SplitConfig(n_train=8, n_test=2))
    entry = splits.write_split(parts["train"], tmp_path / "train.parquet")
    schema = pq.read_schema(tmp_path / "train.parquet")
    assert schema.field("is_duplicate").type == "int8" and schema.field("id").type == "int64"
    assert pq.read_metadata(tmp_path / "train.parquet").row_group(0).column(0).compression == "ZSTD"
    back = splits.read_split(tmp_path / "train.parquet")
    assert entry["rows"] == len(back) == 4 and entry["duplicates"] == 4
    assert splits.content_sha256(back) == entry["content_sha256"]
    changed = back.copy()
    changed.loc[0, "question1"] = "changed"
    assert splits.content_sha256(changed) != entry["content_sha256"]


def test_generated_data_splits_in_the_expected_proportions(demo_tsv):
    _, typed = contracts.read_tsv(demo_tsv)
    frame = contracts.to_int_frame(typed)
    parts, facts = splits.make_splits(frame, SplitConfig(n_train=0.8, n_test=0.2))
    dups = int(frame["is_duplicate"].iloc[:480].sum())
    assert len(parts["train"]) == int(dups * 0.8) and len(parts["val"]) == dups - int(dups * 0.8)
    assert len(parts["test"]) == 120
    assert 0.25 < parts["test"]["is_duplicate"].mean() < 0.5


def test_real_sample_splits(shared_sample):
    _, typed = contracts.read_tsv(shared_sample)
    frame = contracts.to_int_frame(typed)
    parts, facts = splits.make_splits(frame, SplitConfig(n_train=8000, n_test=2000))
    dups = int(frame["is_duplicate"].iloc[:8000].sum())
    assert {k: len(v) for k, v in parts.items()} == {
        "train": int(dups * 0.8),
        "val": dups - int(dups * 0.8),
        "test": 2000,
        "calibration": 8000 - facts["val_start_row"],
    }
    assert (len(parts["train"]), len(parts["val"])) == (2383, 596)
    assert int(parts["test"]["is_duplicate"].sum()) == 732
