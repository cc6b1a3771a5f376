"""Peak memory of the whole retraining flow at full scale: `qdup run` on 404,290 generated rows, every stage.

    python -m bench.flow_memory --out bench/results/flow_memory [--rows 404290] [--epochs 2] [--work DIR]

Generates the data set with `qdup demo-data`, runs `qdup run` once in a fresh home (nothing cached: every stage
runs, as a user's run does: in one process, training in a child process of it), and reports the flow's peak RSS and
each stage's own peak, which the flow records in its stage manifests (`peak_rss_bytes`: the process's VmHWM while
that stage ran, plus the peak of a child process doing the stage's work). The flow's peak is the largest of: the
summed RSS of the qdup process and its children, sampled every 0.1 s; wait4's ru_maxrss (what `/usr/bin/time -f %M`
prints: the largest single process, children included); the largest stage record. The issue's target: <= 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness.procs import TreeSampler
from bench.harness.results import Run, page
from bench.harness.steps import qdup_command
from bench.harness.tables import GIB, MIB, table, verdict
from bench.report import FULL_ROWS

REPO = Path(__file__).resolve().parents[1]
TARGET_BYTES = 4 * GIB
STAGES = ("fetch", "validate", "drift", "splits", "vocab", "pretrain", "silver", "train", "evaluate", "rerank", "retrieval", "export",
          "index", "publish")


def run_flow(work: Path, rows: int, epochs: int) -> dict[str, Any]:
    """Generate `rows` rows, run the flow on them in `work/home`; the process's peak RSS and each stage's."""
    data = work / "demo.tsv"
    subprocess.run([*qdup_command(), "demo-data", str(data), "--rows", str(rows)], check=True, stdout=subprocess.DEVNULL)
    home = work / "home"
    if home.exists():
        shutil.rmtree(home)
    env = {**os.environ, "QDUP_HOME": str(home)}
    cmd = [*qdup_command(), "run", "--source", str(data), "--n-train", "0.75", "--n-test", "0.25", "--epochs", str(epochs)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    sampler = TreeSampler(proc.pid)
    sampler.start()
    for line in proc.stdout:  # the flow's own progress lines, as they come
        print(f"  {line.rstrip()}", flush=True)
    tree_peak = sampler.stop()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench.flow_memory: `{' '.join(cmd)}` exited {proc.returncode}")
    stages = {}
    for stage in STAGES:
        for manifest in sorted((home / "runs" / "stages" / stage).glob("*/stage.json")):
            record = json.loads(manifest.read_text())
            stages[stage] = {"seconds": record["seconds"], "peak_rss_bytes": record.get("peak_rss_bytes")}
    stage_peak = max((s["peak_rss_bytes"] or 0 for s in stages.values()), default=0)
    return {"rows": rows, "epochs": epochs, "flow_command": " ".join(["qdup", *cmd[len(qdup_command()):]]), "seconds": seconds,
            "peak_rss_bytes": max(usage.ru_maxrss * 1024, tree_peak, stage_peak), "ru_maxrss_bytes": usage.ru_maxrss * 1024,
            "tree_sampled_peak_bytes": tree_peak, "stage_peak_bytes": stage_peak, "stages": stages}


def render(result: dict[str, Any]) -> str:
    peak = result["peak_rss_bytes"]
    return page("Whole-flow memory", result, [
        f"`{result.get('flow_command', result['command'])}` on {result['rows']:,} generated rows (`qdup demo-data`), a fresh "
        f"home: every stage ran, in one process (training in a child process of it), in {result['seconds']:.0f} s.",
        "",
        table(["figure", "target", "measured", "met?"], [[
            "peak RSS of the whole flow (the qdup process and its children together)", "<= 4 GiB", f"{peak / GIB:.2f} GiB",
            verdict(peak / GIB, TARGET_BYTES / GIB),
        ]]),
        "",
        *([f"The flow's peak is the largest of: the summed RSS of the process tree sampled every 0.1 s "
           f"({result['tree_sampled_peak_bytes'] / GIB:.2f} GiB), wait4's ru_maxrss (the largest single process, "
           f"{result['ru_maxrss_bytes'] / GIB:.2f} GiB) and the largest stage record below "
           f"({result['stage_peak_bytes'] / GIB:.2f} GiB).", ""] if "ru_maxrss_bytes" in result else []),
        "Each stage's own peak: the process's VmHWM while the stage ran (the flow resets it as each stage starts, after "
        "returning the heap freed so far to the OS), plus the peak of the child process that trains, from its stage "
        "manifest.",
        "",
        table(["stage", "seconds", "process peak RSS while it ran"],
              [[name, f"{s['seconds']:.1f}", "—" if s["peak_rss_bytes"] is None else f"{s['peak_rss_bytes'] / MIB:,.0f} MiB"]
               for name, s in result["stages"].items()]),
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "flow_memory")
    p.add_argument("--rows", type=int, default=FULL_ROWS)
    p.add_argument("--epochs", type=int, default=2, help="training epochs (memory does not grow with them)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    a = p.parse_args(argv)
    run = Run("bench.flow_memory", argv)
    with tempfile.TemporaryDirectory(prefix="qdup-flow-memory-") as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run.save(a.out, "flow_memory.json", run_flow(work, a.rows, a.epochs), "flow_memory.md", render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
