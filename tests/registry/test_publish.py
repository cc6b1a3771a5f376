"""Tests for tasks/publish.py and tasks/lineage.py: the gate, and lineage through real flow runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qdup.config import RetrainConfig
from qdup.errors import ConfigError
from qdup.registry import lineage, publish
from qdup.registry.store import ArtifactStore


def test_gate_value_reads_a_pair_metric_on_calibration_never_a_retrieval_one():
    from qdup.registry.gate import gate_value

    metrics = {"calibration": {"ranking": {"roc_auc": 0.8, "pr_auc": 0.6}, "at_threshold": {"accuracy": 0.7, "f1": None}},
               "test": {"ranking": {"roc_auc": 0.5, "pr_auc": 0.4}, "at_threshold": {"accuracy": 0.3, "f1": 0.2}}}
    assert gate_value(metrics, "pr_auc") == 0.6 and gate_value(metrics, "accuracy") == 0.7
    assert gate_value(metrics, "accuracy", split="test") == 0.3  # reported, when asked for by name
    with pytest.raises(ValueError, match="undefined for this model on calibration"):
        gate_value(metrics, "f1")
    with pytest.raises(ValueError, match="served search"):
        gate_value(metrics, "retrieval_mrr@10")


def test_code_version_names_the_checkout():
    info = publish.code_version()
    assert info["version"] and (info["git_commit"] is None or len(info["git_commit"]) == 40)


TINY = {"model": {"embedding_dim": 16, "lstm_units": 16}, "train": {"epochs": 3, "batch_size": 64}}


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, prefect_harness):
    """Run A on dataset 1, run B on dataset 2, run C on dataset 1 with a crippled trainer."""
    from flows.retrain import retrain
    from qdup.data.demo import write_demo_tsv

    root = tmp_path_factory.mktemp("lineage")
    d1, d2 = root / "d1.tsv", root / "d2.tsv"
    write_demo_tsv(d1, rows=2500, seed=1)
    write_demo_tsv(d2, rows=2500, seed=2)
    old = os.environ.get("QDUP_HOME")
    os.environ["QDUP_HOME"] = str(root / "home")
    split = {"n_train": 0.8, "n_test": 0.2}
    try:
        a = retrain(RetrainConfig.model_validate({"fetch": {"source": str(d1)}, "split": split, **TINY}))
        b = retrain(RetrainConfig.model_validate({"fetch": {"source": str(d2)}, "split": split, **TINY}))
        bad_train = {**TINY["train"], "epochs": 1, "learning_rate": 1e-7}
        c = retrain(RetrainConfig.model_validate({"fetch": {"source": str(d1)}, "split": split, "model": TINY["model"], "train": bad_train}))
    finally:
        if old is None:
            os.environ.pop("QDUP_HOME")
        else:
            os.environ["QDUP_HOME"] = old
    return {"a": a, "b": b, "c": c, "store": ArtifactStore(str(root / "home" / "store")), "home": root / "home"}


@pytest.mark.slow
def test_runs_publish_versions_with_lineage_both_ways(three_runs):
    store = three_runs["store"]
    a, b, c = (three_runs[k]["version"] for k in "abc")
    assert store.versions() == sorted([a, b, c])
    ma, mb = store.manifest(a), store.manifest(b)
    assert ma["dataset"]["sha256"] != mb["dataset"]["sha256"]
    for m in (ma, mb):
        assert set(m["files"]) >= {"model/inference.keras", "model/encoder.keras", "model/threshold.json", "vocabulary.txt",
                                   "evaluation/metrics.json", "evaluation/roc_curve.png", "validation/raw-validation.json"}
        assert m["prefect"]["flow_run_id"] and m["code"]["version"] and m["libraries"]["tensorflow"]
        assert m["parameters"]["model"]["embedding_dim"] == 16
        assert m["splits"]["test"]["rows"] == 500
        assert set(m["stages"]) == {"fetch", "validate", "drift", "splits", "vocab", "train", "evaluate", "rerank", "retrieval", "export", "index", "gate"}
    # forward: dataset -> versions
    from_d1 = [r["id"] for r in lineage.versions_from_dataset(store, ma["dataset"]["sha256"][:10])]
    assert from_d1 == sorted([a, c])
    # backward: version -> dataset, splits, vocabulary, model
    chain = lineage.lineage_dict(ma | {"aliases": store.aliases_of(a)})
    assert chain["dataset"]["sha256"] == ma["dataset"]["sha256"]
    assert chain["model"]["encoder_sha256"] == ma["model"]["encoder_sha256"]
    assert chain["splits"]["train"]["content_sha256"] == ma["splits"]["train"]["content_sha256"]


@pytest.mark.slow
def test_worse_challenger_is_published_but_not_promoted(three_runs):
    store = three_runs["store"]
    b, c = three_runs["b"]["version"], three_runs["c"]["version"]
    assert three_runs["c"]["promoted"] == "false" and store.resolve("latest") == c
    assert store.resolve("production") != c
    gate = store.manifest(c)["compared_against"]
    assert gate["promote"] is False and gate["reason"].startswith("refused") and gate["split"] == "gate"
    # b was judged against a on b's own gate rows (another dataset), less those a's fitted parts saw.
    judged = store.manifest(b)["compared_against"]
    assert judged["version"] == three_runs["a"]["version"] and judged["rows"]["production_seen_from"]


def _qdup(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QDUP_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "qdup.cli", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_lineage_commands_offline(three_runs):
    home = three_runs["home"]
    rows = json.loads(_qdup(home, "versions", "--json").stdout)
    assert [r["id"] for r in rows] == three_runs["store"].versions()
    assert {"id", "created", "dataset_sha256", "metrics", "aliases"} <= set(rows[0])
    assert len(rows[0]["dataset_sha256"]) == 64
    chain = json.loads(_qdup(home, "lineage", "latest", "--json").stdout)
    assert chain["version"] == three_runs["c"]["version"] and len(chain["vocabulary"]["sha256"]) == 64
    listed = json.loads(_qdup(home, "lineage", "--dataset", rows[0]["dataset_sha256"][:8], "--json").stdout)
    assert {r["id"] for r in listed} == {three_runs["a"]["version"], three_runs["c"]["version"]}
    text = _qdup(home, "lineage", "production").stdout
    assert "dataset    sha256" in text and "split      train" in text
    pred = _qdup(home, "predict", "--model", "production", "--json", "How do I learn Python?", "How can I learn Python?")
    assert pred.returncode == 0, pred.stderr
    assert set(json.loads(pred.stdout)) == {"similarity", "threshold", "duplicate", "reranker_score", "reranker_threshold",
                                            "decided_by"}
    bad = _qdup(home, "show", "../../etc")
    assert bad.returncode == 2 and "invalid alias name" in bad.stderr


def test_dataset_prefix_must_be_hex(tmp_path):
    with pytest.raises(ConfigError):
        lineage.versions_from_dataset(ArtifactStore(str(tmp_path)), "../x")
