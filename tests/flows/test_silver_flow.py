"""The silver stage in the retrain flow: run between vocabulary and training when search negatives are on, cached by its
own key, gated by its contract, and named in the version's lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdup.config import RetrainConfig
from qdup.data.silver import SILVER_FILE, read_silver
from qdup.registry.lineage import lineage_dict, lineage_text
from qdup.registry.publish import GateDecision, lineage_manifest
from qdup.stagecache import StageResult
from tests.registry.manifests import stages

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def _config(source: Path, **train) -> RetrainConfig:
    return RetrainConfig.model_validate({"until": "silver", "fetch": {"source": str(source)},
                                         "split": {"n_train": 0.8, "n_test": 0.2}, "train": train})


def test_the_flow_builds_the_silver_split_once_and_the_lineage_names_it(demo_tsv, qdup_home, tmp_path):
    from flows.retrain import retrain

    off = retrain(_config(demo_tsv))
    assert "silver" not in off and "vocab" in off
    first = retrain(_config(demo_tsv, search_negatives=1, search_negatives_depth=4))
    folder = Path(first["silver"])
    silver = read_silver(folder / SILVER_FILE)
    stage = json.loads((folder / "stage.json").read_text())
    entry = stage["manifest"]["silver"]
    assert len(silver) == entry["rows"] > 0 and silver.groupby("query_qid").size().max() <= 4
    assert (folder / "validation-silver.json").is_file() and entry["suite"] == "qdup_silver.v1"

    second = retrain(_config(demo_tsv, search_negatives=3, search_negatives_depth=4))
    record = json.loads(Path(second["run_record"]).read_text())
    # How many neighbours join a batch is training's business: the split is reused.
    assert record["stages"]["silver"]["cached"] is True and second["silver"] == first["silver"]
    deeper = retrain(_config(demo_tsv, search_negatives=1, search_negatives_depth=6))
    assert deeper["silver"] != first["silver"]

    result = StageResult(stage="silver", key=stage["key"], path=folder, cached=False, manifest=stage["manifest"])
    decision = GateDecision(True, "first version: becomes production", None, 0.9, None, None)
    manifest = {"id": "20260101T000000000Z-abcdef", "created": "2026-01-01T00:00:00+00:00", "files": {},
                **lineage_manifest(RetrainConfig(), {**stages(tmp_path), "silver": result}, {}, decision)}
    lineage = lineage_dict(manifest)
    assert lineage["splits"]["silver"]["content_sha256"] == entry["content_sha256"]
    assert lineage["splits"]["silver"]["stage_key"] == stage["key"] and lineage["validation"]["split_suites"]["silver"] == entry["suite"]
    assert "split      silver" in lineage_text(manifest)
