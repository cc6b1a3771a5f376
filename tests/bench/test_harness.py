"""The benchmarks' shared harness: statistics, verdict rows, results pages with their provenance, steps in child processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.harness.machine import REPO, command_line, git_commit, provenance
from bench.harness.procs import peak_rss_bytes, status_bytes
from bench.harness.results import Run, header, machine_line, page, write_results
from bench.harness.stats import call_latencies, latency_summary, short_latency, throughput, timed_calls
from bench.harness.steps import bench_env, run_step
from bench.harness.tables import check, dig, limit_row, met_when, targets_table, verdict

# ---------------------------------------------------------------- statistics


def test_latency_summary_of_one_to_a_hundred_milliseconds():
    s = latency_summary([i / 1000 for i in range(1, 101)])  # 1 ms .. 100 ms
    assert s["n"] == 100
    # numpy's linear interpolation: position q/100 * 99 between the sorted values.
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert (s["mean_ms"], s["min_ms"], s["max_ms"]) == (pytest.approx(50.5), pytest.approx(1.0), pytest.approx(100.0))


def test_short_latency_and_throughput():
    s = short_latency([0.002, 0.002, 0.004, 0.002])
    assert s == {"p50_ms": 2.0, "p99_ms": pytest.approx(3.94), "calls_per_s": 400.0}
    assert throughput(1000, 4.0) == 250.0
    assert throughput(1000, 0.0) is None


def test_call_latencies_time_every_payload_after_the_warmup():
    seen = []
    times = call_latencies(seen.append, list(range(10)), warmup=3)
    assert seen == list(range(10)) and len(times) == 7 and all(t >= 0 for t in times)


def test_timed_calls_go_through_the_payloads_in_turn_and_keep_what_each_returned():
    r = timed_calls(lambda p: p * 2, [1, 2, 3], seconds=0.0, min_calls=5)
    assert r["calls"] == 5 and r["returned"] == [2, 4, 6, 2, 4]  # one untimed call first, on payloads[0]


# ---------------------------------------------------------------- verdicts


def test_check_and_verdict_for_upper_and_lower_limits():
    assert check(3.0, 4.0) is True and check(5.0, 4.0) is False and check(None, 4.0) is None
    assert check(2500.0, 2000.0, higher=True) is True and check(1500.0, 2000.0, higher=True) is False
    assert verdict(3.0, 4.0) == "yes"
    assert verdict(4.4, 4.0) == "**no** (by 10%)"
    assert verdict(1500.0, 2000.0, higher=True) == "**no** (by 25%)"
    assert verdict(None, 4.0) == "n/a"


def test_met_when_is_unmeasured_when_a_figure_is_missing():
    assert met_when(True, 1.0, 2.0) is True
    assert met_when(False, 1.0) is False
    assert met_when(True, 1.0, None) is None


def test_limit_rows_and_their_table():
    over = limit_row("warm re-run", "<= 15 s", 25.0, "25.0 s", 15.0, "s")
    within = limit_row("prep", "<= 60 s", 45.0, "45.0 s", 60.0, "s")
    missing = limit_row("served", "<= 8 s", None, "0.0 s", 8.0, "s")
    assert (over["met"], over["margin"]) == (False, "10.0 s over (1.7x the target)")
    assert (within["met"], within["margin"]) == (True, "15.0 s to spare")
    assert (missing["met"], missing["measured"]) == (None, "not measured")
    lines = targets_table([over, within, missing]).splitlines()
    assert lines[0] == "| target | wanted | measured | met? | margin |"
    assert lines[2] == "| warm re-run | <= 15 s | 25.0 s | **no** | 10.0 s over (1.7x the target) |"
    assert lines[4] == "| served | <= 8 s | not measured | n/a |  |"


def test_dig_reads_nested_keys_and_stops_at_a_missing_one():
    d = {"a": {"b": {"c": 1}}, "x": 3}
    assert dig(d, "a", "b", "c") == 1
    assert dig(d, "a", "nothing", "c") is None and dig(d, "x", "y") is None


# ---------------------------------------------------------------- provenance and results files


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def test_the_commit_is_the_checkouts_head_and_says_whether_the_tree_was_dirty():
    commit, dirty = git_commit()
    assert commit == _git("rev-parse", "--short", "HEAD")
    assert dirty is bool(_git("status", "--porcelain", "--untracked-files=no"))


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
    assert git_commit(tmp_path) == ("unknown (not a git checkout)", None)


def test_the_command_line_is_the_exact_one_quoted_for_a_shell():
    assert command_line("bench.search", ["--out", "a b", "--skip", "mine"]) == "python -m bench.search --out 'a b' --skip mine"
    assert command_line("bench.run", []) == "python -m bench.run"


def test_a_results_page_names_the_command_the_commit_and_the_machine(tmp_path):
    run = Run("bench.example", ["--out", str(tmp_path)], machine={"cpu_model": "test cpu", "cpu_count": 2, "usable_cores": 2,
                                                                 "ram_gib": 7.5, "loadavg_start": [1.5, 1.0, 0.5]})
    results = run.finish({"figure": 42})
    commit = _git("rev-parse", "--short", "HEAD")
    assert results["command"] == f"python -m bench.example --out {tmp_path}"
    assert results["commit"].startswith(commit) and results["figure"] == 42
    assert results["dirty"] is (results["commit"] != commit)  # "(with uncommitted changes)" follows a dirty tree's commit
    assert results["machine"]["loadavg_end"] and results["total_seconds"] >= 0
    text = page("Example", results, ["| a |", "|---|", "| 1 |"])
    lines = text.splitlines()
    assert lines[0] == "# Example"
    assert lines[2] == f"Command: `python -m bench.example --out {tmp_path}`  "
    assert lines[3].startswith(f"Commit {results['commit']}, started {results['started']}, took ")
    assert lines[4].startswith("Machine: test cpu, 2 CPUs (2 usable), 7.5 GiB RAM; load average 1.50 1.00 0.50 at start, ")
    assert text.endswith("| 1 |\n")
    written = write_results(tmp_path / "out", "example.json", results, "example.md", text)
    assert [p.name for p in written] == ["example.json", "example.md"]
    back = json.loads(written[0].read_text())
    assert back["command"] == results["command"] and back["commit"] == results["commit"] and back["figure"] == 42
    assert written[1].read_text() == text


def test_provenance_records_the_machine_it_ran_on():
    p = provenance("bench.example", ["--quick"])
    m = p["machine"]
    assert p["command"] == "python -m bench.example --quick" and p["started"].endswith("+00:00")
    assert m["cpu_count"] >= 1 and 1 <= m["usable_cores"] <= m["cpu_count"] and len(m["loadavg_start"]) == 3
    assert m["python"] == ".".join(map(str, sys.version_info[:3]))


def test_the_header_reads_an_older_results_file_too():
    lines = header({"command": "python -m bench.search", "machine": "host x86_64, 2 cores, load 1.0 at start"})
    assert lines == ["Command: `python -m bench.search`  ", "Commit not recorded, started ?.  ",
                     "Machine: host x86_64, 2 cores, load 1.0 at start.  "]
    assert machine_line({"cpus": 4, "usable_cores": 2, "cpu_model": "x", "loadavg_start": [0.5]}) == \
        "x, 4 CPUs (2 usable); load average 0.50 at start"


# ---------------------------------------------------------------- steps in child processes


def test_a_step_runs_in_a_child_and_hands_back_its_figures_and_peak_memory(tmp_path):
    out = tmp_path / "step.json"
    code = ("import sys; from pathlib import Path; from bench.harness.steps import write_step; "
            "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "write_step(Path(sys.argv[1]), {'answer': 42})")
    step = run_step([sys.executable, "-c", code, str(out)], out, tmp_path / "step.log", bench_env(), timeout_s=120)
    assert step["rc"] == 0 and "error" not in step
    assert step["result"]["answer"] == 42
    assert step["result"]["vmhwm_bytes"] >= 200 * 2**20 and step["ru_maxrss_bytes"] >= 200 * 2**20
    assert step["wall_seconds"] > 0 and step["cpu_seconds"] > 0 and step["loadavg_1min_before"] >= 0


def test_a_failed_step_says_its_exit_code_and_the_end_of_its_log(tmp_path):
    out = tmp_path / "step.json"
    out.write_text("{}")  # a previous run's figures are not taken for this one's
    step = run_step([sys.executable, "-c", "import sys; print('it broke'); sys.exit(3)"], out, tmp_path / "step.log",
                    bench_env(), timeout_s=120)
    assert step["rc"] == 3 and step["result"] is None
    assert step["error"].startswith("exit 3: ") and "it broke" in step["error"]


def test_a_step_past_its_time_limit_is_killed(tmp_path):
    step = run_step([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.json", tmp_path / "s.log",
                    bench_env(), timeout_s=1)
    assert step["timed_out"] and "(timed out)" in step["error"] and step["wall_seconds"] < 30


def test_this_process_memory_figures():
    grown = bytearray(100 * 2**20)
    grown[::4096] = b"x" * len(grown[::4096])
    assert peak_rss_bytes() > 100 * 2**20
    assert status_bytes("VmHWM") >= status_bytes("VmRSS") > 100 * 2**20
    assert status_bytes("NoSuchField") is None


def test_bench_env_puts_this_checkout_first_on_the_path():
    env = bench_env({"EXTRA": "1"})
    assert env["PYTHONPATH"].split(":")[0] == str(REPO) and env["EXTRA"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1" and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_save_finishes_writes_and_prints_the_page(tmp_path, capsys):
    run = Run("bench.example", [], machine={"cpu_model": "x"})
    done = run.save(tmp_path / "out", "example.json", {"figure": 7}, "example.md", lambda r: page("Example", r, [f"{r['figure']}"]))
    printed = capsys.readouterr().out
    assert printed.startswith("# Example\n\nCommand: `python -m bench.example`") and printed.endswith("7\n\n")
    assert (tmp_path / "out" / "example.md").read_text() + "\n" == printed
    assert json.loads((tmp_path / "out" / "example.json").read_text()) == json.loads(json.dumps(done))
    run.save(None, "example.json", {"figure": 8})  # no folder: printed (as JSON without a page), nothing written
    assert json.loads(capsys.readouterr().out)["figure"] == 8
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["example.json", "example.md"]


def test_interleaved_latencies_take_the_calls_in_turn_rotating_their_order():
    from bench.harness.stats import interleaved_latencies

    order: list[tuple[str, int]] = []
    times = interleaved_latencies({"a": lambda p: order.append(("a", p)), "b": lambda p: order.append(("b", p))},
                                  [0, 1, 2, 3], warmup=1)
    assert order == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2), ("b", 3), ("a", 3)]
    assert [len(t) for t in times.values()] == [3, 3] and all(x >= 0 for t in times.values() for x in t)
