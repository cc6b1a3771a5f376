"""Several hosts on one S3 bucket and one PostgreSQL registry: a real S3-compatible server (moto) on 127.0.0.1.

Two "hosts" (processes with their own QDUP_HOME) publish and promote at the same time; a third runs
`qdup serve-model` following production from the bucket and switches without a failed request;
`qdup verify --all` checks every version in the bucket; a file altered in the bucket is refused;
an unreachable endpoint is named in one line and registers nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from qdup.registry.store import ArtifactStore
from tests.registry.test_store import postgres_url  # noqa: F401  (the PostgreSQL server fixture)
from tests.serving.conftest import THRESHOLDS, free_port, publish_export, wait_for

pytest.importorskip("moto", reason="moto[server] (the S3-compatible test server) is not installed")
pytest.importorskip("s3fs", reason="s3fs (fsspec's S3 filesystem) is not installed")

REPO = Path(__file__).resolve().parents[2]
BUCKET = "qdup-hosts"
STORE = f"s3://{BUCKET}/store"
PER_HOST = 2

# One host: publish PER_HOST versions of an export and promote each, as a retrain on that host would.
HOST = """
import sys
from pathlib import Path
from qdup.registry.store import ArtifactStore, actor
store_url, export, threshold, n = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
store = ArtifactStore(store_url)
for i in range(n):
    files = {f"model/{p.name}": p for p in sorted(export.iterdir())}
    manifest = {"dataset": {"sha256": "ab" * 32}, "threshold": {"value": threshold}, "metrics": {"test": {"roc_auc": 0.7}}}
    version = store.publish(files, manifest)
    store.promote(version, actor(), why=f"host {sys.argv[5]} run {i}")
    print(version)
"""


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory, postgres_url):  # noqa: F811
    """A moto S3 server on 127.0.0.1 with one bucket, and the environment every host uses to reach it and the registry."""
    import boto3

    tmp = tmp_path_factory.mktemp("s3")
    port = free_port()
    log = open(tmp / "moto.log", "wb")  # noqa: SIM115  (closed below)
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "qdup-test", "AWS_SECRET_ACCESS_KEY": "qdup-test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "QDUP_REGISTRY_URL": postgres_url}
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert server.poll() is None and time.monotonic() < deadline, (tmp / "moto.log").read_text()
            time.sleep(0.1)
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="qdup-test", aws_secret_access_key="qdup-test",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_store(s3_env, monkeypatch, tmp_path) -> ArtifactStore:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("QDUP_HOME", str(tmp_path / "test-home"))
    return ArtifactStore(STORE)


def host_env(s3_env: dict[str, str], home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, **s3_env, "PYTHONPATH": str(REPO), "QDUP_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def qdup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qdup.cli", *args], env=env, capture_output=True, text=True, timeout=300)


def test_two_hosts_publish_and_a_third_serves_production_from_the_bucket(s3_env, s3_store, tiny_exports, tmp_path):
    store = s3_store
    first = publish_export(store, tiny_exports["v1"], THRESHOLDS["v1"])
    store.promote(first, "test", why="first")

    port = free_port()
    server_env = host_env(s3_env, tmp_path / "host-serve")
    serve = subprocess.Popen(
        [sys.executable, "-m", "qdup.cli", "serve-model", "--store", STORE, "--port", str(port), "--poll-s", "0.2"],
        env=server_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client():  # requests keep coming while other hosts publish and move production
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/similarity", json={"question1": "how do i learn python", "question2": "why is the sky blue"})
                answers.append((r.status_code, r.json().get("version")))

    def version() -> str | None:
        if serve.poll() is not None:
            pytest.fail(f"serve-model exited {serve.returncode}: {serve.stdout.read()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/readyz", timeout=5).json().get("version")
        return None

    try:
        wait_for(lambda: version() == first, timeout_s=240, every_s=0.2)
        thread = threading.Thread(target=client)
        thread.start()
        try:
            hosts = [
                subprocess.Popen([sys.executable, "-c", HOST, STORE, str(tiny_exports[name]), str(THRESHOLDS[name]), str(PER_HOST), name],
                                 env=host_env(s3_env, tmp_path / f"host-{name}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name in ("v1", "v2")
            ]
            published = []
            for host in hosts:
                out, err = host.communicate(timeout=240)
                assert host.returncode == 0, err[-3000:]
                published += out.split()
            production = store.aliases()["production"]
            wait_for(lambda: version() == production, timeout_s=120, every_s=0.1)
        finally:
            stop.set()
            thread.join(timeout=60)

        # Every version of both hosts is registered once; production went through each of them in turn.
        assert sorted(store.versions()) == sorted([first, *published]) and len(set(published)) == 2 * PER_HOST
        assert [e["to"] for e in store.history() if e["alias"] == "production"][1:].count(production) >= 1
        assert {e["to"] for e in store.history() if e["alias"] == "production"} == {first, *published}
        # The server followed production from the bucket without a failed request.
        assert answers and all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:5]
        assert {v for _, v in answers} >= {first, production}

        checked = qdup(host_env(s3_env, tmp_path / "host-verify"), "verify", "--all", "--store", STORE)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"{2 * PER_HOST + 1} version(s) checked, 0 damaged" in checked.stdout

        # A file altered in the bucket: verify names it, and the server refuses the version when production points at it.
        altered = publish_export(store, tiny_exports["v2"], THRESHOLDS["v2"])
        store.fs.pipe_file(f"{store.version_path(altered)}/model/threshold.json", b'{"threshold": 0.0001, "max_length": 6}')
        checked = qdup(host_env(s3_env, tmp_path / "host-verify"), "verify", "--all", "--store", STORE)
        assert checked.returncode == 2 and f"DAMAGED {altered}" in checked.stdout and "model/threshold.json" in checked.stdout
        with store.lock():
            store.move_alias("production", altered, "altered in the bucket", "test", "promote")
        facts = wait_for(lambda: (f := httpx.get(f"{url}/v1/model", timeout=30).json())["refused"] and f, timeout_s=120)
        assert facts["refused"][altered]["kind"] == "hash" and "model/threshold.json" in facts["refused"][altered]["error"]
        assert facts["version"] == production
    finally:
        serve.terminate()
        serve.wait(timeout=60)


def test_an_unreachable_endpoint_is_named_in_one_line_and_nothing_is_registered(s3_env, s3_store, tiny_exports, tmp_path):
    if not s3_store.versions():
        publish_export(s3_store, tiny_exports["v1"], THRESHOLDS["v1"])
    before = s3_store.versions()
    nobody = f"http://127.0.0.1:{free_port()}"
    env = host_env(s3_env, tmp_path / "host-lost", AWS_ENDPOINT_URL=nobody, AWS_MAX_ATTEMPTS="1")
    checked = qdup(env, "verify", "--all", "--store", STORE)
    lines = checked.stderr.strip().splitlines()
    assert checked.returncode == 2 and len(lines) == 1 and nobody in lines[0] and "Traceback" not in checked.stderr, checked.stderr
    published = subprocess.run([sys.executable, "-c", HOST, STORE, str(tiny_exports["v1"]), "0.3", "1", "lost"], env=env,
                               capture_output=True, text=True, timeout=300)
    assert published.returncode != 0 and f"store {STORE} cannot be reached" in published.stderr and nobody in published.stderr
    assert s3_store.versions() == before
