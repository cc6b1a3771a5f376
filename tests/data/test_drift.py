"""Drift against production: the profile, the derived columns counted exactly, and the GE suite passing or failing by name."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qdup.config import DriftTolerances, RetrainConfig
from qdup.data.demo import generate_pairs
from qdup.data.drift import NO_PRODUCTION, check_drift, drift_frame, drift_suite
from qdup.data.profile import profile_dataset, read_profile, vocabulary_sha256, write_profile
from qdup.errors import DataContractError, QdupError
from qdup.text import SPLIT, STANDARDIZE, standardize


def frame(pairs: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame({
        "id": np.arange(len(pairs), dtype=np.int64),
        "qid1": np.arange(len(pairs), dtype=np.int64),
        "qid2": np.arange(len(pairs), dtype=np.int64),
        "question1": [p[0] for p in pairs],
        "question2": [p[1] for p in pairs],
        "is_duplicate": np.array([p[2] for p in pairs], dtype=np.int8),
    })


PRODUCTION = frame([
    ("How do I learn Python?", "What is the best way to learn Python?", 1),
    ("What is the capital of France?", "Which city is the capital of France?", 1),
    ("How do I cook rice?", "How can I lose weight fast?", 0),
    ("Is Java hard?", "Is chess hard?", 0),
])
NEW = frame([
    ("how do i learn python", "What is the best way to learn Python?", 0),  # same pair, other label
    ("Which city is the capital of France?", "What is the capital of France?", 1),  # columns swapped, same label
    ("How can I lose weight fast?", "How do I cook rice?", 1),  # columns swapped, other label
    ("Is Java hard?", "Is Rust hard?", 0),  # one question production never saw
    ("Why is the sky blue?", "Why is grass green?", 1),  # two questions production never saw
])


def vocabulary_of(df: pd.DataFrame) -> list[str]:
    words = sorted({t for col in ("question1", "question2") for q in df[col] for t in standardize(q)})
    return ["", "[UNK]", *words]


def test_standardisation_is_the_vocabularys():
    import keras

    texts = ["How do I learn C++?", "ÉCOLE or école?!", "tabs\tand\nnewlines", "it's  (really) 3.5% off", "?", "U.S.A. vs u.s.a"]
    layer = keras.layers.TextVectorization(standardize=STANDARDIZE, split=SPLIT, output_mode="int")
    layer.adapt(texts)
    known = set(layer.get_vocabulary()[2:])
    assert known == {t for text in texts for t in standardize(text)}
    assert standardize("How do I learn C++?") == ["how", "do", "i", "learn", "c"]


def test_derived_columns_are_counted_exactly():
    vocab = vocabulary_of(PRODUCTION)
    prof = profile_dataset(PRODUCTION, vocab)
    d = drift_frame(NEW, prof, vocab)
    assert d["label_flip"].tolist() == [1, 0, 1, 0, 0]
    assert d["unseen_share"].tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]
    # "is rust hard" + "is java hard": 1 of 6 tokens unknown; "why is the sky blue" + "why is grass green": 6 of 9.
    np.testing.assert_allclose(d["oov_share"], [0, 0, 0, 1 / 6, 6 / 9], rtol=0, atol=1e-15)
    assert d["q1_tokens"].tolist() == [5, 7, 6, 3, 5] and d["q2_tokens"].tolist() == [8, 6, 5, 3, 4]
    assert d["id"].tolist() == NEW["id"].tolist() and d["is_duplicate"].tolist() == [0, 1, 1, 0, 1]


def test_profile_summary_is_json_and_round_trips(tmp_path):
    vocab = vocabulary_of(PRODUCTION)
    prof = profile_dataset(PRODUCTION, vocab)
    s = prof.summary
    assert json.loads(json.dumps(s)) == s
    assert s["rows"] == 4 and s["duplicate_share"] == 0.5
    assert s["questions"] == {**s["questions"], "occurrences": 8, "distinct": 8}
    assert s["pairs"]["distinct"] == 4 and s["pairs"]["with_both_labels"] == 0
    assert s["length_tokens"]["histogram"] == {"values": [3, 5, 6, 7, 8], "weights": [0.25, 0.25, 0.25, 0.125, 0.125]}
    assert s["vocabulary"] == {"sha256": vocabulary_sha256(vocab), "size": len(vocab)} and s["oov_share"] == 0.0
    paths = write_profile(prof, tmp_path / "drift")
    assert sorted(p.name for p in paths) == ["pair_labels.npy", "profile.json", "question_hashes.npy"]
    back = read_profile(tmp_path / "drift")
    assert back.summary == s
    np.testing.assert_array_equal(back.question_hashes, prof.question_hashes)
    np.testing.assert_array_equal(back.pair_labels, prof.pair_labels)
    assert back.question_hashes.dtype == np.uint64 and back.pair_labels.shape == (4, 2)


def test_a_pair_with_both_labels_in_production_is_counted():
    both = pd.concat([PRODUCTION, frame([("Is chess hard?", "Is Java hard?", 1)])], ignore_index=True)
    assert profile_dataset(both).summary["pairs"] == {"distinct": 4, "with_both_labels": 1, "file": "pair_labels.npy"}


def test_suite_bounds_come_from_the_profile_and_tolerances():
    prof = profile_dataset(PRODUCTION, vocabulary_of(PRODUCTION))
    suite = drift_suite(prof, DriftTolerances(duplicate_share=0.1, label_flip_share=0.2, median_length_tokens=1))
    by = {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in suite["expectations"]}
    assert by[("expect_column_mean_to_be_between", "is_duplicate")] == {"column": "is_duplicate", "min_value": 0.4, "max_value": 0.6}
    # Median of all eight production questions' lengths (3 3 5 5 6 6 7 8) is 5.5.
    assert by[("expect_column_median_to_be_between", "q1_tokens")]["min_value"] == 4.5
    assert by[("expect_column_values_to_be_in_set", "label_flip")] == {"column": "label_flip", "value_set": [0], "mostly": 0.8}
    assert by[("expect_column_kl_divergence_to_be_less_than", "q2_tokens")]["partition_object"]["values"] == [3, 5, 6, 7, 8]
    assert len(suite["expectations"]) == 8
    no_vocab = drift_suite(profile_dataset(PRODUCTION), DriftTolerances())
    assert ("expect_column_mean_to_be_between", "oov_share") not in {(e["type"], e["kwargs"].get("column")) for e in no_vocab["expectations"]}


def test_crafted_flips_block_with_the_expectation_and_rows_named():
    vocab = vocabulary_of(PRODUCTION)
    prof = profile_dataset(PRODUCTION, vocab)
    # Five rows cannot match a length distribution: the KL checks are loosened to isolate the others.
    tolerances = DriftTolerances(unseen_question_share=0.5, length_kl_divergence=10.0)
    report = check_drift(NEW, prof, vocab, "block", tolerances, production_version="v-prod")
    assert report.status == "drifted" and report.blocking
    failing = {(f.expectation, f.column): f for f in report.contract.failures}
    assert set(failing) == {
        ("expect_column_mean_to_be_between", "is_duplicate"),  # 0.6 vs production's 0.5 +- 0.05
        ("expect_column_mean_to_be_between", "oov_share"),  # 0.1667 > 0 + 0.05
        ("expect_column_values_to_be_in_set", "label_flip"),
    }
    flip = failing[("expect_column_values_to_be_in_set", "label_flip")]
    assert flip.observed.startswith("2 of 5 rows unexpected") and [e["id"] for e in flip.examples] == [0, 2]
    with pytest.raises(DataContractError, match=r"expect_column_values_to_be_in_set on column 'label_flip'") as exc:
        report.raise_if_blocking("dataset.tsv")
    assert "v-prod" in str(exc.value) and "validate.drift" in str(exc.value)
    summary = report.as_dict()
    assert summary["observed"]["expect_column_mean_to_be_between:unseen_share"] == pytest.approx(0.3)
    assert json.loads(json.dumps(summary)) == summary
    # The same findings only warn by default.
    warned = check_drift(NEW, prof, vocab, tolerances=tolerances, production_version="v-prod")
    assert warned.status == "drifted" and not warned.blocking and "warning only" in warned.message
    warned.raise_if_blocking("dataset.tsv")


@pytest.fixture(scope="module")
def generated():
    production = generate_pairs(3000, seed=1)
    vocab = vocabulary_of(production.iloc[:2000])  # as if fitted on a train split
    return production, vocab, profile_dataset(production, vocab)


def test_same_distribution_passes(generated, tmp_path):
    production, vocab, prof = generated
    same = check_drift(production, prof, vocab, "block")
    assert same.status == "passed" and same.contract.evaluated == 8 and not same.failing
    other_sample = check_drift(generate_pairs(3000, seed=2), prof, vocab, "block")
    assert other_sample.status == "passed", other_sample.failing
    json_path, md_path = other_sample.write(tmp_path)
    assert json.loads(json_path.read_text())["success"] is True
    assert md_path.read_text().startswith("# Drift against production: passed (mode block)")


def test_fewer_duplicates_and_longer_questions_fail_by_name(generated):
    _, vocab, prof = generated
    new = generate_pairs(3000, seed=2)
    keep = (new["is_duplicate"] == 0) | (np.arange(len(new)) % 4 == 0)  # a quarter of the duplicates
    new = new[keep].reset_index(drop=True)
    tail = " What is the best way to do it and how do I learn it?"
    new["question1"] = new["question1"] + tail
    new["question2"] = new["question2"] + tail
    report = check_drift(new, prof, vocab, "warn", production_version="v1")
    failing = {(f.expectation, f.column) for f in report.contract.failures}
    assert failing >= {
        ("expect_column_mean_to_be_between", "is_duplicate"),
        ("expect_column_kl_divergence_to_be_less_than", "q1_tokens"),
        ("expect_column_median_to_be_between", "q1_tokens"),
        ("expect_column_kl_divergence_to_be_less_than", "q2_tokens"),
        ("expect_column_median_to_be_between", "q2_tokens"),
    }
    assert ("expect_column_values_to_be_in_set", "label_flip") not in failing
    assert report.status == "drifted" and not report.blocking
    assert "expect_column_mean_to_be_between on 'is_duplicate'" in report.message
    md = report.markdown()
    assert md.startswith("# Drift against production v1: drifted (mode warn)") and "**FAILED**" in md


def test_first_run_and_off():
    first = check_drift(PRODUCTION, None, None, "block")
    assert first.status == "no production" and not first.blocking and first.message.startswith(NO_PRODUCTION)
    assert first.contract is None and NO_PRODUCTION in first.markdown()
    assert check_drift(PRODUCTION, None, None, "off").status == "off"
    with pytest.raises(QdupError, match="must be 'warn', 'block' or 'off'"):
        check_drift(PRODUCTION, None, None, "loud")


def test_a_vocabulary_that_is_not_productions_is_refused():
    prof = profile_dataset(PRODUCTION, vocabulary_of(PRODUCTION))
    with pytest.raises(QdupError, match="is not the profile's"):
        drift_frame(NEW, prof, vocabulary_of(NEW))


def test_config_section_defaults_and_validation():
    cfg = RetrainConfig()
    assert cfg.validate_.drift == "warn" and cfg.validate_.drift_tolerances.label_flip_share == 0.0
    blocked = RetrainConfig.model_validate({"validate": {"drift": "block", "drift_tolerances": {"duplicate_share": 0.02}}})
    assert blocked.validate_.drift_tolerances.duplicate_share == 0.02
    with pytest.raises(ValueError, match="drift"):
        RetrainConfig.model_validate({"validate": {"drift": "sometimes"}})
    with pytest.raises(ValueError, match="extra"):
        RetrainConfig.model_validate({"validate": {"drift_tolerances": {"unknown": 1}}})


def test_drift_stage_first_run_then_against_the_recorded_profile(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qdup.config import ValidateConfig
    from qdup.data.drift import DriftViolation
    from qdup.stages.drift import build_drift, build_profile

    def parquet(df: pd.DataFrame, name: str):
        path = tmp_path / name
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        return path

    prod_file, new_file = parquet(PRODUCTION, "prod.parquet"), parquet(NEW, "new.parquet")
    vocab_file = tmp_path / "vocabulary.txt"
    vocab_file.write_text("\n".join(vocabulary_of(PRODUCTION)) + "\n")
    (tmp_path / "first").mkdir()
    first = build_drift(prod_file, ValidateConfig(), tmp_path / "first", production_version=None)
    assert first["status"] == "no production" and (tmp_path / "first" / "drift.md").read_text().count(NO_PRODUCTION) == 1
    profile = build_profile(prod_file, vocab_file, tmp_path / "v1-drift")
    assert profile["rows"] == 4 and profile["files"] == ["pair_labels.npy", "profile.json", "question_hashes.npy"]

    cfg = ValidateConfig(drift="block", drift_tolerances=DriftTolerances(length_kl_divergence=10.0, unseen_question_share=0.5))
    (tmp_path / "second").mkdir()
    with pytest.raises(DriftViolation) as exc:
        build_drift(new_file, cfg, tmp_path / "second", "v1", tmp_path / "v1-drift", vocab_file)
    assert "label_flip" in str(exc.value) and exc.value.stem == "drift" and exc.value.report.suite == "qqp_drift.v1"
    assert "**FAILED**" in (tmp_path / "second" / "drift.md").read_text()  # the report is written before the refusal
    (tmp_path / "third").mkdir()
    warned = build_drift(new_file, cfg.model_copy(update={"drift": "warn"}), tmp_path / "third", "v1", tmp_path / "v1-drift", vocab_file)
    assert warned["status"] == "drifted" and len(warned["failing"]) == 3
