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
    done = subprocess.run(list(args), check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
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


def _register(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments.retrain", *args], check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def _deployment(env: dict[str, str], name: str) -> dict:
    return httpx.get(f"{env['PREFECT_API_URL']}/deployments/name/{dep.FLOW_NAME}/{name}").json()


def _create_pool(env: dict[str, str], name: str, kind: str) -> None:
    """A work pool created through the API; a container pool's jobs take an `image` variable, as docker's do."""
    properties = {"image": {"type": "string", "title": "Image"}} if kind == "docker" else {}
    template = {"job_configuration": {"image": "{{ image }}"} if properties else {}, "variables": {"type": "object", "properties": properties}}
    answer = httpx.post(f"{env['PREFECT_API_URL']}/work_pools/", json={"name": name, "type": kind, "base_job_template": template})
    assert answer.status_code == 201, answer.text


USER_SET = {"fetch": {"source": "https://data.example/quora.tsv"}, "train": {"epochs": 3}, "validate": {"failed_rows_shown": 7}}


def test_registered_parameters_hold_only_what_the_user_set(server, tmp_path):
    pool = "qdup-test-params"
    _run(server, sys.executable, "-m", "prefect", "work-pool", "create", pool, "--type", "process")
    bare = _register(server, "--work-pool", pool)
    assert bare.returncode == 0, bare.stderr[-3000:]
    for name in (dep.SCHEDULED, dep.MANUAL):
        assert _deployment(server, name)["parameters"] == {}

    (tmp_path / "config.json").write_text(json.dumps(USER_SET))
    configured = _register(server, "--work-pool", pool, "--config", str(tmp_path / "config.json"))
    assert configured.returncode == 0, configured.stderr[-3000:]
    for name in (dep.SCHEDULED, dep.MANUAL):
        deployment = _deployment(server, name)
        assert deployment["parameters"] == {"config": USER_SET}
        # A process pool runs this checkout, in place.
        assert deployment["work_pool_name"] == pool and str(ROOT) in json.dumps(deployment["pull_steps"])


def test_container_pool_refuses_a_registration_without_image(server):
    pool = "qdup-test-docker-refuse"
    _create_pool(server, pool, "docker")
    done = _register(server, "--work-pool", pool)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--image" in lines[0] and pool in lines[0] and "Traceback" not in done.stderr
    found = httpx.post(f"{server['PREFECT_API_URL']}/deployments/filter", json={"work_pools": {"name": {"any_": [pool]}}})
    assert found.json() == []


def test_container_pool_registration_runs_the_image_code_never_this_checkout(server, tmp_path):
    pool = "qdup-test-docker"
    _create_pool(server, pool, "docker")
    (tmp_path / "config.json").write_text(json.dumps({"train": {"epochs": 2}}))
    done = _register(server, "--work-pool", pool, "--image", "registry.example/qdup:1.2", "--config", str(tmp_path / "config.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in (dep.SCHEDULED, dep.MANUAL):
        deployment = _deployment(server, name)
        assert deployment["work_pool_name"] == pool
        assert deployment["job_variables"] == {"image": "registry.example/qdup:1.2"}
        assert deployment["entrypoint"] == dep.MODULE_ENTRYPOINT and deployment["path"] is None
        assert not deployment["pull_steps"]
        assert deployment["parameters"] == {"config": {"train": {"epochs": 2}}}
        assert str(ROOT) not in json.dumps(deployment)


def test_git_source_registration_clones_the_repository(server, tmp_path):
    repo = tmp_path / "qdup.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(ROOT), str(repo)], check=True, timeout=120)
    pool = "qdup-test-git"
    _run(server, sys.executable, "-m", "prefect", "work-pool", "create", pool, "--type", "process")
    done = _register(server, "--work-pool", pool, "--git-source", repo.as_uri())
    assert done.returncode == 0, done.stderr[-3000:]
    deployment = _deployment(server, dep.MANUAL)
    assert deployment["path"] is None and deployment["entrypoint"] == dep.ENTRYPOINT
    [step] = deployment["pull_steps"]
    assert step["prefect.deployments.steps.git_clone"]["repository"] == repo.as_uri()
    assert str(ROOT) not in json.dumps(deployment)
