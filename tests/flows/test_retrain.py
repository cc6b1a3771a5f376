"""Tests for flows/retrain.py under a real Prefect server, and for `qdup run` as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qdup.config import RetrainConfig
from qdup.errors import DataContractError, FetchError, QdupError
from tests.bad_inputs import BAD_INPUTS

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _config(source: Path, until: str = "splits", **split) -> RetrainConfig:
    return RetrainConfig.model_validate(
        {"until": until, "fetch": {"source": str(source)}, "split": split or {"n_train": 0.8, "n_test": 0.2}}
    )


def test_flow_writes_validated_splits_and_skips_them_when_rerun(demo_tsv, qdup_home):
    from flows.retrain import retrain

    first = retrain(_config(demo_tsv))
    splits_dir = Path(first["splits"])
    manifest = json.loads((splits_dir / "stage.json").read_text())["manifest"]
    for name in ("train", "negatives", "val", "test", "calibration"):
        table = pq.read_table(splits_dir / f"{name}.parquet")
        assert table.num_rows == manifest["splits"][name]["rows"] > 0
        assert (splits_dir / f"validation-{name}.md").is_file()
    assert manifest["n_train"] == 480 and manifest["n_test"] == 120
    assert (Path(first["validate"]) / "validation.json").is_file()

    second = retrain(_config(demo_tsv))
    record = json.loads(Path(second["run_record"]).read_text())
    assert {k: v["cached"] for k, v in record["stages"].items()} == {
        "fetch": True, "validate": True, "drift": True, "splits": True
    }
    assert second["splits"] == first["splits"]
    assert record["prefect"]["flow_run_id"]

    changed = retrain(_config(demo_tsv, n_train=0.7, n_test=0.2))
    record = json.loads(Path(changed["run_record"]).read_text())
    assert record["stages"]["validate"]["cached"] is True and record["stages"]["splits"]["cached"] is False


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_the_flow_and_writes_no_split(case, demo_tsv, qdup_home, tmp_path):
    from flows.retrain import retrain

    builder, words = BAD_INPUTS[case]
    bad = builder(demo_tsv, tmp_path / f"{case}.tsv")
    with pytest.raises(QdupError) as err:
        retrain(_config(bad))
    for word in words:
        assert word in str(err.value)
    assert not (qdup_home / "runs" / "stages" / "splits").exists()
    stage_dirs = qdup_home / "runs" / "stages" / "validate"
    # No stage output, whole or partial; the key's lock file may stay (an flock is released, not deleted).
    assert not stage_dirs.exists() or not [p for p in stage_dirs.iterdir() if p.suffix != ".lock"]
    if isinstance(err.value, DataContractError) and "expect_" in str(err.value):
        reports = list((qdup_home / "runs" / "history").glob("*/validation-raw.md"))
        assert len(reports) == 1 and "FAILED" in reports[0].read_text()
    # A failed run leaves its record: status, the error, the stages done and their folders.
    records = list((qdup_home / "runs" / "history").glob("*/run.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["status"] == "failed" and record["error"]["message"] == str(err.value)
    if isinstance(err.value, FetchError):  # refused while fetching: no stage finished
        assert record["stages_done"] == [] and record["error"]["type"] == "FetchError"
    else:
        assert record["stages_done"] == ["fetch"] and Path(record["stages"]["fetch"]["path"]).is_dir()


def _qdup(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QDUP_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "qdup.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_demo_data_then_run_until_splits(tmp_path):
    home = tmp_path / "home"
    data = tmp_path / "demo.tsv"
    made = _qdup("demo-data", str(data), "--rows", "500", "--seed", "3", home=home)
    assert made.returncode == 0, made.stderr
    assert data.is_file() and "500" in made.stdout
    ran = _qdup("run", "--source", str(data), "--until", "splits", "--n-train", "0.8", "--n-test", "0.2", home=home)
    assert ran.returncode == 0, ran.stderr
    splits_line = next(line for line in ran.stdout.splitlines() if line.strip().startswith("splits"))
    assert (Path(splits_line.split()[-1]) / "train.parquet").is_file()


def test_cli_exits_non_zero_naming_the_problem(demo_tsv, tmp_path):
    bad = BAD_INPUTS["label_out_of_set"][0](demo_tsv, tmp_path / "bad.tsv")
    ran = _qdup("run", "--source", str(bad), "--until", "splits", "--n-train", "0.8", "--n-test", "0.2", home=tmp_path / "h")
    assert ran.returncode == 2
    assert "expect_column_values_to_be_in_set" in ran.stderr and "is_duplicate" in ran.stderr
    assert not (tmp_path / "h" / "runs" / "stages" / "splits").exists()


SMALL_MODEL = {"model": {"embedding_dim": 32, "lstm_units": 32}, "train": {"epochs": 4, "batch_size": 64}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness):
    """The whole flow, every stage, on 4,000 generated rows with a small model."""
    from flows.retrain import retrain
    from qdup.data.demo import write_demo_tsv

    root = tmp_path_factory.mktemp("full")
    data = root / "demo.tsv"
    write_demo_tsv(data, rows=4000, seed=11)
    old = os.environ.get("QDUP_HOME")
    os.environ["QDUP_HOME"] = str(root / "home")
    try:
        config = RetrainConfig.model_validate(
            {"fetch": {"source": str(data)}, "split": {"n_train": 0.8, "n_test": 0.2}, **SMALL_MODEL}
        )
        outputs = retrain(config)
        again = retrain(config)
        # Only the search settings change: train is reused, retrieval and index rerun, and the gate compares
        # production's stored retrieval figure with the challenger's on the same retrieval split.
        gated = retrain(config.model_copy(update={
            "publish": config.publish.model_copy(update={"gate_metric": "retrieval_mrr@10"}),
            "search": config.search.model_copy(update={"rrf_k": 30}),
        }))
    finally:
        if old is None:
            os.environ.pop("QDUP_HOME")
        else:
            os.environ["QDUP_HOME"] = old
    return {"outputs": outputs, "again": again, "gated": gated, "root": root, "data": data}


@pytest.mark.slow
def test_full_flow_trains_evaluates_and_exports(trained):
    outputs = trained["outputs"]
    metrics = json.loads((Path(outputs["evaluate"]) / "metrics.json").read_text())
    assert metrics["threshold"]["chosen_on"] == "calibration"
    assert metrics["test"]["ranking"]["roc_auc"] > 0.65  # well above chance (0.5) after 4 tiny epochs
    assert (Path(outputs["evaluate"]) / "roc_curve.png").stat().st_size > 1000
    vocab = json.loads((Path(outputs["vocab"]) / "stage.json").read_text())["manifest"]
    assert vocab["size"] > 500 and 0 <= vocab["oov_rate"]["test"] < 0.2
    history = json.loads((Path(outputs["train"]) / "stage.json").read_text())["manifest"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    record = json.loads(Path(trained["again"]["run_record"]).read_text())
    # Only the drift check and the gate run again: both now compare with the version the first run published.
    assert {name for name, stage in record["stages"].items() if not stage["cached"]} == {"drift", "gate"}
    assert trained["again"]["published"] == "false"  # identical to the first version: nothing new to publish
    assert record["status"] == "completed" and record["error"] is None


@pytest.mark.slow
def test_the_reranker_is_fitted_measured_exported_and_on_the_card(trained):
    from qdup.registry.store import ArtifactStore

    outputs = trained["outputs"]
    rerank = json.loads((Path(outputs["rerank"]) / "rerank_metrics.json").read_text())
    assert rerank["reranker"]["fitted_on"] == "calibration" and rerank["test"]["rows"] > 100
    assert rerank["reranker"]["test"]["ranking"]["roc_auc"] > 0.65
    assert set(rerank["differences"]) == {"reranker_minus_baseline", "reranker_minus_encoder"}
    evaluated = json.loads((Path(outputs["evaluate"]) / "metrics.json").read_text())
    # The encoder alone and the baseline are the evaluate stage's own figures, at their own thresholds.
    assert rerank["encoder"]["test"]["ranking"]["roc_auc"] == pytest.approx(evaluated["test"]["ranking"]["roc_auc"], abs=1e-6)
    assert rerank["baseline"]["test"]["ranking"]["roc_auc"] == pytest.approx(
        evaluated["baseline"]["test"]["ranking"]["roc_auc"], abs=1e-9)
    store = ArtifactStore(str(trained["root"] / "home" / "store"))
    version = outputs["version"]
    manifest = store.manifest(version)
    assert {"model/reranker.json", "model/reranker_trees.onnx", "model/reranker_bm25.json"} <= set(manifest["files"])
    assert manifest["metrics"]["reranker"]["reranker"]["roc_auc"] == rerank["reranker"]["test"]["ranking"]["roc_auc"]
    card = (store.open_version(version) / "card.md").read_text()
    assert "## Pair reranker, encoder and lexical baseline (test split)" in card
    assert "pair reranker - lexical baseline roc_auc" in card and "pair reranker - encoder alone roc_auc" in card


def test_a_reranker_without_enough_labelled_calibration_pairs_stops_before_training(tmp_path):
    home = tmp_path / "home"
    data, config = tmp_path / "demo.tsv", tmp_path / "config.json"
    assert _qdup("demo-data", str(data), "--rows", "200", "--seed", "3", home=home).returncode == 0
    config.write_text(json.dumps({"rerank": {"folds": 20}}))
    ran = _qdup("run", "--source", str(data), "--until", "rerank", "--n-train", "0.8", "--n-test", "0.2", "--config", str(config),
                home=home)
    assert ran.returncode == 2
    line = next(x for x in ran.stderr.splitlines() if x.startswith("qdup: error:"))
    assert line.startswith("qdup: error: rerank.enabled:") and "rerank.folds=20" in line
    assert (home / "runs" / "stages" / "splits").is_dir() and not (home / "runs" / "stages" / "train").exists()


@pytest.mark.slow
def test_an_unchanged_rerun_publishes_nothing(trained):
    from qdup.registry.store import ArtifactStore

    first, again = trained["outputs"], trained["again"]
    assert first["published"] == "true" and again["published"] == "false"
    assert again["version"] == first["version"]
    # The only other version is the one the gated run (search settings changed) published.
    assert ArtifactStore(str(trained["root"] / "home" / "store")).versions() == [first["version"], trained["gated"]["version"]]


@pytest.mark.slow
def test_the_manifest_confusion_matrix_is_the_evaluations(trained):
    from qdup.registry.store import ArtifactStore

    outputs = trained["outputs"]
    manifest = ArtifactStore(str(trained["root"] / "home" / "store")).manifest(outputs["version"])
    evaluated = json.loads((Path(outputs["evaluate"]) / "metrics.json").read_text())["test"]["at_threshold"]["confusion_matrix"]
    assert manifest["metrics"]["test"]["confusion_matrix"] == evaluated
    assert sum(evaluated.values()) == manifest["splits"]["test"]["rows"]


@pytest.mark.slow
def test_exported_model_ranks_a_paraphrase_above_an_unrelated_question(trained):
    from qdup.serving.predictor import load_inference

    predictor = load_inference(Path(trained["outputs"]["export"]) / "model")
    sim = predictor.similarity(
        ["How do I learn Python?", "How do I learn Python?"],
        ["What is the best way to learn Python?", "What is the capital of France?"],
    )
    assert sim[0] > sim[1]


@pytest.mark.slow
def test_cli_predict_for_a_pair_and_a_file(trained, tmp_path):
    model = trained["outputs"]["export"]
    one = _qdup("predict", "--model", model, "How do I learn Python?", "What is the best way to learn Python?", home=tmp_path)
    assert one.returncode == 0, one.stderr
    # The line leads with the decision and the score that made it: `duplicate=false (reranker 0.0300 < 0.4400) ...`.
    decision, why, rest = re.fullmatch(r"(duplicate=(?:true|false)) \((.+?)\) (.+)\n", one.stdout).groups()
    fields = dict(part.split("=") for part in [decision, *rest.split()])
    assert set(fields) == {"similarity", "threshold", "duplicate", "reranker_score", "reranker_threshold"}
    decided_by = json.loads((Path(model) / "model" / "threshold.json").read_text())["reranker"]["serves"]
    score, threshold = ((fields["reranker_score"], fields["reranker_threshold"]) if decided_by
                        else (fields["similarity"], fields["threshold"]))
    assert why == f"{'reranker' if decided_by else 'encoder cosine'} {score} {'>=' if fields['duplicate'] == 'true' else '<'} {threshold}"
    assert fields["duplicate"] == str(float(score) >= float(threshold)).lower()
    as_json = json.loads(_qdup("predict", "--model", model, "--json", "How do I learn Python?", "Where is Paris?",
                               home=tmp_path).stdout)
    assert set(as_json) == {"similarity", "threshold", "duplicate", "reranker_score", "reranker_threshold", "decided_by"}
    assert 0 <= as_json["reranker_score"] <= 1

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("id\tquestion1\tquestion2\n7\tHow do I learn Python?\tHow can I learn Python?\n9\tWhat is AI?\tWhere is Rome?\n")
    scored = _qdup("predict", "--model", model, "--pairs", str(pairs), "--out", str(tmp_path / "o.parquet"), home=tmp_path)
    assert scored.returncode == 0, scored.stderr
    table = pq.read_table(tmp_path / "o.parquet").to_pydict()
    assert table["id"] == [7, 9] and len(table["similarity"]) == 2 and len(table["reranker_score"]) == 2

    blank = _qdup("predict", "--model", model, "How do I learn Python?", "   ", home=tmp_path)
    assert blank.returncode == 2 and blank.stderr.startswith("qdup: error: question 2 is empty; give two questions: qdup predict ")
    assert "Traceback" not in blank.stderr


@pytest.mark.slow
def test_the_version_has_its_index_and_retrieval_metrics(trained):
    from qdup.registry.store import ArtifactStore
    from qdup.search.index import load_index

    store = ArtifactStore(str(trained["root"] / "home" / "store"))
    version = trained["outputs"]["version"]
    manifest = store.manifest(version)
    retrieval = manifest["retrieval"]
    assert set(retrieval["test"]) == {"lexical", "dense", "hybrid", "reranked"}
    # `reranked` is the search reranker's (search.rerank_fit's default): fitted on the selection queries' hybrid top 20,
    # its selection figures out-of-fold; it travels in the version's model beside the pair reranker.
    by = retrieval["reranked_by"]
    assert by["reranker"] == "search" and by["depth"] == 20 and by["val"] == "out-of-fold"
    assert 0 < by["duplicates"] < by["rows"] <= 20 * retrieval["counts"]["val_queries"]
    model_files = manifest["files"]
    assert {"model/search_reranker.json", "model/search_reranker_trees.onnx"} <= set(model_files)
    assert all(0 <= retrieval["test"][m]["mrr@10"] <= 1 for m in retrieval["test"])
    assert retrieval["test"]["dense"]["recall@100"] >= retrieval["test"]["dense"]["recall@10"] > 0
    assert retrieval["best"] in {"lexical", "dense", "hybrid", "reranked"} and retrieval["counts"]["test_queries"] > 0
    index = load_index(store.open_version(version) / "index", expected_model_version=version)
    assert manifest["index"]["count"] == len(index) > 1000
    assert index.corpus["dataset_sha256"] == manifest["dataset"]["sha256"]
    assert index.search_defaults["method"] == retrieval["best"]
    assert index.search_defaults["hybrid"] == retrieval["hybrid"]


@pytest.mark.slow
def test_gate_on_a_retrieval_metric(trained):
    from qdup.registry.store import ArtifactStore

    store = ArtifactStore(str(trained["root"] / "home" / "store"))
    first, gated = trained["outputs"]["version"], trained["gated"]
    assert gated["published"] == "true" and gated["version"] != first
    decision = store.manifest(gated["version"])["compared_against"]
    # Judged on the gate split against the first version, each side as it serves (its own default search); the first
    # version's fitted parts saw the same splits, so only pairs whose question text (standardised) they hold under
    # another question id are left out.
    assert decision["split"] == "gate" and decision["version"] == first
    rows = decision["rows"]
    assert rows["pairs"] + rows["left_out_seen_by_production"] == store.manifest(gated["version"])["splits"]["gate"]["rows"]
    assert rows["left_out_seen_by_production"] < rows["pairs"] / 10
    assert {"roc_auc", "accuracy", "retrieval_mrr@10", "retrieval_recall@10"} <= set(decision["comparisons"])
    # Same encoder and reranker: the pair decisions are the same on both sides.
    roc = decision["comparisons"]["roc_auc"]
    assert roc["challenger"] == pytest.approx(roc["production"]) and roc["ok"]
    assert (gated["promoted"] == "true") == decision["promote"]


@pytest.mark.slow
def test_cli_search_lists_indexed_questions(trained, tmp_path):
    import pandas as pd

    home = trained["root"] / "home"
    df = pd.read_csv(trained["data"], sep="\t", keep_default_na=False)
    query = df.question1[0]
    found = _qdup("search", "--model", "production", query, "-k", "5", "--json", home=home)
    assert found.returncode == 0, found.stderr
    body = json.loads(found.stdout)
    indexed = set(df.question1) | set(df.question2)
    assert len(body["results"]) == 5 and all(r["question"] in indexed for r in body["results"])
    assert body["method"] in {"dense", "lexical", "hybrid", "reranked"}
    from qdup.registry.store import ArtifactStore

    production = ArtifactStore(str(home / "store")).open_version(body["version"])
    threshold = json.loads((production / "model" / "reranker.json").read_text())["threshold"]
    assert all(r["duplicate"] == (r["reranker_score"] >= threshold) for r in body["results"])
    dense = json.loads(_qdup("search", "--model", "production", query, "-k", "3", "--json", "--method", "dense",
                             home=home).stdout)
    assert dense["results"][0]["question"] == query and dense["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert dense["results"][0]["duplicate"] is True


@pytest.mark.slow
def test_the_search_reranker_benchmark_measures_what_the_retrieval_stage_measured(trained):
    """bench.search_rerank reads a finished run and fits the search reranker as the retrieval stage did: the same
    out-of-fold selection figure; beside it the other ways of ordering the first candidates, and the served cost."""
    from bench.search_rerank import latest_record, measure, render

    home = trained["root"] / "home"
    record = latest_record(home)
    stage = json.loads((Path(record["stages"]["retrieval"]["path"]) / "retrieval.json").read_text())
    got = measure(home, latency_queries=15)
    assert set(got["test"]) == {"hybrid", "pair reranker", "search reranker", "search reranker without the encoder",
                                "one model (pairs + candidates)"}
    assert got["selection"]["search reranker"]["mrr@10"]["estimate"] == pytest.approx(stage["reranked"]["val"]["mrr@10"])
    assert got["test"]["search reranker"]["mrr@10"]["estimate"] == pytest.approx(stage["reranked"]["test"]["mrr@10"])
    assert got["selection"]["hybrid"]["mrr@10"]["estimate"] == pytest.approx(stage["hybrid"]["val"]["mrr@10"])
    assert got["rows"]["selection"] == stage["reranked_by"]["rows"]
    lat = got["latency"]
    assert lat["queries"] == 15 and lat["warmup"] == 5 and lat["reranked"]["n"] == lat["hybrid"]["n"] == 10
    assert 0.5 <= got["pair_roc_auc"]["pair reranker"] <= 1
    page = render({"command": "python -m bench.search_rerank", **got})
    assert "| search reranker |" in page and "reranked − hybrid" in page
