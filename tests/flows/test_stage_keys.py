"""Stage keys cover the code a stage runs: editing a stage changes its key and its descendants' keys only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATASET = "ab" * 32
KEYS = "import json; from flows.retrain import stage_keys; from qdup.config import RetrainConfig; " \
       f"print(json.dumps(stage_keys(RetrainConfig(), {DATASET!r})))"


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("qdup", "tasks", "flows", "data_contracts"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


# A library reported at another version, as after an upgrade on this host.
REPORTED = "import qdup.stagecache as s; real = s.installed_version; " \
           "s.installed_version = lambda d: {reported!r}.get(d) or real(d); "


def keys_of(root: Path, reported: dict[str, str] | None = None) -> dict[str, str]:
    # The copy comes first on the path, so its modules (not the installed ones) are fingerprinted.
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = (REPORTED.format(reported=reported) if reported else "") + KEYS
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def edited(root: Path, module: str, old: str, new: str, count: int = -1):
    path = root / module
    text = path.read_text()
    assert old in text, f"{old!r} not in {module}"
    path.write_text(text.replace(old, new, count))
    return lambda: path.write_text(text)


@pytest.mark.parametrize(
    ("module", "old", "new", "changed"),
    [
        # The example: which texts the vocabulary is fitted on.
        ("qdup/stages/vocab.py", "return list(part[\"question1\"]) + list(part[\"question2\"])",
         "return list(part[\"question1\"])", {"vocab", "train", "evaluate", "rerank", "retrieval", "export", "index", "gate"}),
        # The Prefect task module of a stage counts too.
        ("tasks/splits.py", "log(f\"[splits] {r['split']}", "log(f\"[splits]  {r['split']}",
         {"splits", "vocab", "train", "evaluate", "rerank", "retrieval", "export", "index", "gate"}),
        # A helper the stage body calls, found through its imports.
        ("qdup/model/batches.py", "def epoch_seed(", "def epoch_seed(  ", {"train", "evaluate", "rerank", "retrieval", "export", "index", "gate"}),
        # The reranker's features: the rerank stage, and what takes the reranker (retrieval, export, index).
        ("qdup/evaluation/reranker.py", "def pair_groups(", "def pair_groups(  ", {"rerank", "retrieval", "export", "index", "gate"}),
        # The drift check hangs off validate: nothing downstream depends on it.
        ("qdup/stages/drift.py", "def build_profile(", "def build_profile(  ", {"drift"}),
    ],
)
def test_editing_a_stage_changes_its_key_and_its_descendants_only(project_copy, module, old, new, changed):
    before = keys_of(project_copy)
    restore = edited(project_copy, module, old, new)
    try:
        after = keys_of(project_copy)
    finally:
        restore()
    assert {stage for stage in before if before[stage] != after[stage]} == changed
    assert keys_of(project_copy) == before  # restoring the code restores the keys


@pytest.fixture(scope="module")
def base_keys(project_copy) -> dict[str, str]:
    return keys_of(project_copy)


def test_a_resource_file_is_in_the_key_of_the_stages_that_read_it(project_copy, base_keys):
    before = base_keys
    restore = edited(project_copy, "qdup/resources/drift.json", "{", '{"_note": "edited",', count=1)
    try:
        after = keys_of(project_copy)
    finally:
        restore()
    # The gate reads a production's data profile (drift's format) when it keeps no fitted-question record.
    assert {stage for stage in before if before[stage] != after[stage]} == {"drift", "gate"}
    assert keys_of(project_copy) == before


@pytest.mark.parametrize(
    ("distribution", "changed"),
    [
        # faiss builds the index and the retrieval evaluation's search; nothing before them. The export carries the
        # search reranker the retrieval stage fits, so its key follows the retrieval stage's.
        ("faiss-cpu", {"retrieval", "export", "index", "gate"}),
        # scikit-learn computes evaluation figures and the pair reranker, and what takes their outputs.
        ("scikit-learn", {"evaluate", "rerank", "retrieval", "export", "index", "gate"}),
        # TensorFlow computes from the vocabulary on; validation and splits never load it.
        ("tensorflow", {"vocab", "train", "evaluate", "rerank", "retrieval", "export", "index", "gate"}),
        # Found from the imports, not from a list: the fast form (ONNX, run by ONNX Runtime) and the reranker's
        # hashed features (farmhash) compute evaluation, reranking, retrieval, the export and the index.
        ("onnxruntime", {"evaluate", "rerank", "retrieval", "export", "index", "gate"}),
        ("onnx", {"evaluate", "rerank", "retrieval", "export", "index", "gate"}),
        ("pyfarmhash", {"evaluate", "rerank", "retrieval", "export", "index", "gate"}),
    ],
)
def test_a_library_version_is_in_the_key_of_the_stages_that_compute_with_it(project_copy, base_keys, distribution, changed):
    before = base_keys
    after = keys_of(project_copy, {distribution: "999.0"})
    assert {stage for stage in before if before[stage] != after[stage]} == changed


def test_the_repository_and_its_copy_agree(project_copy):
    assert keys_of(project_copy) == keys_of(REPO)


def test_the_drift_and_gate_keys_name_the_production_version_and_nothing_else_does():
    from flows.retrain import stage_keys
    from qdup.config import RetrainConfig

    none, v1 = stage_keys(RetrainConfig(), DATASET), stage_keys(RetrainConfig(), DATASET, "20260101T000000000Z-abcdef")
    assert {stage for stage in none if none[stage] != v1[stage]} == {"drift", "gate"}
