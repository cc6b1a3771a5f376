"""`qdup run --feedback`, the feedback config section and `qdup feedback` argument errors: one line, exit 2."""

from __future__ import annotations

import pytest

from qdup.cli.main import build_config, main, make_parser


def test_run_feedback_turns_the_feedback_section_on_and_the_default_is_off():
    on = build_config(make_parser().parse_args(["run", "--source", "x.tsv", "--feedback"]))
    off = build_config(make_parser().parse_args(["run", "--source", "x.tsv"]))
    assert on.feedback.enabled and not off.feedback.enabled


def test_a_bad_since_in_the_config_names_the_field(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"feedback": {"enabled": true, "since": "last week"}}')
    assert main(["run", "--source", str(cfg), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "feedback.since" in err and "ISO" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "problem"), [
    (["feedback", "export", "--out", "x.csv"], "give a .parquet file name"),
    (["feedback", "export", "--out", "/no/such/folder/x.parquet"], "no folder"),
    (["feedback", "export", "--out", "OUT", "--since", "soon"], "--since 'soon'"),
    (["lineage", "--feedback", "zz"], "4 to 64 hex digits"),
])
def test_feedback_argument_errors_are_one_line(tmp_path, capsys, args, problem):
    args = [a.replace("OUT", str(tmp_path / "f.parquet")) for a in args] + ["--store", str(tmp_path / "store")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1
