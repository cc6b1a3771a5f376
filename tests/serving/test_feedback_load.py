"""Nothing acknowledged is lost: wrk writes feedback with 16 clients and the server is killed (SIGKILL) while requests
are in flight; the rows in the store are at least the 2xx answers and at most the requests sent."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.load.wrk import parse_wrk_output, summarise, write_bodies, wrk_command
from qdup.registry.feedback import FeedbackLog
from tests.serving.conftest import TEXTS, free_port, make_store

ROOT = Path(__file__).resolve().parents[2]
WRK = shutil.which("wrk")


@pytest.mark.slow
@pytest.mark.skipif(WRK is None, reason="needs wrk")
def test_rows_are_at_least_the_acknowledged_writes_after_kill_9(tmp_path, tiny_exports):
    store, v1, _ = make_store(tmp_path / "store", tiny_exports)
    bodies = [{"question1": f"{TEXTS[i % len(TEXTS)]} number {i}", "question2": TEXTS[(i + 1) % len(TEXTS)],
               "label": ("duplicate", "not_duplicate")[i % 2], "version": v1, "source": "api"} for i in range(2000)]
    body_file = tmp_path / "feedback.jsonl"
    write_bodies(body_file, bodies)
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    server = subprocess.Popen([sys.executable, "-m", "qdup.cli", "serve-model", "--store", store.url, "--port", str(port),
                               "--feedback-rate", "0"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server was not ready within 180 s"
            time.sleep(0.2)
        cmd = wrk_command(WRK, url, "/v1/feedback", body_file, threads=2, connections=16, seconds=5, max_requests=10**7,
                          timeout_s=10)
        with open(tmp_path / "wrk.txt", "w") as out:
            wrk = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            # Killed while wrk still sends: some requests are in flight, some committed rows never answered.
            time.sleep(4.0)
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
            assert wrk.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
    s = summarise(parse_wrk_output((tmp_path / "wrk.txt").read_text()), 1)
    rows = FeedbackLog(store).count()
    assert s["ok"] > 0 and set(s["statuses"]) <= {"201"}, s
    assert s["ok"] <= rows <= s["sent"], (s, rows)
    frame = FeedbackLog(store).frame()
    assert frame["id"].is_unique and (frame["version"] == v1).all()
