"""Tests for qdup/stagecache.py: content-keyed stage outputs that skip unchanged work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdup.log import is_warning, warning_text
from qdup.stagecache import MANIFEST, installed_version, library_versions, run_stage, stage_key


def _build(calls):
    def build(out):
        calls.append(out)
        (out / "x.txt").write_text("x")
        return {"n": len(calls)}

    return build


def test_unchanged_inputs_skip_and_changed_inputs_rerun(qdup_home):
    calls, logs = [], []
    first = run_stage("demo", {"data": "abc", "p": 1}, _build(calls), logs.append)
    again = run_stage("demo", {"p": 1, "data": "abc"}, _build(calls), logs.append)
    other = run_stage("demo", {"data": "abd", "p": 1}, _build(calls), logs.append)
    assert (first.cached, again.cached, other.cached) == (False, True, False)
    assert len(calls) == 2 and again.path == first.path != other.path
    assert again.manifest == {"n": 1}
    assert any("skipping" in line for line in logs)


def test_a_failed_build_leaves_nothing_and_is_retried(qdup_home):
    def broken(out):
        (out / "half").write_text("half")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        run_stage("demo", {"k": 1}, broken, lambda _: None)
    calls = []
    result = run_stage("demo", {"k": 1}, _build(calls), lambda _: None)
    assert not result.cached and len(calls) == 1
    assert sorted(p.name for p in result.path.iterdir()) == ["stage.json", "x.txt"]


def test_key_ignores_dict_order_but_not_values():
    assert stage_key("s", {"a": 1, "b": 2}) == stage_key("s", {"b": 2, "a": 1})
    assert stage_key("s", {"a": 1}) != stage_key("t", {"a": 1}) != stage_key("s", {"a": 2})


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_each_stage_records_its_own_peak_rss_and_frees_what_it_left(qdup_home):
    import json

    import numpy as np

    from qdup.memory import peak_rss_bytes

    held = []

    def big(out):
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        held.append(float(block.sum()))
        return {}

    def small(out):
        return {}

    first = run_stage("bigstage", {"k": 1}, big, lambda _: None)
    second = run_stage("smallstage", {"k": 1}, small, lambda _: None)
    peaks = [json.loads((r.path / "stage.json").read_text())["peak_rss_bytes"] for r in (first, second)]
    # The big stage's peak holds its 300 MiB; the next stage's peak starts again from what the process holds after it.
    assert peaks[0] - peaks[1] > 250 * 2**20, peaks
    assert peak_rss_bytes() < peaks[0]


def _nested_build(calls):
    def build(out):
        calls.append(out)
        (out / "x.txt").write_text("x")
        (out / "model").mkdir()
        (out / "model" / "weights.bin").write_bytes(bytes(range(256)))
        return {"n": len(calls)}

    return build


def warnings_in(logs: list[str]) -> list[str]:
    """The lines a stage's log marked as warnings (what the terminal shows under the stage line)."""
    return [warning_text(line) for line in logs if is_warning(line)]


@pytest.mark.parametrize("damage", ["edited", "truncated", "missing"])
def test_a_damaged_output_is_rebuilt_with_a_warning_naming_it(qdup_home, damage):
    calls, logs = [], []
    first = run_stage("demo", {"k": damage}, _nested_build(calls), logs.append)
    recorded = json.loads((first.path / MANIFEST).read_text())["outputs"]
    assert sorted(recorded) == ["model/weights.bin", "x.txt"]
    assert run_stage("demo", {"k": damage}, _nested_build(calls), logs.append).cached and warnings_in(logs) == []
    weights = first.path / "model" / "weights.bin"
    if damage == "edited":  # same size, other bytes
        weights.write_bytes(bytes(reversed(range(256))))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:10])
    else:
        weights.unlink()
    again = run_stage("demo", {"k": damage}, _nested_build(calls), logs.append)
    assert not again.cached and len(calls) == 2 and again.path == first.path
    assert weights.read_bytes() == bytes(range(256)) and again.manifest == {"n": 2}
    [warning] = warnings_in(logs)
    assert warning.startswith("stage output not reused: ") and str(weights) in warning and "rebuilding" in warning
    # Nothing of the damaged folder is left beside the rebuilt one.
    assert sorted(p.name for p in first.path.parent.iterdir()) == [first.path.name, first.path.name + ".lock"]
    assert run_stage("demo", {"k": damage}, _nested_build(calls), logs.append).cached and len(calls) == 2


def test_a_folder_without_output_hashes_is_rebuilt(qdup_home):
    calls, logs = [], []
    first = run_stage("demo", {"k": 1}, _build(calls), logs.append)
    record = json.loads((first.path / MANIFEST).read_text())
    del record["outputs"]  # as a stage.json written before outputs were recorded
    (first.path / MANIFEST).write_text(json.dumps(record))
    again = run_stage("demo", {"k": 1}, _build(calls), logs.append)
    assert not again.cached and len(calls) == 2
    [warning] = warnings_in(logs)
    assert str(first.path / MANIFEST) in warning and "no output hashes" in warning
    assert "outputs" in json.loads((again.path / MANIFEST).read_text())


def test_library_versions_come_from_what_a_stage_imports():
    export = library_versions("qdup.stages.export", "tasks.export")
    for distribution in ("onnx", "onnxruntime", "pyfarmhash", "tensorflow", "keras", "scikit-learn", "numpy"):
        assert export[distribution] == installed_version(distribution) is not None
    validate = library_versions("qdup.stages.validate", "tasks.validate")
    assert "great_expectations" in validate and "pandas" in validate
    assert not {"tensorflow", "keras", "onnxruntime", "faiss-cpu"} & set(validate)
    # Neither the project's own packages nor the standard library count as libraries.
    assert not {"qdup", "tasks", "flows", "json", "pathlib"} & set(export)
