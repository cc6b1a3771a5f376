"""bench.flow_memory's report: the verdict against 4 GiB and each stage's peak, from a run's figures."""

from __future__ import annotations

from bench.flow_memory import render
from bench.harness.tables import GIB, MIB


def _result(peak_bytes: int) -> dict:
    return {"command": "python -m bench.flow_memory", "commit": "abc", "machine": "x86_64, 2 cores", "rows": 404_290, "epochs": 2,
            "flow_command": "qdup run --source demo.tsv", "seconds": 400.0, "peak_rss_bytes": peak_bytes,
            "stages": {"train": {"seconds": 75.5, "peak_rss_bytes": 2900 * MIB}, "index": {"seconds": 35.0, "peak_rss_bytes": None}}}


def test_report_says_whether_the_flow_stayed_within_4_gib():
    within = render(_result(int(3.5 * GIB)))
    assert "| peak RSS of the whole flow (the qdup process and its children together) | <= 4 GiB | 3.50 GiB | yes |" in within
    over = render(_result(int(4.4 * GIB)))
    assert "| 4.40 GiB | **no** (by 10%) |" in over
    assert "Command: `python -m bench.flow_memory`" in within and "Commit abc," in within
    assert "`qdup run --source demo.tsv` on 404,290 generated rows" in within
    assert "| train | 75.5 | 2,900 MiB |" in within and "| index | 35.0 | — |" in within


def test_the_tree_sampler_counts_a_child_process_with_its_parent():
    import subprocess
    import sys

    from bench.harness.procs import tree_rss_bytes

    code = ("import subprocess, sys, time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "c = subprocess.Popen([sys.executable, '-c', 'import sys; b = bytearray(300 * 2**20); b[::4096] = b\"x\" * len(b[::4096]); "
            "print(1, flush=True); sys.stdin.read()'], stdin=subprocess.PIPE, stdout=subprocess.PIPE); c.stdout.readline(); "
            "print(1, flush=True); sys.stdin.read(); c.stdin.close(); c.wait()")
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        parent.stdout.readline()
        assert tree_rss_bytes(parent.pid) >= 600 * MIB
    finally:
        parent.stdin.close()
        parent.wait()
