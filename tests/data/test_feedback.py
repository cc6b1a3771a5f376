"""Feedback as training data: the pair hash, the resolution rule, the join into train/negatives (never test), the
snapshot's data contract and its content address."""

from __future__ import annotations

import pandas as pd
import pytest

from qdup.data.contracts import ContractViolation
from qdup.data.feedback import join_training, pair_sha256, read_feedback, resolve
from qdup.stages.feedback import SNAPSHOT_FILE, build_feedback_snapshot


def rows(*items: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame([
        {"id": i + 1, "at": f"2026-12-07T00:00:{i:02d}.000000+00:00", "version": "v", "question1": a, "question2": b,
         "label": label, "source": "api", "note": None, "pair_sha256": pair_sha256(a, b)}
        for i, (a, b, label) in enumerate(items)
    ])


def test_the_pair_hash_ignores_order_case_and_spacing_only():
    assert pair_sha256("How do I  learn?", "What is x?") == pair_sha256(" what is X? ", "how do i learn?")
    assert pair_sha256("How do I learn?", "What is x?") != pair_sha256("How do I learn", "What is x?")


def test_majority_wins_and_a_tie_goes_to_the_latest_label():
    f = rows(("a", "b", "duplicate"), ("B", "a", "not_duplicate"), ("a", "b", "not_duplicate"),  # 2:1 -> not_duplicate
             ("c", "d", "not_duplicate"), ("d", "c", "duplicate"),  # 1:1 -> the latest, duplicate
             ("e", "f", "duplicate"))
    resolved, conflicts = resolve(f)
    assert conflicts == 2
    assert resolved[["question1", "label"]].values.tolist() == [["a", "not_duplicate"], ["d", "duplicate"], ["e", "duplicate"]]
    assert resolved["id"].tolist() == [3, 5, 6]


def _parts():
    def frame(ids, pairs, dup):
        return pd.DataFrame({"id": ids, "qid1": [p[0] for p in pairs], "qid2": [p[1] for p in pairs],
                             "question1": [f"q{p[0]}" for p in pairs], "question2": [f"q{p[1]}" for p in pairs],
                             "is_duplicate": pd.Series([dup] * len(ids), dtype="int8")})
    parts = {"train": frame([1], [(1, 2)], 1), "negatives": frame([2], [(3, 4)], 0), "val": frame([3], [(5, 6)], 1),
             "calibration": frame([4], [(7, 8)], 0), "test": frame([5], [(9, 10)], 1)}
    return parts, pd.concat(parts.values(), ignore_index=True)


def test_feedback_joins_train_and_negatives_never_test_and_keeps_question_ids():
    parts, all_rows = _parts()
    f = rows(("Q1", "new question", "duplicate"), ("q3", "q5", "not_duplicate"), ("q9", "another", "duplicate"),
             ("x", "q10 ", "not_duplicate"))
    out, facts = join_training(parts, all_rows, f)
    assert facts == {"rows": 4, "pairs": 4, "conflicting_pairs": 0, "resolution": facts["resolution"],
                     "held_out_test_question": 2, "added": {"train": 1, "negatives": 1}}
    added = out["train"].iloc[-1]
    assert (added["qid1"], added["qid2"], added["id"], added["is_duplicate"]) == (1, 11, 6, 1)  # q1 keeps qid 1; a new qid 11
    neg = out["negatives"].iloc[-1]
    assert (neg["qid1"], neg["qid2"], neg["id"]) == (3, 5, 7)
    for name in ("val", "calibration", "test"):
        assert out[name].equals(parts[name])


def test_the_snapshot_is_named_by_its_sha256_reused_when_unchanged_and_refused_when_bad(tmp_path):
    f = rows(("a", "b", "duplicate"), ("b", "a", "not_duplicate"))
    manifest, folder, reused = build_feedback_snapshot(f, tmp_path, "qdup_feedback.v1")
    assert not reused and folder.name == manifest["sha256"] and manifest["conflicting_pairs"] == 1
    assert manifest["rows"] == 2 and manifest["labels"] == {"duplicate": 1, "not_duplicate": 1}
    back = read_feedback(folder / SNAPSHOT_FILE)
    assert back[["id", "question1", "question2", "label", "pair_sha256"]].values.tolist() == \
        f[["id", "question1", "question2", "label", "pair_sha256"]].values.tolist()
    again, folder2, reused2 = build_feedback_snapshot(f.copy(), tmp_path, "qdup_feedback.v1")
    assert reused2 and folder2 == folder and again == manifest
    (folder / SNAPSHOT_FILE).write_bytes(b"damaged")
    _, _, reused3 = build_feedback_snapshot(f, tmp_path, "qdup_feedback.v1")
    assert not reused3  # a damaged snapshot is not trusted: written again
    empty, _, _ = build_feedback_snapshot(f.iloc[:0], tmp_path, "qdup_feedback.v1")
    assert empty["rows"] == 0
    bad = rows(("a", "  ", "duplicate"), ("a", "b", "maybe"))
    with pytest.raises(ContractViolation) as err:
        build_feedback_snapshot(bad, tmp_path / "bad", "qdup_feedback.v1")
    assert "question2" in str(err.value) and "label" in str(err.value)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_a_snapshot_read_back_writes_the_same_bytes(tmp_path):
    """What `qdup reproduce` relies on: the copy a version holds, written again, is the same snapshot (same sha256)."""
    from qdup.data.feedback import write_feedback

    f = rows(("a", "b", "duplicate"), ("c", "d", "not_duplicate"))
    f.loc[1, "note"] = "a note"
    first = write_feedback(f, tmp_path / "one.parquet")
    second = write_feedback(read_feedback(tmp_path / "one.parquet"), tmp_path / "two.parquet")
    assert first == second and read_feedback(tmp_path / "two.parquet")["note"].tolist()[1] == "a note"


def test_reproduction_pins_the_versions_own_snapshot():
    from qdup.registry.reproduce import reproduction_config

    sha = "ab" * 32
    manifest = {"id": "v", "dataset": {"sha256": "cd" * 32}, "parameters": {"feedback": {"enabled": True}},
                "feedback": {"snapshot_sha256": sha}}
    cfg = reproduction_config(manifest)
    assert cfg.feedback.enabled and cfg.feedback.snapshot == sha
    assert reproduction_config({**manifest, "feedback": None}).feedback.snapshot is None
