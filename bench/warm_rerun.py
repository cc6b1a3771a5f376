"""bench.run's warm re-run: `qdup run` twice with nothing changed (Prefect's temporary server), then twice against a
running Prefect server, each end to end with a timeline of its output."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness.steps import bench_env, qdup_command, say
from bench.report import split_counts

REPO = Path(__file__).resolve().parents[1]
# Model of the `qdup run` used for the warm re-run: small, so that the first (cold) run stays short.
RERUN_MODEL = {"embedding_dim": 32, "lstm_units": 32}


_EVENTS = [
    (r"Starting temporary server|temporary server", "Prefect temporary server starting"),
    (r"Beginning flow run|Created flow run|Beginning subflow", "flow run begins"),
    (r"fetch: cache hit|\[fetch\]|fetch:", "fetch"),
    (r"\[validate\]", "validate"),
    (r"\[splits\]", "splits"),
    (r"\[vocab", "vocabulary"),
    (r"\[train\]", "train"),
    (r"\[evaluate\]", "evaluate"),
    (r"\[export\]", "export"),
    (r"\[publish\]", "publish"),
    (r"Flow run .*Finished in state", "flow run finished"),
    (r"^outputs:", "outputs printed"),
    (r"Stopping temporary server", "Prefect temporary server stopping"),
]


def timed_qdup_run(cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run `qdup run` end to end; keep each output line with its time since launch."""
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        for raw in proc.stdout:
            lines.append((time.perf_counter() - t0, raw.decode(errors="replace").rstrip()))
        rc = proc.wait()
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("".join(f"{t:8.2f} {line}\n" for t, line in lines))
    timeline: list[tuple[float, str]] = []
    for pattern, label in _EVENTS:
        for t, line in lines:
            if re.search(pattern, line):
                timeline.append((round(t, 2), f"{label}: {line.strip()[-140:]}"))
                break
    timeline.sort()
    timeline.append((round(wall, 2), f"process exited ({rc})"))
    return {"rc": rc, "seconds": wall, "timeline": timeline, "first_output_s": lines[0][0] if lines else None, "log": str(log_path)}


def warm_rerun(work: Path, source: str, rows: int, seed: int, timeout_s: float) -> dict[str, Any]:
    from qdup.config import RetrainConfig

    work.mkdir(parents=True, exist_ok=True)
    n_train, n_test = split_counts(rows)
    cfg = {
        "seed": seed,
        "fetch": {"source": source},
        "split": {"n_train": n_train, "n_test": n_test},
        "model": RERUN_MODEL,
        "train": {"epochs": 1},
    }
    RetrainConfig.model_validate(cfg)  # fail here, not inside qdup, when the config schema moved
    cfg_path = work / "rerun-config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    cmd = qdup_command() + ["run", "--config", str(cfg_path)]
    env = bench_env({"QDUP_HOME": str(work / "qdup-home"), "PREFECT_HOME": str(work / "prefect-home")})
    env.pop("PREFECT_API_URL", None)  # as on a fresh machine: Prefect starts its temporary local server
    say("warm re-run: first (cold) qdup run ...")
    cold = timed_qdup_run(cmd, env, work / "logs" / "qdup-run-1.log", timeout_s)
    say(f"warm re-run: cold run exit {cold['rc']} in {cold['seconds']:.1f}s; second run ...")
    warm = timed_qdup_run(cmd, env, work / "logs" / "qdup-run-2.log", timeout_s)
    say(f"warm re-run: warm run exit {warm['rc']} in {warm['seconds']:.1f}s")
    with prefect_server(work / "prefect-server-home") as api_url:
        served_env = {**env, "PREFECT_API_URL": api_url}
        # The first run against a new server registers the flow; the second is the steady state.
        timed_qdup_run(cmd, served_env, work / "logs" / "qdup-run-3.log", timeout_s)
        served = timed_qdup_run(cmd, served_env, work / "logs" / "qdup-run-4.log", timeout_s)
    say(f"warm re-run against a running Prefect server: exit {served['rc']} in {served['seconds']:.1f}s")
    probes = {}
    for label, code in (
        ("import tensorflow", "import tensorflow"),
        ("import prefect", "import prefect"),
        ("import great_expectations", "import great_expectations"),
        ("import flows.retrain (the CLI's imports)", "import flows.retrain"),
    ):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True)
        probes[label] = round(time.perf_counter() - t, 2)
    return {
        "command": shlex.join(cmd),
        "config_note": json.dumps(cfg),
        "cold_rc": cold["rc"],
        "cold_seconds": cold["seconds"],
        "cold_timeline": cold["timeline"],
        "warm_rc": warm["rc"],
        "warm_seconds": warm["seconds"] if warm["rc"] == 0 else None,
        "warm_seconds_any_exit": warm["seconds"],
        "warm_timeline": warm["timeline"],
        "warm_first_output_s": warm["first_output_s"],
        "fresh_process_import_seconds": probes,
        "served_rc": served["rc"],
        "served_seconds": served["seconds"] if served["rc"] == 0 else None,
        "served_timeline": served["timeline"],
        "logs": [cold["log"], warm["log"], served["log"]],
    }


@contextlib.contextmanager
def prefect_server(home: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """A Prefect server on 127.0.0.1 (a free port) for the duration; yields its API URL."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = bench_env({"PREFECT_HOME": str(home)})
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the Prefect server on port {port} did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
