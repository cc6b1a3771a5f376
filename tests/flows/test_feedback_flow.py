"""Feedback through real runs: judgements of version 1 join the next run's train and negatives (never test), the
lineage and the card name the snapshot, `qdup lineage --feedback` finds the version again, and a run with no new
feedback reuses every stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from qdup.config import RetrainConfig
from qdup.data.splits import read_split
from qdup.fileio import read_json
from qdup.registry.feedback import FeedbackLog
from qdup.registry.store import ArtifactStore

TINY = {
    "model": {"embedding_dim": 16, "lstm_units": 16},
    "train": {"epochs": 1, "batch_size": 64, "deterministic": True},
    "evaluate": {"bootstrap_resamples": 100},
    "split": {"n_train": 0.8, "n_test": 0.2},
}
NEW = ["how do i tune a bicycle chain at home", "is a violin harder to learn than a cello", "why do cats purr at night"]


def _qdup(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QDUP_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "qdup.cli", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_harness):
    from flows.retrain import retrain
    from qdup.data.demo import write_demo_tsv

    root = tmp_path_factory.mktemp("feedback-flow")
    home, data = root / "home", root / "demo.tsv"
    write_demo_tsv(data, rows=600, seed=5)
    old = os.environ.get("QDUP_HOME")
    os.environ["QDUP_HOME"] = str(home)
    try:
        base = RetrainConfig.model_validate({"fetch": {"source": str(data)}, **TINY})
        first = retrain(base)
        store = ArtifactStore(str(home / "store"))
        v1 = first["version"]
        train, test = read_split(Path(first["splits"]) / "train.parquet"), read_split(Path(first["splits"]) / "test.parquet")
        a, b, c = train["question1"].iloc[0], train["question1"].iloc[1], train["question2"].iloc[2]
        judged = [
            (a, NEW[0], "duplicate"),                       # -> train
            (b, c, "not_duplicate"), (c, b, "not_duplicate"),  # one pair twice -> negatives
            (NEW[1], NEW[2], "duplicate"), (NEW[2], NEW[1], "not_duplicate"), (NEW[1].upper(), NEW[2], "not_duplicate"),
            (test["question1"].iloc[0], NEW[0], "duplicate"),  # shares a question with test: held out
        ]
        FeedbackLog(store).append([{"version": v1, "question1": q1, "question2": q2, "label": lab, "source": "api"}
                                   for q1, q2, lab in judged])
        with_feedback = base.model_copy(update={"feedback": base.feedback.model_copy(update={"enabled": True})})
        second = retrain(with_feedback)
        third = retrain(with_feedback)
    finally:
        if old is None:
            os.environ.pop("QDUP_HOME")
        else:
            os.environ["QDUP_HOME"] = old
    return {"first": first, "second": second, "third": third, "home": home, "store": store, "a": a, "train": train}


@pytest.mark.slow
def test_feedback_joins_train_and_negatives_and_never_test(runs):
    s1, s2 = Path(runs["first"]["splits"]), Path(runs["second"]["splits"])
    manifest = runs["store"].manifest(runs["second"]["version"])
    fb = manifest["feedback"]
    assert fb["rows"] == 7 and fb["labels"] == {"duplicate": 3, "not_duplicate": 4} and fb["conflicting_pairs"] == 1
    assert fb["pairs"] == 4 and fb["held_out_test_question"] == 1 and fb["added"] == {"train": 1, "negatives": 2}
    for name in ("val", "calibration", "test"):
        assert manifest["splits"][name]["content_sha256"] == runs["store"].manifest(runs["first"]["version"])["splits"][name]["content_sha256"]
    t1, t2 = read_split(s1 / "train.parquet"), read_split(s2 / "train.parquet")
    n1, n2 = read_split(s1 / "negatives.parquet"), read_split(s2 / "negatives.parquet")
    assert len(t2) == len(t1) + 1 and len(n2) == len(n1) + 2
    added = t2.iloc[-1]
    assert added["question1"] == runs["a"] and added["question2"] == NEW[0] and added["is_duplicate"] == 1
    assert added["qid1"] == runs["train"]["qid1"].iloc[0]  # a known question keeps its id (its duplicate cluster)
    assert n2.iloc[-1]["question1"].lower() in (NEW[1], NEW[2])  # the conflict: 2 of 3 said not duplicate
    test = read_split(s2 / "test.parquet")
    assert NEW[0] not in set(test["question1"]) | set(test["question2"])
    # The version carries the snapshot itself; its sha256 is the snapshot's name.
    assert manifest["files"]["feedback/feedback.parquet"]["sha256"] == fb["snapshot_sha256"]
    assert manifest["stages"]["feedback"]["key"] == fb["snapshot_sha256"]


@pytest.mark.slow
def test_lineage_and_card_name_the_snapshot_and_lead_back(runs):
    store, home, v2 = runs["store"], runs["home"], runs["second"]["version"]
    sha = store.manifest(v2)["feedback"]["snapshot_sha256"]
    text = _qdup(home, "lineage", "-m", v2)
    assert text.returncode == 0, text.stderr
    assert f"feedback   snapshot sha256 {sha}  (7 rows, 3 duplicate, 4 not; 1 conflicting pairs; +1 train, +2 negatives, 1 held out" in text.stdout
    back = _qdup(home, "lineage", "--feedback", sha[:12], "--json")
    assert back.returncode == 0, back.stderr
    assert [r["id"] for r in json.loads(back.stdout)] == [v2]
    card = (store.open_version(v2) / "card.md").read_text()
    assert "## Feedback" in card and sha in card and "1 were held out" in card
    assert "## Feedback" not in (store.open_version(runs["first"]["version"]) / "card.md").read_text()
    bad = _qdup(home, "lineage", "--feedback", "xyz")
    assert bad.returncode == 2 and "4 to 64 hex digits" in bad.stderr


@pytest.mark.slow
def test_a_run_with_no_new_feedback_reuses_every_stage(runs):
    record = read_json(Path(runs["third"]["run_record"]))
    assert record["stages"]["feedback"]["key"] == read_json(Path(runs["second"]["run_record"]))["stages"]["feedback"]["key"]
    # Drift and the gate compare with the version production names when the run starts, which is part of their keys:
    # the second run moved production, so they measure again; every stage that reads the data or the feedback is reused.
    rebuilt = {name for name, s in record["stages"].items() if not s["cached"]}
    reused = {name for name, s in record["stages"].items() if s["cached"]}
    assert rebuilt <= {"drift", "gate"}
    assert {"fetch", "feedback", "validate", "splits", "vocab", "train", "evaluate", "rerank", "retrieval", "export", "index"} <= reused
    assert runs["third"]["version"] == runs["second"]["version"] and runs["third"]["published"] == "false"


@pytest.mark.slow
def test_feedback_stats_and_export(runs, tmp_path):
    home, v1 = runs["home"], runs["first"]["version"]
    got = _qdup(home, "feedback", "stats", "-m", v1, "--json", "--resamples", "200")
    assert got.returncode == 0, got.stderr
    (row,) = json.loads(got.stdout)
    assert row["version"] == v1 and row["counts"] == {"duplicate": 3, "not_duplicate": 4}
    a = row["agreement"]
    assert a["n"] == 7 and a["low"] <= a["agreement"] <= a["high"] and a["groups"] <= 7
    table = _qdup(home, "feedback", "stats")
    assert table.returncode == 0 and v1 in table.stdout and "agreement" in table.stdout
    out = tmp_path / "fb.parquet"
    exported = _qdup(home, "feedback", "export", "--since", "2000-01-01", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert len(pd.read_parquet(out)) == 7
    assert _qdup(home, "feedback", "export", "--since", "2999-01-01", "--out", str(out)).returncode == 0
    assert len(pd.read_parquet(out)) == 0
    wrong = _qdup(home, "feedback", "export", "--since", "yesterday", "--out", str(out))
    assert wrong.returncode == 2 and "--since 'yesterday'" in wrong.stderr
