"""Comparing a reproduction with its version: exact matches required, every difference listed."""

from __future__ import annotations

import copy

import pytest

from qdup.registry.reproduce import compare_reproduction, reproduction_text
from tests.registry.manifests import full_manifest


def test_an_identical_rerun_is_reproduced_even_with_another_encoder_file_and_timings(tmp_path):
    original = full_manifest(tmp_path)
    rerun = copy.deepcopy(original)
    rerun["id"] = "20260102T000000000Z-fedcba"
    rerun["model"]["encoder_sha256"] = "f" * 64  # a .keras file records when it was saved
    for h in rerun["model"]["history"]:
        h["seconds"] += 1.0
    r = compare_reproduction(original, rerun)
    assert r["reproduced"] and r["summary"].startswith("reproduced")
    assert all(c["match"] for c in r["checks"].values())
    assert r["checks"]["metrics"]["compared"] > 50  # every number, intervals and baseline included
    assert not r["informational"]["encoder_sha256"]["match"]
    assert r["original"] == original["id"] and r["reproduction"] == rerun["id"]


def test_the_smallest_metric_difference_is_listed(tmp_path):
    original = full_manifest(tmp_path)
    rerun = copy.deepcopy(original)
    rerun["metrics"]["test"]["roc_auc"] = original["metrics"]["test"]["roc_auc"] + 1e-15
    rerun["splits"]["test"]["content_sha256"] = "9" * 64
    rerun["libraries"]["tensorflow"] = "2.22.0"
    r = compare_reproduction(original, rerun)
    assert not r["reproduced"]
    diffs = r["checks"]["metrics"]["differences"]
    assert [d["path"] for d in diffs] == ["test.roc_auc"] and diffs[0]["difference"] > 0
    assert [d["path"] for d in r["checks"]["splits"]["differences"]] == ["test.content_sha256"]
    assert r["summary"] == "NOT reproduced: splits, metrics differ (also differ: libraries)"
    text = reproduction_text(r)
    assert "test.roc_auc:" in text and "splits" in text and "libraries" in text


def test_a_loss_history_difference_and_a_missing_block_are_differences(tmp_path):
    original = full_manifest(tmp_path)
    rerun = copy.deepcopy(original)
    rerun["model"]["history"][2]["val_loss"] = 0.2
    del rerun["metrics"]["baseline"]
    r = compare_reproduction(original, rerun)
    assert r["checks"]["training"]["differences"][0]["path"] == "history[2].val_loss"
    missing = [d for d in r["checks"]["metrics"]["differences"] if d["path"].startswith("baseline.")]
    assert missing and all(d["new"] == "<absent>" for d in missing)


def test_booleans_are_not_numbers(tmp_path):
    original = full_manifest(tmp_path)
    rerun = copy.deepcopy(original)
    rerun["metrics"]["test"]["at_reference_threshold"]["n"] = True
    original["metrics"]["test"]["at_reference_threshold"]["n"] = 1
    assert not compare_reproduction(original, rerun)["checks"]["metrics"]["match"]


def test_reproduction_config_is_the_recorded_one_pinned_and_not_promoting(tmp_path):
    from qdup.config import RetrainConfig
    from qdup.registry.reproduce import reproduction_config

    m = full_manifest(tmp_path)
    m["parameters"]["train"]["epochs"] = 7
    cfg = reproduction_config(m)
    assert cfg.train.epochs == 7 and cfg.fetch.sha256 == "a" * 64 and cfg.publish.promote is False
    assert cfg.fetch.source == RetrainConfig().fetch.source and cfg.seed == 42


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda m: m.pop("parameters"), "records no parameters"),
        (lambda m: m["dataset"].pop("sha256"), "no dataset sha256"),
        (lambda m: m["parameters"]["train"].update(retired_option=1), r"recorded parameter train.retired_option"),
    ],
)
def test_unreproducible_manifests_are_refused_in_one_line(tmp_path, change, match):
    from qdup.errors import ConfigError
    from qdup.registry.reproduce import reproduction_config

    m = full_manifest(tmp_path)
    change(m)
    with pytest.raises(ConfigError, match=match):
        reproduction_config(m)
