"""Tests for tasks/splits.py: positional splits, counts, proportions and Parquet output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qdup.config import SplitConfig, ValidateConfig
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
    # rows 0..23 training range, 24..27 test; gate = last round(24 * 0.1) = 2 rows (22, 23), selection the 2 before
    # (20, 21), calibration the round(24 * 0.2) = 5 before (15..19); duplicates before it at 1,2,4,6,7,9,10,11,13 (9):
    # int(9 * 0.8) = 7 go to train, val starts at row 11
    labels = [0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1] + [0, 1, 1, 0] + [0, 1, 0, 1]
    cfg = SplitConfig(n_train=24, n_test=4, val_fraction=0.2, calibration_fraction=0.2, selection_fraction=0.1,
                      gate_fraction=0.1)
    parts, facts = splits.make_splits(_frame(labels), cfg)
    assert parts["train"]["id"].tolist() == [1, 2, 4, 6, 7, 9, 10]
    assert parts["negatives"]["id"].tolist() == [0, 3, 5, 8]  # the train region's non-duplicates
    assert parts["val"]["id"].tolist() == [11, 13]  # row 12 (a non-duplicate of the val region) is not used
    assert parts["calibration"]["id"].tolist() == [15, 16, 17, 18, 19]
    assert parts["selection"]["id"].tolist() == [20, 21] and parts["gate"]["id"].tolist() == [22, 23]
    assert parts["test"]["id"].tolist() == [24, 25, 26, 27]
    assert facts["val_start_row"] == 11 and facts["calibration_start_row"] == 15
    assert facts["regions"] == {
        "train": {"start": 0, "end": 11, "duplicates": 7, "non_duplicates": 4},
        "val": {"start": 11, "end": 15, "duplicates": 2, "non_duplicates": 2},
        "calibration": {"start": 15, "end": 20, "duplicates": 3, "non_duplicates": 2},
        "selection": {"start": 20, "end": 22, "duplicates": 1, "non_duplicates": 1},
        "gate": {"start": 22, "end": 24, "duplicates": 1, "non_duplicates": 1},
    }
    assert facts["n_rows"] == 28 and facts["mode"] == "positional"


def test_selection_and_gate_leave_out_pairs_with_a_question_of_an_earlier_region():
    labels = [1, 0] * 50
    frame = _frame(labels)
    frame.loc[66, "qid1"] = frame.loc[3, "qid2"]  # a selection pair sharing a question with a negative
    frame.loc[75, "qid2"] = frame.loc[65, "qid1"]  # a gate pair sharing a question with a selection pair
    parts, facts = splits.make_splits(frame, SplitConfig(n_train=80, n_test=20))
    assert 66 not in parts["selection"]["id"].tolist() and 75 not in parts["gate"]["id"].tolist()
    assert facts["dropped_seen_question"] == {"selection": 1, "gate": 1}
    earlier = pd.concat([parts[n] for n in ("train", "negatives", "val", "calibration")])
    seen = set(earlier["qid1"]) | set(earlier["qid2"])
    for name in ("selection", "gate"):
        assert seen.isdisjoint(set(parts[name]["qid1"]) | set(parts[name]["qid2"])), name


def test_calibration_holds_both_labels_and_nothing_trained_or_early_stopped_on():
    labels = [1, 0] * 50
    parts, facts = splits.make_splits(_frame(labels), SplitConfig(n_train=80, n_test=20))
    assert set(parts["calibration"]["is_duplicate"]) == {0, 1} and len(parts["calibration"]) == 12  # round(80 * 0.15)
    assert len(parts["selection"]) == len(parts["gate"]) == 8  # round(80 * 0.1) each, at the end of the training range
    used = [set(parts[name]["id"]) for name in ("train", "negatives", "val", "calibration", "selection", "gate", "test")]
    assert sum(len(u) for u in used) == len(set().union(*used))  # no pair in two splits
    assert set(parts["calibration"]["id"]).isdisjoint(parts["val"]["id"])
    assert set(parts["negatives"]["is_duplicate"]) == {0} and set(parts["train"]["is_duplicate"]) == {1}
    assert max(parts["negatives"]["id"]) < min(parts["val"]["id"]) <= max(parts["val"]["id"]) < min(parts["calibration"]["id"])
    assert set(parts["test"]["id"]) == set(range(80, 100))
    # 26 duplicates before row 52: int(26 * 0.9) = 23 train, 3 val
    assert (len(parts["train"]), len(parts["val"])) == (23, 3)
    assert set(facts["shared_questions"].values()) == {0} and facts["test_questions_seen"] == 0


def _graph_frame() -> pd.DataFrame:
    """Pairs whose questions chain into components of 1 to 4 pairs, both labels, in a shuffled order."""
    rows, qid = [], 1
    for c in range(60):
        size = 1 + c % 4
        for k in range(size):
            rows.append((qid + k, qid + k + 1, int((c + k) % 3 != 0)))
        qid += size + 1
    order = np.random.default_rng(0).permutation(len(rows))
    q1, q2, y = (np.array(col)[order] for col in zip(*rows, strict=True))
    n = len(rows)
    return pd.DataFrame(
        {"id": range(n), "qid1": q1, "qid2": q2, "question1": [f"q{a}" for a in q1], "question2": [f"q{b}" for b in q2],
         "is_duplicate": pd.array(y, dtype="int8")}
    )


def test_question_components_group_pairs_that_share_a_question():
    comp = splits.question_components(np.array([1, 3, 2, 7, 9]), np.array([2, 4, 5, 8, 7]))
    assert comp.tolist() == [0, 1, 0, 2, 2]  # 1-2-5 chained; 3-4 alone; 7-8-9 chained


def test_question_disjoint_mode_shares_no_question_across_splits():
    frame = _graph_frame()  # 150 pairs in 60 components
    cfg = SplitConfig(mode="question_disjoint", n_train=110, n_test=40, calibration_fraction=0.2)
    parts, facts = splits.make_splits(frame, cfg, seed=3)
    assert facts["test_questions_seen"] == 0
    assert set(facts["shared_questions"].values()) <= {0} | {facts["shared_questions"]["train&negatives"]}
    assert {k: v for k, v in facts["shared_questions"].items() if k != "train&negatives"} == dict.fromkeys(
        [k for k in facts["shared_questions"] if k != "train&negatives"], 0
    )
    assert facts["cuts_on_component_boundaries"] == dict.fromkeys(("val", "calibration", "selection", "gate"), True)
    assert facts["dropped_seen_question"] == {"selection": 0, "gate": 0}
    assert len(parts["test"]) == 40 and facts["n_train"] == 110 and facts["components"] == 60
    assert facts["regions"]["calibration"]["end"] - facts["regions"]["calibration"]["start"] in range(20, 26)
    every = pd.concat([parts[n] for n in splits.SPLITS])
    assert every["id"].is_unique
    # The same seed draws the same splits; another seed others.
    again, _ = splits.make_splits(frame, cfg, seed=3)
    assert all(again[n].equals(parts[n]) for n in splits.SPLITS)
    other, _ = splits.make_splits(frame, cfg, seed=4)
    assert set(other["test"]["id"]) != set(parts["test"]["id"])


def test_positional_mode_on_the_same_frame_does_share_questions():
    # The check above can fail: the positional split of the same pairs puts one component on both sides.
    _, facts = splits.make_splits(_graph_frame(), SplitConfig(n_train=110, n_test=40, calibration_fraction=0.2))
    assert facts["test_questions_seen"] > 0


def test_question_disjoint_mode_needs_a_seed():
    with pytest.raises(ConfigError, match="seed"):
        splits.make_splits(_graph_frame(), SplitConfig(mode="question_disjoint", n_train=110, n_test=40))


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
    frame = _frame([1] * 8 + [0, 1] + [0, 1, 1, 0] + [0] * 5)
    frame.loc[3, "question2"] = None
    frame.loc[16, "question1"] = None
    cfg = SplitConfig(n_train=14, n_test=5, calibration_fraction=0.15, selection_fraction=0.15, gate_fraction=0.15)
    parts, facts = splits.make_splits(frame, cfg)
    assert facts["calibration_start_row"] == 8 and facts["val_start_row"] == 7
    assert facts["dropped_missing_question"] == {"train": 1, "negatives": 0, "val": 0, "test": 1, "calibration": 0,
                                                 "selection": 0, "gate": 0}
    assert 3 not in parts["train"]["id"].tolist() and len(parts["test"]) == 4


def test_written_parquet_has_the_explicit_schema_and_a_stable_content_hash(tmp_path):
    cfg = SplitConfig(n_train=12, n_test=2, calibration_fraction=0.15, selection_fraction=0.15, gate_fraction=0.15)
    parts, _ = splits.make_splits(_frame([1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0]), cfg)
    entry = splits.write_split(parts["train"], tmp_path / "train.parquet")
    schema = pq.read_schema(tmp_path / "train.parquet")
    assert schema.field("is_duplicate").type == "int8" and schema.field("id").type == "int64"
    assert pq.read_metadata(tmp_path / "train.parquet").row_group(0).column(0).compression == "ZSTD"
    back = splits.read_split(tmp_path / "train.parquet")
    assert entry["rows"] == len(back) == 3 and entry["duplicates"] == 3
    assert splits.content_sha256(back) == entry["content_sha256"]
    changed = back.copy()
    changed.loc[0, "question1"] = "changed"
    assert splits.content_sha256(changed) != entry["content_sha256"]


def test_generated_data_splits_in_the_expected_proportions(demo_tsv):
    _, typed = contracts.read_tsv(demo_tsv)
    frame = contracts.to_int_frame(typed)
    parts, facts = splits.make_splits(frame, SplitConfig(n_train=0.8, n_test=0.2))
    assert facts["calibration_start_row"] == 480 - 48 - 48 - 72  # gate, selection round(480 * 0.1), calibration round(480 * 0.15)
    dups = int(frame["is_duplicate"].iloc[:312].sum())
    assert len(parts["train"]) == int(dups * 0.9) and len(parts["val"]) == dups - int(dups * 0.9)
    assert len(parts["calibration"]) == 72 and len(parts["test"]) == 120
    assert len(parts["negatives"]) == (frame["is_duplicate"].iloc[: facts["val_start_row"]] == 0).sum()
    assert 0.25 < parts["test"]["is_duplicate"].mean() < 0.5


def test_every_split_passes_its_own_contract(demo_tsv):
    _, typed = contracts.read_tsv(demo_tsv)
    parts, _ = splits.make_splits(contracts.to_int_frame(typed), SplitConfig(n_train=0.8, n_test=0.2))
    suites = ValidateConfig().split_suites
    assert suites["negatives"] == "qqp_split_negatives.v1"
    for name in splits.SPLITS:
        assert contracts.validate_frame(parts[name], suites[name], name).success, name
    # A duplicate among the negatives breaks their contract.
    report = contracts.validate_frame(parts["train"].head(3), suites["negatives"], "negatives")
    assert [f.expectation for f in report.failures] == ["expect_column_values_to_be_in_set"]


def test_real_sample_splits(shared_sample):
    _, typed = contracts.read_tsv(shared_sample)
    frame = contracts.to_int_frame(typed)
    parts, facts = splits.make_splits(frame, SplitConfig(n_train=8000, n_test=2000))
    assert {k: (len(v), int(v["is_duplicate"].sum())) for k, v in parts.items()} == {
        "train": (1788, 1788),
        "negatives": (2909, 0),
        "val": (199, 199),
        "test": (2000, 732),
        "calibration": (1200, 452),
        "selection": (742, 220),
        "gate": (743, 238),
    }
    assert (facts["val_start_row"], facts["calibration_start_row"]) == (4697, 5200)
    assert facts["dropped_seen_question"] == {"selection": 58, "gate": 57}
    disjoint, facts = splits.make_splits(frame, SplitConfig(n_train=8000, n_test=2000, mode="question_disjoint"), seed=42)
    assert facts["test_questions_seen"] == 0 and len(disjoint["test"]) == 2000 and facts["n_train"] == 8000
