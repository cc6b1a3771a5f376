"""The trust features through real runs: baseline and intervals in metrics.json, drift against production
(first run, warn, block via the CLI), the baseline gate, the model card and `qdup reproduce`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from qdup.config import RetrainConfig
from qdup.registry.store import ArtifactStore

TINY = {
    "model": {"embedding_dim": 16, "lstm_units": 16},
    "train": {"epochs": 1, "batch_size": 64, "deterministic": True},
    "evaluate": {"bootstrap_resamples": 200},
    "split": {"n_train": 0.8, "n_test": 0.2},
}


def drifted_copy(src: Path, dst: Path) -> None:
    """The same kind of data with a third of the non-duplicates dropped (duplicate share 38% -> 48%) and every question longer."""
    df = pd.read_csv(src, sep="\t", dtype=str, keep_default_na=False)
    keep = (df["is_duplicate"] == "1") | (df.index % 3 != 0)
    df = df[keep].copy()
    for col in ("question1", "question2"):
        df[col] = df[col] + " and what would you say about it if you had to explain it to a friend in some detail"
    df.to_csv(dst, sep="\t", index=False)


def _qdup(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QDUP_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "qdup.cli", *args], env=env, capture_output=True, text=True, timeout=600)


def _cfg(source: Path, **overrides) -> RetrainConfig:
    return RetrainConfig.model_validate({"fetch": {"source": str(source)}, **TINY, **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_harness):
    """Run 1 on generated data (becomes production); `qdup run` with validate.drift=block on drifted data;
    run 2 on the drifted data (warn) requiring an impossible lift over the baseline."""
    from flows.retrain import retrain
    from qdup.data.demo import write_demo_tsv

    root = tmp_path_factory.mktemp("trust")
    home = root / "home"
    d1, d2 = root / "d1.tsv", root / "d2.tsv"
    write_demo_tsv(d1, rows=1500, seed=1)
    drifted_copy(d1, d2)
    old = os.environ.get("QDUP_HOME")
    os.environ["QDUP_HOME"] = str(home)
    try:
        first = retrain(_cfg(d1))
        block_cfg = root / "block.json"
        block_cfg.write_text(json.dumps({**TINY, "validate": {"drift": "block"}}))
        blocked = _qdup(home, "run", "--source", str(d2), "--config", str(block_cfg))
        second = retrain(_cfg(d2, publish={"min_lift_over_baseline": 0.5}))
    finally:
        if old is None:
            os.environ.pop("QDUP_HOME")
        else:
            os.environ["QDUP_HOME"] = old
    return {"first": first, "blocked": blocked, "second": second, "home": home, "store": ArtifactStore(str(home / "store"))}


@pytest.mark.slow
def test_metrics_hold_the_baseline_and_intervals_and_test_scores(runs):
    evaluate = Path(runs["first"]["evaluate"])
    metrics = json.loads((evaluate / "metrics.json").read_text())
    base = metrics["baseline"]
    assert base["threshold"]["chosen_on"] == "calibration" and 0 <= base["test"]["ranking"]["roc_auc"] <= 1
    for block in (metrics["intervals"], base["intervals"]):
        assert block["resamples"] == 200
        for name in ("roc_auc", "pr_auc", "accuracy"):
            m = block["metrics"][name]
            assert m["low"] <= m["high"]
    roc = metrics["intervals"]["metrics"]["roc_auc"]
    assert roc["low"] <= metrics["test"]["ranking"]["roc_auc"] <= roc["high"]
    assert metrics["lift_over_baseline"]["metric"] == "roc_auc"
    assert metrics["gate"]["split"] == "calibration" and metrics["gate"]["test"] == "reported only"
    for block in (metrics["intervals"], base["intervals"], metrics["lift_over_baseline"]):
        assert block["method"].startswith("cluster bootstrap") and 0 < block["groups"] <= metrics["test"]["rows"]
    scores = pd.read_parquet(evaluate / "test_scores.parquet")
    assert len(scores) == metrics["test"]["rows"] and scores["is_duplicate"].sum() == metrics["test"]["duplicates"]
    assert {"qid1", "qid2"} <= set(scores.columns)
    cal = pd.read_parquet(evaluate / "calibration_scores.parquet")
    assert len(cal) == metrics["calibration"]["rows"]


@pytest.mark.slow
def test_first_run_records_the_profile_and_the_version_keeps_it_and_its_card(runs):
    store = runs["store"]
    version = runs["first"]["version"]
    m = store.manifest(version)
    assert m["drift"]["status"] == "no production" and "profile recorded" in m["drift"]["message"]
    assert {"profile/profile.json", "profile/question_hashes.npy", "profile/pair_labels.npy", "card.md",
            "evaluation/test_scores.parquet", "evaluation/calibration_scores.parquet", "drift/drift.md"} <= set(m["files"])
    assert m["metrics"]["baseline"]["test"]["ranking"]["roc_auc"] == pytest.approx(
        json.loads((Path(runs["first"]["evaluate"]) / "metrics.json").read_text())["baseline"]["test"]["ranking"]["roc_auc"]
    )
    card = (store.open_version(version) / "card.md").read_text()
    assert version in card and "lexical baseline" in card


@pytest.mark.slow
def test_blocking_drift_fails_the_cli_run_naming_the_expectations(runs):
    blocked = runs["blocked"]
    assert blocked.returncode == 2, blocked.stderr[-2000:]
    assert "drift against production " + runs["first"]["version"] in blocked.stderr
    assert "expect_" in blocked.stderr and "validate.drift" in blocked.stderr
    assert runs["store"].aliases()["production"] == runs["first"]["version"]


@pytest.mark.slow
def test_warned_drift_is_named_and_the_baseline_gate_refuses(runs):
    store = runs["store"]
    second = runs["second"]
    assert second["published"] == "true" and second["promoted"] == "false"
    drift = json.loads((Path(second["drift"]) / "stage.json").read_text())["manifest"]
    assert drift["status"] == "drifted" and drift["mode"] == "warn" and drift["production_version"] == runs["first"]["version"]
    assert drift["failing"] and all("expect_" in line for line in drift["failing"])
    m = store.manifest(second["version"])
    assert m["drift"]["failing"] == drift["failing"]
    gate = m["compared_against"]
    assert gate["promote"] is False and "lexical baseline" in gate["reason"] and "min_lift_over_baseline" in gate["reason"]
    assert gate["baseline"]["ok"] is False and gate["baseline"]["min_lift"] == 0.5
    # Production was re-scored with its own served scorer on the challenger's gate rows it never saw, paired with it on
    # the same cluster-bootstrap resamples; the baseline check reads the calibration split.
    roc = gate["comparisons"]["roc_auc"]
    paired = roc["paired_difference"]
    assert gate["split"] == "gate" and gate["version"] == runs["first"]["version"] and paired["resamples"] == 200
    assert paired["n"] == gate["rows"]["pairs"] <= m["splits"]["gate"]["rows"]
    assert paired["method"].startswith("cluster bootstrap") and paired["groups"] > 0
    assert "challenger - production roc_auc" in roc["text"] and "question clusters" in roc["text"]
    assert gate["baseline"]["split"] == "calibration"


@pytest.mark.slow
def test_card_command_shows_model_vs_baseline_with_intervals(runs):
    out = _qdup(runs["home"], "card", "production")
    assert out.returncode == 0, out.stderr
    assert "| metric | model | model 95% interval | lexical baseline | baseline 95% interval | lift |" in out.stdout
    assert runs["first"]["version"] in out.stdout
    missing = _qdup(runs["home"], "card", "nosuchalias")
    assert missing.returncode == 2


@pytest.mark.slow
def test_reproduce_production_matches(runs):
    out = _qdup(runs["home"], "reproduce", "production")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "reproduced: dataset, splits, vocabulary, training, threshold and metrics match exactly" in out.stdout
    # Nothing was published or promoted by the reproduction.
    assert runs["store"].aliases()["production"] == runs["first"]["version"]
