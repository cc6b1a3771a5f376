"""What a newcomer meets first: one-line failures before TensorFlow or Prefect start, one way to name a version,
help with examples, readable progress, and demo output that says it was generated."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qdup.cli.common import Parser
from qdup.cli.main import make_parser
from qdup.cli.progress import StageLine, StageProgress, summary_line
from qdup.config import STAGES, RetrainConfig
from qdup.data.generated import generated_record, record_generated
from qdup.registry.card import model_card
from qdup.registry.publish import GateDecision, lineage_manifest
from qdup.registry.store import ArtifactStore
from tests.registry.manifests import stages as stage_records

ROOT = Path(__file__).resolve().parents[2]
# Runs one command in a fresh interpreter, then prints which heavy libraries it imported.
PROBE = """
import sys
from qdup.cli.main import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:  # argparse's own answer to a mistake
    rc = exc.code
print(sorted(m for m in ("tensorflow", "prefect", "uvicorn") if m in sys.modules))
sys.exit(rc)
"""


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "QDUP_HOME": str(home / "qdup"), "PREFECT_HOME": str(home / "prefect"), "PYTHONPATH": str(ROOT)}


def _qdup(home: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qdup.cli", *args], cwd=ROOT, env=_env(home), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _probe(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=_env(home), capture_output=True, text=True,
                          timeout=300, check=False)


def _published(home: Path) -> tuple[ArtifactStore, str]:
    store = ArtifactStore(str(home / "qdup" / "store"))
    (home / "threshold.json").write_text(json.dumps({"threshold": 0.5}))
    version = store.publish({"model/threshold.json": home / "threshold.json"}, {"dataset": {"sha256": "ab" * 32}})
    store.promote(version, "test")
    return store, version


# ------------------------------------------------------------------ 1. failures: one line, before the slow imports

MISTAKES = {
    "missing source": (["run", "--source", "does-not-exist.tsv"], "no such file; make a demo one with `qdup demo-data"),
    "predict: unknown version": (["predict", "--model", "nope", "a?", "b?"], "list versions with: qdup versions"),
    "predict: one question": (["predict", "only one?"], 'give exactly two questions (got 1): qdup predict "Q1?" "Q2?"'),
    "search: unknown version": (["search", "--model", "nope", "a?"], "list versions with: qdup versions"),
    "search: no query": (["search"], 'not both or neither: qdup search "How do I learn Python?"'),
    "promote: unknown version": (["promote", "--model", "nope"], "list versions with: qdup versions"),
    "promote: no version": (["promote"], "name a version: qdup promote --model VERSION"),
    "card: unknown version": (["card", "-m", "nope"], "list versions with: qdup versions"),
    "serve-model: unknown version": (["serve-model", "-m", "nope"], "list versions with: qdup versions"),
    "serve-model: bad port": (["serve-model", "--port", "70000"], "70000 is not a port in 1-65535 (see: qdup serve-model --help)"),
    "run: bad stage": (["run", "--until", "trian"], "invalid choice: 'trian'"),
}


@pytest.mark.parametrize("argv, advice", MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_is_one_line_with_exit_2_before_tensorflow_or_prefect_start(tmp_path, argv, advice):
    _published(tmp_path)  # a store with a version: "nope" is an unknown one (an empty store says how to make the first)
    done = _probe(tmp_path, *argv)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdup: error: ") and advice in lines[0], done.stderr
    # What makes the answer fast: neither TensorFlow nor Prefect (nor a server) was imported to give it.
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_qdup_command_itself_answers_a_missing_file_in_one_line(tmp_path):
    done = _qdup(tmp_path, "run", "--source", str(tmp_path / "missing.tsv"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"qdup: error: --source {tmp_path / 'missing.tsv'}: no such file; make a demo one with "
        "`qdup demo-data demo.tsv --rows 20000`, or give an http(s) URL"
    ]
    assert not (tmp_path / "prefect").exists() or not any((tmp_path / "prefect").iterdir())


# ------------------------------------------------------------------ 2. one way to name a version

def test_every_command_that_names_a_version_takes_model_and_m():
    parser = make_parser()
    commands = {"predict", "search", "mine", "serve-model", "card", "show", "lineage", "promote", "verify", "reproduce"}
    subs = _subparsers(parser)
    subs["index build"] = _subparsers(subs["index"])["build"]
    for name in [*commands, "index build"]:
        options = {s for a in subs[name]._actions for s in a.option_strings}
        assert {"-m", "--model"} <= options, name


def test_the_old_positional_spelling_works_with_one_deprecation_line(tmp_path):
    store, version = _published(tmp_path)
    old = _qdup(tmp_path, "show", version, "--json")
    new = _qdup(tmp_path, "show", "-m", version, "--json")
    default = _qdup(tmp_path, "show", "--json")  # production
    assert old.returncode == new.returncode == default.returncode == 0, old.stderr + new.stderr + default.stderr
    assert json.loads(old.stdout)["id"] == json.loads(new.stdout)["id"] == json.loads(default.stdout)["id"] == version
    assert old.stderr.splitlines() == [
        f"qdup: note: `qdup show VERSION` is deprecated and goes in the next release; write `qdup show --model {version}`"
    ]
    assert new.stderr == default.stderr == ""
    both = _qdup(tmp_path, "show", version, "-m", "latest")
    assert both.returncode == 2 and "give only --model VERSION" in both.stderr.splitlines()[-1]


# ------------------------------------------------------------------ 3. help that teaches

def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_summary_examples_and_every_flag_a_description():
    parser = make_parser()
    summaries = {a.dest: a.help for a in next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))._choices_actions}
    commands = _subparsers(parser)
    commands |= {f"index {k}": v for k, v in _subparsers(commands["index"]).items()}
    assert set(summaries) | {"index build"} == set(commands)
    for name, sub in commands.items():
        assert isinstance(sub, Parser), name
        if " " not in name:
            assert summaries[name] and "\n" not in summaries[name], name
        assert sub.epilog.startswith("examples:\n  qdup "), name
        assert all(line.startswith(f"  qdup {name.split()[0]}") for line in sub.epilog.splitlines()[1:]), name
        for action in sub._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no description"


def test_help_of_a_command_shows_its_examples(tmp_path):
    done = _qdup(tmp_path, "search", "--help")
    assert done.returncode == 0
    assert "examples:\n  qdup search \"How do I learn Python?\" -k 5\n" in done.stdout
    assert re.search(r"-k K\s+results per query \(default: 10\)", done.stdout)


def test_the_manual_names_every_stage_once_for_until():
    guide = (ROOT / "docs" / "guide" / "run.md").read_text(encoding="utf-8")
    listed = re.search(r"`--until ([a-z|]+)`", guide)
    assert listed and tuple(listed.group(1).split("|")) == STAGES


# ------------------------------------------------------------------ 4. progress a person can read

def _record(message: str, task: str | None = None, level: int = logging.INFO, name: str = "prefect.task_runs"):
    record = logging.LogRecord(name, level, __file__, 1, message, None, None)
    if task:
        record.task_name = task
    return record


class _Console:
    def __init__(self):
        self.printed: list[str] = []

    def print(self, text, **kwargs):
        self.printed.append(text)


def test_stage_lines_show_epochs_validation_loss_and_time_left():
    console = _Console()
    progress = StageProgress(console)
    progress.emit(_record("[fetch] unchanged inputs and parameters: skipping, reusing /x", "fetch"))
    progress.emit(_record("[vocab] running (key 123)", "vocabulary"))
    progress.emit(_record("[vocab] done in 2.0s -> /y", "vocabulary"))
    progress.emit(_record("[drift] running (key def)", "drift"))
    progress.emit(_record("[drift] WARNING: drift: 2 of 7 drift expectations failed (warning only)\nmore", "drift", logging.WARNING))
    progress.emit(_record("[drift] done in 1.0s -> /w", "drift"))
    progress.emit(_record("[train] running (key abc)", "train"))
    progress.emit(_record("epoch 1/10 loss=4.0000 val_loss=3.5000 (10.0s)", "train"))
    progress.emit(_record("epoch 2/10 loss=3.0000 val_loss=3.2500 (20.0s)", "train"))
    progress.emit(_record("Task run failed with exception: ValueError('x')\nTraceback ...", "train", logging.ERROR))
    progress.emit(_record("tensorflow: 5 out of the last 7 calls triggered tf.function retracing", None, logging.WARNING,
                          "tensorflow"))
    lines = progress.render().plain.splitlines()
    assert lines[0] == "✓ fetch      reused (unchanged inputs)"
    assert lines[1].startswith("✓ vocab      done in ")
    # The warning of a stage goes under its line; Prefect's traceback and a library's advice stay out.
    assert lines[2:4] == ["✓ drift      done in 0s", "  ! drift: 2 of 7 drift expectations failed (warning only)"]
    assert console.printed == []
    # 8 epochs left at 15 s each: at most 2 minutes (early stopping may end sooner).
    assert re.fullmatch(r"… train      running \d+s  epoch 2/10  val loss 3\.2500  at most ~(2m00s|1m5\ds) left", lines[4])
    # A library's own warning while one stage runs is that stage's.
    progress.emit(_record("fitting it in memory now", None, logging.WARNING, "qdup.search"))
    assert progress.render().plain.splitlines()[5:] == ["  ! fitting it in memory now"]
    progress.emit(_record("Finished in state Failed('boom')", "train"))
    assert progress.render().plain.splitlines()[4].startswith("✗ train      failed after ")


def test_quiet_keeps_the_stage_lines_and_drops_the_warnings():
    console = _Console()
    progress = StageProgress(console, live=False, warnings=False)
    progress.emit(_record("[fetch] running (key abc)", "fetch"))
    progress.emit(_record("[fetch] WARNING: fetch: cached dataset /c/data.tsv is damaged", "fetch", logging.WARNING))
    progress.emit(_record("[fetch] done in 1.0s -> /z", "fetch"))
    assert len(console.printed) == 1 and console.printed[0].startswith("✓ fetch      done in ")


def test_off_a_terminal_each_stage_line_is_printed_once_when_it_ends():
    console = _Console()
    progress = StageProgress(console, live=False)
    progress.emit(_record("[train] running (key abc)", "train"))
    progress.emit(_record("epoch 1/3 loss=4.0000 val_loss=3.5000 (10.0s)", "train"))
    assert console.printed == []
    progress.emit(_record("[train] done in 31.0s -> /z", "train"))
    progress.emit(_record("Finished in state Completed()", "train"))
    assert len(console.printed) == 1 and re.fullmatch(r"✓ train      done in \d+s, 1 epoch", console.printed[0])


def test_the_evaluate_log_keeps_the_header_row_of_its_table(tmp_path):
    from tasks.evaluate import baseline_log_lines, baseline_markdown

    metrics = stage_records(tmp_path)["evaluate"].manifest["metrics"]
    metrics = {**metrics, "baseline": {"test": metrics["test"]}}
    lines = baseline_log_lines(baseline_markdown(metrics))
    assert lines[0].startswith("| metric | model") and "baseline" in lines[0]
    assert "roc_auc" in lines[1] and not any(line.startswith("|---") for line in lines)


def test_a_finished_training_line_counts_its_epochs():
    line = StageLine("train", started=0.0, finished=65.0, epochs=50, epoch=12)
    assert line.text() == "✓ train      done in 1m05s, 12 epochs"


@pytest.mark.slow
def test_qdup_run_shows_stage_lines_not_log_lines_and_a_failure_in_one_line(tmp_path, demo_tsv):
    done = _qdup(tmp_path, "run", "--source", str(demo_tsv), "--until", "splits", "--n-train", "0.75", "--n-test", "0.25")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[:2] for line in done.stderr.strip().splitlines()] == [
        ["✓", "fetch"], ["✓", "validate"], ["✓", "drift"], ["✓", "splits"]
    ]
    assert done.stdout.strip().splitlines()[-1] == "stopped after splits (nothing published)"
    (tmp_path / "broken.tsv").write_bytes(bytes(range(256)) * 4)
    failed = _qdup(tmp_path, "run", "--source", str(tmp_path / "broken.tsv"), "--until", "splits")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert lines[-1].startswith("qdup: error: ") and "binary data" in lines[-1]
    assert [line.split()[:2] for line in lines[:-1]] == [["✓", "fetch"], ["✗", "validate"]]
    # The traceback is kept in the run record.
    records = sorted((tmp_path / "qdup" / "runs" / "history").glob("*/run.json"))
    record = json.loads(records[-1].read_text())
    assert record["status"] == "failed" and "Traceback (most recent call last)" in record["error"]["traceback"]


# ------------------------------------------------------------------ 5. demo output says it was generated

def test_generated_files_are_known_by_content_and_nothing_else(qdup_home, tmp_path):
    from qdup.data.demo import write_demo_tsv

    info = write_demo_tsv(tmp_path / "demo.tsv", rows=300, seed=3)
    assert generated_record(info["sha256"]) == {"generator": "qdup demo-data", "sha256": info["sha256"], "rows": 300, "seed": 3}
    # A copy of the same bytes is still generated data; one changed byte makes it another file.
    changed = bytearray((tmp_path / "demo.tsv").read_bytes())
    changed[-2] = ord("0") if changed[-2] != ord("0") else ord("1")
    import hashlib

    assert generated_record(hashlib.sha256(bytes(changed)).hexdigest()) is None
    assert generated_record("../../etc/passwd") is None and generated_record(None) is None


def test_a_version_of_generated_data_says_so_in_its_manifest_card_and_summary(qdup_home, tmp_path):
    records = stage_records(tmp_path)
    decision = GateDecision(True, "first version: becomes production", None, 0.9, None, None)
    real = lineage_manifest(RetrainConfig(), records, {}, decision)
    assert "generated" not in real["dataset"]
    real_card = model_card(real)
    assert "distribution of the Quora Question Pairs release" in real_card and "qdup demo-data" not in real_card

    record_generated({"sha256": records["fetch"].manifest["sha256"], "rows": 2000, "seed": 0})
    demo = lineage_manifest(RetrainConfig(), records, {}, decision)
    assert demo["dataset"]["generated"]["generator"] == "qdup demo-data"
    card = model_card(demo)
    assert "**Trained on data generated by `qdup demo-data`** (2,000 pairs, seed 0)" in card.splitlines()[2]
    assert "| origin | generated by `qdup demo-data` |" in card
    assert "distribution of the Quora Question Pairs release" not in card

    run = tmp_path / "run.json"
    run.write_text(json.dumps({"stages_done": ["fetch", "evaluate"], "stages": {
        "fetch": {"manifest": records["fetch"].manifest}, "evaluate": {"manifest": records["evaluate"].manifest}}}))
    line = summary_line({"run_record": str(run), "version": "v1", "published": "true", "promoted": "true"})
    assert line.startswith("version v1 published, promoted to production; test ROC-AUC ")
    # A re-run identical to a published version says which, and whether that one is production.
    same = {"run_record": str(run), "version": "v1", "published": "false", "promoted": "false"}
    assert summary_line(same, ["latest", "production"]).startswith(
        "version v1 has this run's data, parameters and code and is production already: nothing new to publish; test ROC-AUC ")
    assert summary_line(same, ["latest"]).startswith(
        "version v1 has this run's data, parameters and code (published before, not production): nothing new to publish; "
        "to serve it: qdup promote -m v1; test ROC-AUC ")
    assert "data generated by `qdup demo-data`: these figures measure the generator, not the model on real questions" in line


def test_model_endpoint_says_when_the_data_was_generated(tmp_path):
    from qdup.serving.batcher import MicroBatcher
    from qdup.serving.follower import FollowerState, ModelFollower, ServedModel
    from qdup.serving.http import model_facts
    from qdup.serving.settings import ServeConfig

    store, version = _published(tmp_path)
    follower = ModelFollower(store, "production")
    cfg = ServeConfig()
    for dataset, expected in (({"sha256": "ab" * 32}, None),
                              ({"sha256": "ab" * 32, "generated": {"generator": "qdup demo-data"}}, "qdup demo-data")):
        served = ServedModel(version, None, 0.5, {"dataset": dataset}, None)  # type: ignore[arg-type]
        facts = model_facts(follower, FollowerState(current=served), MicroBatcher(cfg.batch_wait_ms, cfg.max_microbatch_pairs), cfg)
        assert facts["dataset_generated_by"] == expected
