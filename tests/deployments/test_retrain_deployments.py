"""End to end against a real Prefect server on 127.0.0.1: register, trigger, run a worker, check lineage."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deployments import retrain as dep

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `prefect server start` with its own PREFECT_HOME and database."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError((home / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("Prefect server did not start in 120 s")
    yield env
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _run(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def test_register_trigger_and_run_the_manual_deployment(server, tmp_path):
    from qdup.data.demo import write_demo_tsv

    env = {**server, "QDUP_HOME": str(tmp_path / "home")}
    data = tmp_path / "demo.tsv"
    write_demo_tsv(data, rows=1500, seed=21)
    config = {
        "fetch": {"source": str(data)},
        "split": {"n_train": 0.8, "n_test": 0.2},
        "model": {"embedding_dim": 8, "lstm_units": 8},
        "train": {"epochs": 1, "batch_size": 64},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    pool = "qdup-test-pool"
    _run(env, sys.executable, "-m", "prefect", "work-pool", "create", pool, "--type", "process")
    registered = _run(env, sys.executable, "-m", "deployments.retrain", "--work-pool", pool, "--config", str(tmp_path / "config.json"))
    assert f"{dep.FLOW_NAME}/{dep.SCHEDULED}" in registered.stdout and f"{dep.FLOW_NAME}/{dep.MANUAL}" in registered.stdout

    api = env["PREFECT_API_URL"]
    weekly = httpx.get(f"{api}/deployments/name/{dep.FLOW_NAME}/{dep.SCHEDULED}").json()
    assert [s["schedule"]["cron"] for s in weekly["schedules"]] == [dep.CRON]
    assert weekly["schedules"][0]["schedule"]["timezone"] == dep.TIMEZONE
    manual = httpx.get(f"{api}/deployments/name/{dep.FLOW_NAME}/{dep.MANUAL}").json()
    assert manual["schedules"] == [] and manual["parameters"]["config"]["fetch"]["source"] == str(data)

    created = httpx.post(f"{api}/deployments/{manual['id']}/create_flow_run", json={}).json()
    flow_run_id = created["id"]
    _run(env, sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--run-once", timeout=600)
    state = httpx.get(f"{api}/flow_runs/{flow_run_id}").json()["state"]["type"]
    assert state == "COMPLETED"

    versions = json.loads(_run(env, sys.executable, "-m", "qdup.cli", "versions", "--json").stdout)
    assert len(versions) == 1 and versions[0]["flow_run_id"] == flow_run_id
    shown = json.loads(_run(env, sys.executable, "-m", "qdup.cli", "show", versions[0]["id"], "--json").stdout)
    assert shown["prefect"]["deployment"] == dep.MANUAL and shown["aliases"] == ["latest", "production"]


def test_deployment_parameters_are_the_typed_config():
    params = dep.parameters()
    assert set(params) == {"config"} and params["config"]["fetch"]["source"].startswith("http://qim.fs.quoracdn.net/")
    assert dep.schedule().cron == dep.CRON
