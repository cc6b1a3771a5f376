"""The gate judges what a version serves: its duplicate decisions and its default search, against production's, on the
gate split; and the test split chooses nothing (permuting its labels changes reported figures only)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qdup.config import RetrainConfig, SearchConfig

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

SMALL = {"model": {"embedding_dim": 16, "lstm_units": 16}, "train": {"epochs": 3, "batch_size": 64, "deterministic": True},
         "evaluate": {"bootstrap_resamples": 200}}
ROWS = 1500


def _config(data: Path, store: Path) -> RetrainConfig:
    return RetrainConfig.model_validate({"fetch": {"source": str(data)}, "split": {"n_train": 0.8, "n_test": 0.2},
                                         "publish": {"store_url": str(store)}, **SMALL})


def _run(config: RetrainConfig, home: Path) -> dict[str, str]:
    from flows.retrain import retrain

    old = os.environ.get("QDUP_HOME")
    os.environ["QDUP_HOME"] = str(home)
    try:
        return retrain(config)
    finally:
        if old is None:
            os.environ.pop("QDUP_HOME")
        else:
            os.environ["QDUP_HOME"] = old


def _permute_test_labels(src: Path, dst: Path, n_test: int) -> None:
    df = pd.read_csv(src, sep="\t", keep_default_na=False, dtype=str)
    labels = df["is_duplicate"].to_numpy().copy()
    rng = np.random.default_rng(5)
    labels[-n_test:] = rng.permutation(labels[-n_test:])
    assert (labels != df["is_duplicate"].to_numpy()).any()
    df.assign(is_duplicate=labels).to_csv(dst, sep="\t", index=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run on generated data, and one on the same data with the test rows' labels permuted (separate stores)."""
    from qdup.data.demo import write_demo_tsv

    root = tmp_path_factory.mktemp("judge")
    data, permuted = root / "demo.tsv", root / "permuted.tsv"
    write_demo_tsv(data, rows=ROWS, seed=3)
    _permute_test_labels(data, permuted, int(ROWS * 0.2))
    first = _run(_config(data, root / "store-a"), root / "home-a")
    second = _run(_config(permuted, root / "store-b"), root / "home-b")
    return {"root": root, "first": first, "second": second, "config": _config(data, root / "store-a")}


def _served(label: str, model_dir: Path, search: dict, decided_by: str | None = None, reranker=None):
    from qdup.registry.judge import ServedVersion
    from qdup.serving.predictor import load_inference

    predictor = load_inference(model_dir)
    if reranker is not None:
        predictor.reranker = reranker
    if decided_by is not None:
        predictor.decided_by = decided_by
    return ServedVersion(label, predictor, search)


def _judge(challenger, production, rows, cfg: RetrainConfig):
    from qdup.registry.judge import gate_metrics, judge

    return judge(challenger, production, rows, tolerances=gate_metrics(cfg.publish.tolerances, cfg.publish.gate_metric, 0.0),
                 search_cfg=SearchConfig(), resamples=200, seed=cfg.seed, level=0.95)


@pytest.fixture(scope="module")
def parts(runs):
    """The first run's outputs, a reranker fitted on shuffled calibration labels (all else equal), the gate rows and the
    MRR@10 of each search method on them."""
    from qdup.data.splits import read_split, write_split
    from qdup.evaluation.reranker_io import load_reranker
    from qdup.registry.judge import _search_figures
    from qdup.search.retrieval import query_part
    from qdup.stages.rerank import build_rerank

    out = runs["first"]
    cfg = runs["config"]
    splits_dir, model_dir = Path(out["splits"]), Path(out["export"]) / "model"
    shuffled_splits = runs["root"] / "shuffled-splits"
    shutil.copytree(splits_dir, shuffled_splits)
    cal = read_split(splits_dir / "calibration.parquet")
    cal["is_duplicate"] = np.random.default_rng(0).permutation(cal["is_duplicate"].to_numpy())
    write_split(cal, shuffled_splits / "calibration.parquet")
    evaluation = json.loads((Path(out["evaluate"]) / "stage.json").read_text())["manifest"]
    rerank_out = runs["root"] / "shuffled-rerank"
    rerank_out.mkdir()
    build_rerank(shuffled_splits, Path(out["vocab"]) / "vocabulary.txt", Path(out["train"]) / "encoder.keras",
                 evaluation["metrics"]["threshold"]["value"], cfg.model, cfg.evaluate, cfg.rerank, cfg.seed, rerank_out)
    bad_reranker = load_reranker(rerank_out / "reranker")
    rows = read_split(splits_dir / "gate.parquet")
    part = query_part(rows)
    retrieval = json.loads((Path(out["retrieval"]) / "stage.json").read_text())["manifest"]
    hybrid = retrieval["hybrid"]
    probe = _served("probe", model_dir, {"method": "dense"})
    mrr = {}
    for method in ("dense", "lexical", "hybrid", "reranked"):
        search = {"method": method, "hybrid": hybrid}
        mrr[method] = float(_search_figures(probe.__class__("probe", probe.predictor, search), part, SearchConfig())["mrr@10"].mean())
    return {"model_dir": model_dir, "bad_reranker": bad_reranker, "rows": rows, "hybrid": hybrid, "mrr": mrr, "cfg": cfg}


