"""`--config FILE.json` for `qdup run` and `qdup serve`: a bad file is one line naming it and the problem, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qdup.config import load_config_file
from qdup.errors import QdupError

ROOT = Path(__file__).resolve().parents[2]

BROKEN_JSON = '{\n  "seed": 1,\n  "train": {"epochs": 2,}\n}\n'


def _qdup(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QDUP_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect")}
    return subprocess.run(
        [sys.executable, "-m", "qdup.cli", *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "text, problem",
    [
        (BROKEN_JSON, "invalid JSON at line 3 column 25: Expecting property name enclosed in double quotes"),
        ('{"trian": {"epochs": 1}}', "unknown field 'trian'"),
        ('{"train": {"epoch": 1}}', "unknown field 'train.epoch'"),
        ('{"split": {"n_train": -5}}', "split.n_train: Input should be greater than 0"),
        ('{"split": {"calibration_fraction": 0.6}}', "split.calibration_fraction: Input should be less than or equal to 0.5"),
        ('{"split": {"calibration_fraction": 0}}', "split.calibration_fraction: Input should be greater than 0"),
        ('{"split": {"n_train": 5, "calibration_fraction": 0.05}}', "calibration_fraction=0.05 of n_train=5 rows leaves an empty"),
        ('{"split": {"n_train": 3, "calibration_fraction": 0.5}}', "calibration_fraction=0.5 of n_train=3 rows leaves fewer than 2"),
        ('{"split": {"n_train": 0.7, "n_test": 0.4}}', "split: Value error, n_train + n_test = 0.7 + 0.4 is more than all"),
        ('{"validate": {"split_suites": {"train": "qqp_split_duplicates.v1"}}}', "validate.split_suites: Value error, needs"),
        ('[{"seed": 1}]', "expected a JSON object of RetrainConfig fields, got list"),
        (b"\xff\xfe{", "cannot read it"),
    ],
    ids=["syntax", "unknown-section", "unknown-field", "bad-value", "calibration-above-half", "calibration-zero",
         "empty-calibration", "no-train-rows", "fractions-over-one", "suite-missing", "not-an-object", "not-utf8"],
)
def test_a_bad_config_file_is_one_message_naming_file_and_problem(tmp_path: Path, text: str | bytes, problem: str) -> None:
    path = tmp_path / "bad.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(QdupError) as info:
        load_config_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(QdupError, match=r"nowhere\.json: no such file"):
        load_config_file(tmp_path / "nowhere.json")


def test_a_good_config_file_is_returned_as_written(tmp_path: Path) -> None:
    path = tmp_path / "good.json"
    path.write_text(json.dumps({"train": {"epochs": 2}, "validate": {"failed_rows_shown": 3}}))
    assert load_config_file(path) == {"train": {"epochs": 2}, "validate": {"failed_rows_shown": 3}}


@pytest.mark.parametrize("command", ["run", "serve"])
@pytest.mark.parametrize(
    "text, problem",
    [(BROKEN_JSON, "invalid JSON at line 3 column 25"), ('{"trian": {"epochs": 1}}', "unknown field 'trian'")],
    ids=["syntax", "unknown-field"],
)
def test_cli_reports_a_bad_config_file_in_one_line_with_exit_2(tmp_path: Path, command: str, text: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    done = _qdup(tmp_path, command, "--config", str(path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"qdup: error: {path}: ") and problem in lines[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "home").exists()


def test_an_impossible_split_fails_before_any_stage_runs(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text('{"split": {"n_train": 4, "calibration_fraction": 0.1}}')
    done = _qdup(tmp_path, "run", "--config", str(path), "--source", str(tmp_path / "absent.tsv"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "calibration_fraction=0.1 of n_train=4 rows leaves an empty calibration split" in lines[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "home").exists()
