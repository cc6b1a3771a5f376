"""Tests for tasks/contracts.py: strict parsing and blocking Great Expectations suites."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from qdup.config import ValidateConfig
from qdup.data import contracts
from qdup.errors import ConfigError, DataContractError
from qdup.stages.validate import build_validate
from tests.bad_inputs import BAD_INPUTS


def _validate(path):
    raw, typed = contracts.read_tsv(path)
    return contracts.validate_frame(typed, "qqp_raw.v1", "raw", raw=raw)


def test_generated_data_passes_raw_contract(demo_tsv, tmp_path):
    report = _validate(demo_tsv)
    assert report.success, report.error_message(str(demo_tsv))
    assert report.evaluated == len(contracts.load_suite_dict("qqp_raw.v1")["expectations"]) == 16
    json_path, md_path = report.write(tmp_path, "validation")
    assert json.loads(json_path.read_text())["success"] is True
    assert "PASSED" in md_path.read_text()


def test_real_sample_passes_raw_contract(shared_sample):
    raw, typed = contracts.read_tsv(shared_sample)
    assert len(typed) == 10_000
    report = contracts.validate_frame(typed, "qqp_raw.v1", "raw", raw=raw)
    assert report.success, report.error_message(str(shared_sample))
    frame = contracts.to_int_frame(typed)
    assert int(frame["is_duplicate"].sum()) == 3711


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_with_a_named_problem(case, demo_tsv, tmp_path):
    builder, words = BAD_INPUTS[case]
    bad = builder(demo_tsv, tmp_path / f"{case}.tsv")
    out = tmp_path / "out"
    out.mkdir()
    # The validate stage's own function: the code the flow runs, which must refuse the file by name.
    with pytest.raises(DataContractError) as err:
        build_validate(bad, ValidateConfig(), out)
    message = str(err.value)
    assert str(bad) in message
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    assert list(out.iterdir()) == []  # nothing half-written


def test_non_integer_values_are_reported_with_their_raw_text(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\ta\tb\t1.5\n1\t3\t4\tc\td\t0\n")
    raw, typed = contracts.read_tsv(path)
    assert typed["is_duplicate"].isna().tolist() == [True, False]
    report = contracts.validate_frame(typed, "qqp_raw.v1", "raw", raw=raw)
    assert not report.success
    assert any(f.column == "is_duplicate" and f.examples[0]["value"] == "'1.5'" for f in report.failures)


def test_missing_questions_are_tolerated_only_up_to_the_documented_share(tmp_path):
    rows = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
    rows += [f"{i}\t{2*i+1}\t{2*i+2}\tq{i} text\tother {i}\t{int(i % 3 == 0)}" for i in range(20_000)]
    rows[5] = "4\t9\t10\tq4 text\t\t0"  # one empty question2: 0.005% of rows
    path = tmp_path / "nulls.tsv"
    path.write_text("\n".join(rows) + "\n")
    raw, typed = contracts.read_tsv(path)
    assert _validate(path).success
    assert int(typed["question2"].isna().sum()) == 1
    rows[6] = "5\t11\t12\t\tother\t0"
    rows[7] = "6\t13\t14\t\tother\t0"
    rows[8] = "7\t15\t16\t\tother\t0"
    path.write_text("\n".join(rows) + "\n")  # 3 of 20,000 = 0.015% > 0.01%
    report = _validate(path)
    assert [f.column for f in report.failures] == ["question1"]


def test_the_literal_word_null_is_a_question_not_a_missing_value(tmp_path):
    path = tmp_path / "null.tsv"
    path.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\tnull\tNA\t0\n")
    _, typed = contracts.read_tsv(path)
    assert typed.loc[0, "question1"] == "null" and typed.loc[0, "question2"] == "NA"


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        ("../etc/passwd", ConfigError, "invalid suite name"),
        ("qqp_raw.v1/x", ConfigError, "invalid suite name"),
        ("", ConfigError, "suite name"),
        ("nope.v9", DataContractError, "unknown data contract 'nope.v9'"),
    ],
)
def test_unknown_or_unsafe_suite_names_are_refused(name, error, words):
    with pytest.raises(error) as err:
        contracts.load_suite_dict(name)
    assert words in str(err.value)


def test_split_suite_refuses_a_non_duplicate_in_train():
    frame = pd.DataFrame(
        {"id": [1, 2], "qid1": [1, 3], "qid2": [2, 4], "question1": ["a", "b"], "question2": ["c", "d"], "is_duplicate": [1, 0]}
    )
    report = contracts.validate_frame(frame, "qqp_split_duplicates.v1", "train")
    assert [f.expectation for f in report.failures] == ["expect_column_values_to_be_in_set"]
    assert report.failures[0].examples[0]["row"] == 1