def test_the_flow_publishes_with_the_gate_stage_record(runs):
    from qdup.registry.store import ArtifactStore

    store = ArtifactStore(str(runs["root"] / "store-a"))
    manifest = store.manifest(runs["first"]["version"])
    gate = manifest["compared_against"]
    assert gate["promote"] is True and gate["reason"] == "first version: becomes production"
    assert gate["split"] == "gate" and gate["rows"]["pairs"] > 0
    assert set(gate["challenger"]["metrics"]) == {"roc_auc", "accuracy", "retrieval_mrr@10", "retrieval_recall@10"}
    assert {"gate/decision.json", "gate/fitted_questions.npy"} <= set(manifest["files"])
    # The record names what serves: the scorer that decides and the search method the index uses by default.
    assert gate["challenger"]["decided_by"] in ("reranker", "encoder")
    assert gate["challenger"]["search"].split(" ")[0] == manifest["index"]["search_defaults"]["method"]


def test_a_challenger_whose_reranker_is_worse_is_refused_with_its_message(parts):
    search = {"method": "hybrid", "hybrid": parts["hybrid"]}
    production = _served("20260101T000000000Z-aaaaaa", parts["model_dir"], search, decided_by="reranker")
    challenger = _served("challenger", parts["model_dir"], search, decided_by="reranker", reranker=parts["bad_reranker"])
    record = _judge(challenger, production, parts["rows"], parts["cfg"])
    assert record["promote"] is False
    roc = record["comparisons"]["roc_auc"]
    assert roc["ok"] is False and roc["challenger"] < roc["production"]
    reason = record["reason"]
    assert reason.startswith("refused") and "served decision roc_auc on the gate split" in reason
    assert f"{roc['challenger']:.4f}" in reason and f"{roc['production']:.4f}" in reason
    assert "20260101T000000000Z-aaaaaa" in reason and "95% CI" in reason
    # The search is the same on both sides: the hybrid ranks without the reranker.
    assert record["comparisons"]["retrieval_mrr@10"]["ok"] is True


def test_a_challenger_whose_default_search_is_worse_is_refused_with_its_message(parts):
    mrr = parts["mrr"]
    best, worst = max(mrr, key=mrr.get), min(mrr, key=mrr.get)
    assert mrr[worst] < mrr[best]
    production = _served("20260101T000000000Z-bbbbbb", parts["model_dir"], {"method": best, "hybrid": parts["hybrid"]})
    challenger = _served("challenger", parts["model_dir"], {"method": worst, "hybrid": parts["hybrid"]})
    record = _judge(challenger, production, parts["rows"], parts["cfg"])
    assert record["promote"] is False
    comparison = record["comparisons"]["retrieval_mrr@10"]
    assert comparison["ok"] is False and comparison["challenger"] == pytest.approx(mrr[worst])
    assert "served search retrieval_mrr@10 on the gate split" in record["reason"] and worst in record["reason"]
    # The decisions are the same model's: not what refused it.
    assert record["comparisons"]["roc_auc"]["ok"] is True


def test_a_challenger_better_on_both_is_promoted(parts):
    mrr = parts["mrr"]
    best, worst = max(mrr, key=mrr.get), min(mrr, key=mrr.get)
    production = _served("20260101T000000000Z-cccccc", parts["model_dir"], {"method": worst, "hybrid": parts["hybrid"]},
                         decided_by="reranker", reranker=parts["bad_reranker"])
    challenger = _served("challenger", parts["model_dir"], {"method": best, "hybrid": parts["hybrid"]}, decided_by="reranker")
    record = _judge(challenger, production, parts["rows"], parts["cfg"])
    assert record["promote"] is True, record["reason"]
    assert record["comparisons"]["roc_auc"]["challenger"] > record["comparisons"]["roc_auc"]["production"]
    assert record["comparisons"]["retrieval_mrr@10"]["paired_difference"]["difference"] > 0


def _stage(out: dict[str, str], name: str) -> dict:
    return json.loads((Path(out[name]) / "stage.json").read_text())["manifest"]


def test_permuting_the_test_labels_changes_reported_figures_only(runs):
    first, second = runs["first"], runs["second"]
    a_model, b_model = Path(first["export"]) / "model", Path(second["export"]) / "model"
    ta, tb = (json.loads((m / "threshold.json").read_text()) for m in (a_model, b_model))
    assert ta["threshold"] == tb["threshold"]
    assert ta["reranker"]["threshold"] == tb["reranker"]["threshold"]
    assert ta["reranker"]["serves"] == tb["reranker"]["serves"] and ta["reranker"]["why"] == tb["reranker"]["why"]
    # The trees (an ONNX model) and the features' fitted parts, byte for byte.
    from qdup.evaluation.reranker_io import DATA_FILES, MODEL_FILE

    assert MODEL_FILE == "reranker_trees.onnx"
    assert all((a_model / n).read_bytes() == (b_model / n).read_bytes() for n in DATA_FILES)
    ra, rb = _stage(first, "retrieval"), _stage(second, "retrieval")
    assert (ra["hybrid"], ra["best"], ra["val"]) == (rb["hybrid"], rb["best"], rb["val"])
    ga, gb = _stage(first, "gate")["record"], _stage(second, "gate")["record"]
    assert ga == gb  # the gate decision and every figure it read
    # What is reported on test did change.
    ea, eb = _stage(first, "evaluate"), _stage(second, "evaluate")
    assert ea["metrics"]["test"]["ranking"]["roc_auc"] != eb["metrics"]["test"]["ranking"]["roc_auc"]
    assert ra["test"] != rb["test"]
