"""Publishing in two steps: an upload that takes no lock, then one registry transaction; transient registry failures named."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qdup.registry.sql_registry import RegistryUnavailable
from qdup.registry.store import ArtifactStore, StoreError, new_version_id
from tasks.publish import retry_on_io


@pytest.fixture
def files(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"weights")
    (tmp_path / "metrics.json").write_text("{}")
    return {"model/model.bin": tmp_path / "model.bin", "evaluation/metrics.json": tmp_path / "metrics.json"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_upload_proceeds_while_another_host_holds_the_lock(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    holding, release = threading.Event(), threading.Event()

    def other_host():
        with ArtifactStore(str(tmp_path / "store")).lock():
            holding.set()
            release.wait(120)

    other = threading.Thread(target=other_host)
    other.start()
    try:
        assert holding.wait(60)
        staged = store.upload(files, {"note": "x"}, version=new_version_id())
        assert store.versions() == []  # uploaded, not visible
    finally:
        release.set()
        other.join(60)
    # The registration and the alias moves are one transaction: a failure inside leaves nothing.
    with pytest.raises(RuntimeError), store.lock():
        store.register(staged)
        store.move_alias("latest", staged.version, "test", "test", "publish")
        raise RuntimeError("failed before the transaction ended")
    assert store.versions() == [] and store.aliases() == {}
    with store.lock():
        store.register(staged)
        store.move_alias("latest", staged.version, "test", "test", "publish")
    assert store.versions() == [staged.version] and store.aliases() == {"latest": staged.version}
    assert store.verify(staged.version) == []
    with pytest.raises(StoreError, match="never removed"):
        store.discard_upload(staged.version)


def test_an_unregistered_upload_can_be_discarded_and_uploaded_again_with_other_files(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    version = new_version_id()
    store.upload(files, {"gate": "first outcome"}, version=version)
    store.discard_upload(version)
    assert not (tmp_path / "store" / "versions" / version).exists()
    (tmp_path / "card.md").write_text("another outcome")
    staged = store.upload(files | {"card.md": tmp_path / "card.md"}, {"gate": "second outcome"}, version=version)
    store.register(staged)
    assert store.manifest(version)["gate"] == "second outcome" and store.verify(version) == []


def test_an_unreachable_registry_is_transient_and_named_in_one_line(tmp_path):
    url = f"postgresql+psycopg://qdup@127.0.0.1:{closed_port()}/qdup"
    store = ArtifactStore(str(tmp_path / "store"), registry_url=url)
    with pytest.raises(RegistryUnavailable, match=f"registry {re.escape(url)} .*cannot be reached") as raised:
        store.versions()
    assert "\n" not in str(raised.value)

    class State:
        def result(self):
            raise raised.value

    assert retry_on_io(None, None, State())  # the publish task retries it
    env = {**os.environ, "QDUP_HOME": str(tmp_path / "home"), "QDUP_REGISTRY_URL": url}
    ran = subprocess.run([sys.executable, "-m", "qdup.cli", "verify", "--all"], env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0], ran.stderr


def test_only_staging_folders_of_old_versions_are_cleaned(tmp_path):
    import datetime as dt

    store = ArtifactStore(str(tmp_path / "store"))
    staging = tmp_path / "store" / ".staging"
    old = new_version_id(dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    for name in (f"{new_version_id()}.abcd", f"{old}.abcd", "not-a-version"):
        (staging / name).mkdir(parents=True)
        (staging / name / "f").write_text("x")
    # Another host's upload in progress (a fresh id) and anything unknown stay; only a crash's old leftover goes.
    assert [Path(p).name for p in store.clean_staging()] == [f"{old}.abcd"]
    assert len(list(staging.iterdir())) == 2


def test_staging_that_another_host_empties_meanwhile_is_nothing_to_clean(tmp_path, monkeypatch):
    """On an object store the `.staging` prefix vanishes with its last object: another host's publish that finishes
    between this host's look and its listing or removal leaves nothing to clean, not an error."""
    import datetime as dt

    store = ArtifactStore(str(tmp_path / "store"))
    staging = tmp_path / "store" / ".staging"
    old = new_version_id(dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    (staging / f"{old}.abcd").mkdir(parents=True)

    def gone(*args, **kwargs):
        raise FileNotFoundError(str(staging))

    with monkeypatch.context() as m:
        m.setattr(store.fs, "ls", gone)
        assert store.clean_staging() == []
    with monkeypatch.context() as m:
        m.setattr(store.fs, "rm", gone)
        assert store.clean_staging() == []
    assert [Path(p).name for p in store.clean_staging()] == [f"{old}.abcd"]
