"""Concurrent runs of one stage key take turns under a lock: the second waits, says so, and reuses the first's folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from qdup.stagecache import run_stage, stage_dir, stage_key, stage_lock_path

REPO = Path(__file__).resolve().parents[2]
INPUTS = {"data": "shared", "p": 1}

# One "run" of the stage in its own process. A run given a gate file writes `started`, then blocks
# until the gate exists (it stands for a long training); every build appends a line to `builds`.
RUN = """
import json, sys, time
from pathlib import Path
from qdup.log import stderr_log
from qdup.stagecache import run_stage

home, name, gate = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def build(out):
    with open(home / "builds", "a") as f:
        f.write(name + "\\n")
    (out / "model.txt").write_text("trained by " + name)
    if gate:
        (home / "started").write_text(name)
        while not Path(gate).exists():
            time.sleep(0.05)
    return {"by": name}

result = run_stage("demo", json.loads(sys.argv[4]), build, stderr_log, home=home)
print(json.dumps({"path": str(result.path), "cached": result.cached, "by": result.manifest["by"]}))
"""


def start(home: Path, name: str, gate: Path | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(home), name, str(gate or ""), json.dumps(INPUTS)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(condition, what: str, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def test_two_processes_on_one_key_both_succeed_with_one_folder(tmp_path):
    gate = tmp_path / "gate"
    slow = start(tmp_path, "slow", gate)
    wait_for(lambda: (tmp_path / "started").exists(), "the slow run started building")
    # The second run finds the lock held by a live process: it must wait, not build, not delete.
    fast_err = tmp_path / "fast.err"
    with open(fast_err, "w") as err:
        fast = subprocess.Popen(
            [sys.executable, "-c", RUN, str(tmp_path), "fast", "", json.dumps(INPUTS)],
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=err, text=True,
        )
        wait_for(lambda: "waiting" in fast_err.read_text(), "the second run says it waits")
        assert fast.poll() is None  # still waiting while the first one builds
        gate.write_text("go")
        slow_out, slow_errors = slow.communicate(timeout=120)
        fast_out, _ = fast.communicate(timeout=120)
    assert slow.returncode == 0, slow_errors
    assert fast.returncode == 0, fast_err.read_text()
    waited = fast_err.read_text()
    assert "[demo] waiting: stage demo" in waited and f"pid {slow.pid}" in waited

    first, second = json.loads(slow_out.splitlines()[-1]), json.loads(fast_out.splitlines()[-1])
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["path"] == second["path"] and second["by"] == "slow"
    assert (tmp_path / "builds").read_text().split() == ["slow"]
    final = stage_dir("demo", stage_key("demo", INPUTS), tmp_path)
    # One folder, whole, and no temporary leftovers beside it.
    assert sorted(p.name for p in final.parent.iterdir()) == sorted([final.name, final.name + ".lock"])
    assert (final / "model.txt").read_text() == "trained by slow"


def test_a_lock_left_by_a_killed_run_is_free_at_once_and_its_leftovers_go(tmp_path):
    gate = tmp_path / "never"
    killed = start(tmp_path, "killed", gate)
    wait_for(lambda: (tmp_path / "started").exists(), "the run started building")
    final = stage_dir("demo", stage_key("demo", INPUTS), tmp_path)
    assert len(list(final.parent.glob(f".{final.name}.*.tmp"))) == 1
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    # The lock file is still there, but its holder is gone: the next run neither waits nor keeps the dead temp.
    assert stage_lock_path("demo", stage_key("demo", INPUTS), tmp_path).is_file()
    logs: list[str] = []
    result = run_stage("demo", INPUTS, lambda out: (out / "model.txt").write_text("again") and {"by": "next"}, logs.append, home=tmp_path)
    assert not result.cached and not any("waiting" in line for line in logs)
    assert list(final.parent.glob(".*.tmp")) == []
    assert (final / "model.txt").read_text() == "again"
