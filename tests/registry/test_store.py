"""Tests for qdup/registry/store.py: atomic immutable versions, alias moves, history, promote and rollback."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import multiprocessing
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qdup.errors import ConfigError
from qdup.registry.store import (
    ArtifactStore,
    StoreError,
    TamperedVersionError,
    new_version_id,
    validate_alias,
    validate_version_id,
)

REPO = Path(__file__).resolve().parents[2]


def _manifest(auc: float, dataset: str = "ab" * 32) -> dict:
    return {"dataset": {"sha256": dataset}, "metrics": {"test": {"roc_auc": auc}}}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"weights")
    (tmp_path / "metrics.json").write_text("{}")
    return {"model/model.bin": tmp_path / "model.bin", "evaluation/metrics.json": tmp_path / "metrics.json"}


def test_publish_writes_files_and_a_manifest_with_hashes(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    version = store.publish(files, _manifest(0.8))
    m = store.manifest(version)
    assert m["id"] == version and m["metrics"]["test"]["roc_auc"] == 0.8
    assert m["files"]["model/model.bin"]["bytes"] == 7
    assert m["files"]["model/model.bin"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert (store.local_path(version) / "model" / "model.bin").read_bytes() == b"weights"
    assert store.versions() == [version]


def test_versions_are_never_overwritten(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    version = store.publish(files, _manifest(0.8))
    with pytest.raises(StoreError, match="never overwritten"):
        store.publish(files, _manifest(0.9), version=version)
    assert store.manifest(version)["metrics"]["test"]["roc_auc"] == 0.8


def test_a_crash_during_publish_leaves_nothing_visible_and_the_next_publish_works(tmp_path, files, monkeypatch):
    store = ArtifactStore(str(tmp_path / "store"))

    def crash(*args, **kwargs):
        raise OSError("disk full, injected")

    monkeypatch.setattr(store, "_commit", crash)
    with pytest.raises(OSError, match="injected"):
        store.publish(files, _manifest(0.8))
    assert store.versions() == []
    monkeypatch.undo()
    # A leftover from a process killed mid-publish (no chance to clean up) is swept later.
    leftover = tmp_path / "store" / ".staging" / "20260101T000000000Z-abcdef.dead"
    leftover.mkdir(parents=True)
    past = time.time() - 7200
    os.utime(leftover, (past, past))
    version = store.publish(files, _manifest(0.8))
    assert store.versions() == [version]
    assert not leftover.exists()


def test_a_folder_without_manifest_is_not_a_version(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    (tmp_path / "store" / "versions" / "20260101T000000000Z-abcdef").mkdir(parents=True)
    assert store.versions() == []


def test_aliases_move_with_history_promote_and_rollback(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    v1, v2, v3 = (store.publish(files, _manifest(a)) for a in (0.7, 0.8, 0.75))
    with store.lock():
        store.move_alias("production", v1, "first", "test", "publish")
        store.move_alias("production", v2, "better", "test", "publish")
    store.promote(v3, "alice", why="hotfix")
    assert store.resolve("production") == v3
    store.rollback("bob")
    assert store.resolve("production") == v2
    store.rollback("bob")
    assert store.resolve("production") == v1
    with pytest.raises(StoreError, match="no previous"):
        store.rollback("bob")
    history = store.history()
    assert [(h["from"], h["to"], h["action"]) for h in history] == [
        (None, v1, "publish"),
        (v1, v2, "publish"),
        (v2, v3, "promote"),
        (v3, v2, "rollback"),
        (v2, v1, "rollback"),
    ]
    assert history[2]["actor"] == "alice" and history[2]["why"] == "hotfix"
    assert store.aliases_of(v1) == ["production"]


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", "20261123T010203456Z-ABCDEF", "latest", "v1"])
def test_bad_version_ids_are_refused(bad):
    with pytest.raises(ConfigError):
        validate_version_id(bad)


@pytest.mark.parametrize("bad", ["../prod", "a/b", ".hidden", "", "x y", "20261123T010203456Z-abcdef"])
def test_bad_alias_names_are_refused(bad):
    with pytest.raises(ConfigError):
        validate_alias(bad)


def test_version_ids_sort_by_time_and_are_unique():
    base = dt.datetime(2026, 12, 31, 23, 59, 59, 998_000, tzinfo=dt.UTC)
    # Steps across millisecond, second, minute, day and year boundaries, and a larger jump.
    steps = [dt.timedelta(0), dt.timedelta(milliseconds=1), dt.timedelta(milliseconds=2), dt.timedelta(milliseconds=1001),
             dt.timedelta(seconds=61), dt.timedelta(days=1), dt.timedelta(days=400)]
    in_time_order = [new_version_id(base + step) for step in steps]
    shuffled = [in_time_order[i] for i in (4, 0, 6, 2, 5, 1, 3)]
    assert sorted(shuffled) == in_time_order
    assert in_time_order[0].startswith("20261231T235959998Z-") and in_time_order[-1].startswith("20280204T235959998Z-")
    # Ids taken in the same millisecond differ by their random suffix.
    same_instant = [new_version_id(base) for _ in range(50)]
    assert len(set(same_instant)) == 50 and all(validate_version_id(i) for i in same_instant)


def test_resolving_an_unknown_ref_names_it(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    with pytest.raises(StoreError, match="staging"):
        store.resolve("staging")


def test_an_fsspec_memory_store_publishes_and_resolves(tmp_path, files):
    store = ArtifactStore("memory://qdup-test-store", registry_url=f"sqlite:///{tmp_path / 'registry.sqlite'}")
    version = store.publish(files, _manifest(0.6))
    with store.lock():
        store.move_alias("latest", version, "t", "t", "publish")
    assert store.versions() == [version] and store.resolve("latest") == version
    assert store.manifest(version)["files"]["model/model.bin"]["bytes"] == 7


def test_a_move_with_a_stale_expectation_changes_nothing(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    v1, v2 = (store.publish(files, _manifest(a)) for a in (0.7, 0.8))
    store.move_alias("latest", v1, "first", "test", "publish", expected=None)
    with pytest.raises(StoreError, match="moved meanwhile"):
        store.move_alias("latest", v2, "stale", "test", "publish", expected=None)
    assert store.resolve("latest") == v1 and len(store.history()) == 1
    store.move_alias("latest", v2, "fresh", "test", "publish", expected=v1)
    assert store.resolve("latest") == v2 and [h["to"] for h in store.history()] == [v1, v2]


def test_an_unregistered_version_cannot_be_aliased(tmp_path, files):
    store = ArtifactStore(str(tmp_path / "store"))
    with pytest.raises(StoreError, match="no version"):
        store.move_alias("production", "20260101T000000000Z-abcdef", "x", "test", "publish")
    assert store.aliases() == {} and store.history() == []


def test_a_publish_stopped_before_registration_is_invisible_and_completed_by_a_retry(tmp_path, files, monkeypatch):
    store = ArtifactStore(str(tmp_path / "store"))

    def crash(*args, **kwargs):
        raise OSError("registry unreachable, injected")

    monkeypatch.setattr(store.registry, "register", crash)
    version = new_version_id()
    with pytest.raises(OSError, match="injected"):
        store.publish(files, _manifest(0.8), version=version)
    assert (tmp_path / "store" / "versions" / version / "manifest.json").is_file()
    assert store.versions() == []
    with pytest.raises(StoreError, match="no version"):
        store.resolve(version)
    monkeypatch.undo()
    assert store.publish(files, _manifest(0.8), version=version) == version
    assert store.versions() == [version] and store.verify(version) == []
    # The same id with other files is still refused.
    (tmp_path / "other.bin").write_bytes(b"other")
    with pytest.raises(StoreError, match="never overwritten"):
        store.publish({"model/model.bin": tmp_path / "other.bin"}, _manifest(0.9), version=version)


def _model_files(tmp_path, threshold: float = 0.4242) -> dict:
    # Same length as the tampered value 0.0001, so only the sha256 can tell them apart.
    (tmp_path / "threshold.json").write_text(json.dumps({"threshold": threshold}))
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 16)
    return {"model/threshold.json": tmp_path / "threshold.json", "model/weights.bin": tmp_path / "weights.bin"}


def test_a_tampered_threshold_is_refused_by_name_when_loading_and_promoting(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    v1 = store.publish(_model_files(tmp_path), _manifest(0.7))
    v2 = store.publish(_model_files(tmp_path), _manifest(0.8))
    store.promote(v1, "alice")
    assert store.open_version("production") == tmp_path / "store" / "versions" / v1
    assert store.verify(v1) == [] and store.verify(v2) == []
    threshold = tmp_path / "store" / "versions" / v1 / "model" / "threshold.json"
    threshold.write_text(json.dumps({"threshold": 0.0001}))
    with pytest.raises(TamperedVersionError, match=rf"version {v1} is damaged.*model/threshold\.json: sha256"):
        store.open_version("production")
    [problem] = store.verify(v1)
    assert problem.startswith("model/threshold.json: sha256")
    # Re-writing the manifest's hash to match is caught too: the registry holds the manifest's own hash.
    manifest_path = tmp_path / "store" / "versions" / v1 / "manifest.json"
    m = json.loads(manifest_path.read_text())
    m["files"]["model/threshold.json"]["sha256"] = hashlib.sha256(threshold.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(m))
    assert store.verify(v1) == ["manifest.json: sha256 differs from the one registered at publish"]
    with pytest.raises(TamperedVersionError, match=v1):
        store.manifest(v1)
    # promote and rollback check their target before production moves.
    store.promote(v2, "alice")
    with pytest.raises(TamperedVersionError, match=v1):
        store.rollback("bob")
    with pytest.raises(TamperedVersionError, match=v1):
        store.promote(v1, "bob")
    assert store.resolve("production") == v2 and len(store.history()) == 2


def test_missing_extra_and_resized_files_are_each_named(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    v = store.publish(_model_files(tmp_path), _manifest(0.7))
    folder = tmp_path / "store" / "versions" / v
    (folder / "model" / "weights.bin").write_bytes(b"short")
    (folder / "model" / "threshold.json").unlink()
    (folder / "model" / "backdoor.py").write_text("print('hi')")
    assert store.verify(v) == [
        "model/threshold.json: missing",
        "model/weights.bin: 5 bytes, manifest says 4096",
        "model/backdoor.py: not in the manifest",
    ]


def test_the_lock_file_tantivy_takes_when_it_opens_an_index_is_not_an_unexpected_file(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    v = store.publish(_model_files(tmp_path), _manifest(0.7))
    folder = tmp_path / "store" / "versions" / v / "model"
    (folder / ".tantivy-meta.lock").write_bytes(b"")
    assert store.verify(v) == []
    (folder / ".tantivy-meta.lock.py").write_text("print('hi')")  # only the lock files' own names are passed over
    assert store.verify(v) == ["model/.tantivy-meta.lock.py: not in the manifest"]


def test_a_remote_store_without_a_shared_registry_is_refused(monkeypatch):
    monkeypatch.delenv("QDUP_REGISTRY_URL", raising=False)
    with pytest.raises(StoreError, match=r"memory://qdup-no-registry is not on a local disk: set publish.registry_url"):
        ArtifactStore("memory://qdup-no-registry")
    monkeypatch.setenv("QDUP_REGISTRY_URL", "sqlite:///:memory:")
    assert ArtifactStore("memory://qdup-no-registry").registry_url == "sqlite:///:memory:"


def test_remote_versions_are_cached_verified_and_a_damaged_copy_is_fetched_again(tmp_path, qdup_home):
    url = f"memory://qdup-cache-{tmp_path.name}"
    store = ArtifactStore(url, registry_url=f"sqlite:///{tmp_path / 'registry.sqlite'}")
    v = store.publish(_model_files(tmp_path), _manifest(0.7))
    store.promote(v, "alice")
    local = store.open_version("production")
    assert local == qdup_home / "cache" / "versions" / v
    assert json.loads((local / "model" / "threshold.json").read_text()) == {"threshold": 0.4242}
    (local / "model" / "threshold.json").write_text(json.dumps({"threshold": 0.0001}))
    again = store.open_version(v)
    assert again == local and json.loads((local / "model" / "threshold.json").read_text()) == {"threshold": 0.4242}
    store.fs.pipe_file(f"{store.version_path(v)}/model/threshold.json", json.dumps({"threshold": 0.0001}).encode())
    (local / "model" / "weights.bin").unlink()
    with pytest.raises(TamperedVersionError, match=rf"{v}.*model/threshold\.json"):
        store.open_version(v)
    assert not list((qdup_home / "cache" / "versions").glob(f".{v}*"))  # no partial download left behind


def test_a_store_written_before_the_registry_is_imported_once(tmp_path, files):
    root = tmp_path / "store"
    v1, v2 = new_version_id(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), new_version_id(dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    for v in (v1, v2):
        (root / "versions" / v / "model").mkdir(parents=True)
        (root / "versions" / v / "model" / "model.bin").write_bytes(b"weights")
        entry = {"sha256": hashlib.sha256(b"weights").hexdigest(), "bytes": 7}
        (root / "versions" / v / "manifest.json").write_text(json.dumps({"id": v, "files": {"model/model.bin": entry}}))
    history = [
        {"alias": "production", "from": None, "to": v1, "action": "publish", "why": "a", "actor": "x", "at": "t1"},
        {"alias": "production", "from": v1, "to": v2, "action": "publish", "why": "b", "actor": "x", "at": "t2"},
    ]
    (root / "aliases").mkdir()
    (root / "aliases" / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    (root / "aliases" / "production.json").write_text(json.dumps({"version": v2}))
    store = ArtifactStore(str(root))
    assert store.versions() == [v1, v2] and store.resolve("production") == v2 and store.history() == history
    store.rollback("bob")
    assert len(ArtifactStore(str(root)).history()) == 3 and store.resolve("production") == v1


def _qdup(home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QDUP_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "qdup.cli", *args], env=env, check=False, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_qdup_verify_exit_codes_and_predict_refusing_a_tampered_version(tmp_path):
    store_url = str(tmp_path / "store")
    store = ArtifactStore(store_url)
    v1 = store.publish(_model_files(tmp_path), _manifest(0.7))
    v2 = store.publish(_model_files(tmp_path), _manifest(0.8))
    store.promote(v1, "alice")
    clean = _qdup(tmp_path, "verify", "--all", "--store", store_url)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines() == ["2 version(s) checked, 0 damaged: every file matches its manifest"]
    (tmp_path / "store" / "versions" / v1 / "model" / "threshold.json").write_text(json.dumps({"threshold": 0.0001}))
    damaged = _qdup(tmp_path, "verify", "--all", "--store", store_url)
    assert damaged.returncode == 2
    lines = damaged.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "2 version(s) checked, 1 damaged"
    assert lines[0].startswith(f"DAMAGED {v1} (production): model/threshold.json: sha256 ")
    one = _qdup(tmp_path, "verify", v2, "--store", store_url, "--json")
    assert one.returncode == 0 and json.loads(one.stdout)["versions"] == [{"version": v2, "aliases": [], "problems": []}]
    by_alias = _qdup(tmp_path, "verify", "production", "--store", store_url, "--json")
    assert by_alias.returncode == 2 and json.loads(by_alias.stdout)["damaged"] == 1
    default = _qdup(tmp_path, "verify", "--store", store_url)  # no --model: production
    assert default.returncode == 2 and default.stdout.startswith(f"DAMAGED {v1} (production)")
    predict = _qdup(tmp_path, "predict", "--model", "production", "--store", store_url, "how old is the sun", "age of the sun")
    assert predict.returncode == 2 and predict.stdout == ""
    assert f"version {v1} is damaged and was not used: model/threshold.json: sha256" in predict.stderr
    assert "Traceback" not in predict.stderr


# ---------------------------------------------------------------- several processes, one store

N_WORKERS, N_OPS = 4, 10


def _race_worker(url: str, registry_url: str | None, src: str, worker: int, out: str) -> None:
    store = ArtifactStore(url, registry_url=registry_url)
    rng = random.Random(worker)
    src_dir = Path(src) / f"w{worker}"
    src_dir.mkdir(parents=True)
    moves, published = 0, []
    for i in range(N_OPS):
        (src_dir / "weights.bin").write_bytes(rng.randbytes(32 * 1024))
        (src_dir / "threshold.json").write_text(json.dumps({"threshold": rng.random(), "worker": worker, "op": i}))
        files = {"model/weights.bin": src_dir / "weights.bin", "model/threshold.json": src_dir / "threshold.json"}
        version = store.publish(files, _manifest(rng.random()))
        published.append(version)
        who = f"worker {worker}"
        with store.lock():  # the flow's pattern: read production, decide, move latest and maybe production
            current = store.aliases().get("production")
            store.move_alias("latest", version, "every publish", who, "publish")
            moves += 1
            if current is None or rng.random() < 0.5:
                store.move_alias("production", version, "gate passed", who, "publish")
                moves += 1
        action = rng.choice(["promote", "rollback", "none"])
        if action == "promote":
            store.promote(published[rng.randrange(len(published))], who)
            moves += 1
        elif action == "rollback":
            try:
                store.rollback(who)
                moves += 1
            except StoreError as exc:
                assert "no previous version" in str(exc)
    Path(out).write_text(json.dumps({"moves": moves, "published": published}))


def _race_reader(url: str, registry_url: str | None, stop: str, out: str) -> None:
    # Polls until the writers are done; bounded so a broken writer cannot hang the test.
    store = ArtifactStore(url, registry_url=registry_url)
    polls, productions, violations = 0, set(), []
    while not Path(stop).exists() and polls < 5000:
        polls += 1
        for version in store.versions()[-3:]:
            problems = store.verify(version)
            if problems:
                violations.append(f"listed {version}: {problems}")
        production = store.aliases().get("production")
        if production is not None:
            productions.add(production)
            problems = store.verify(production)
            if problems:
                violations.append(f"production {production}: {problems}")
    Path(out).write_text(json.dumps({"polls": polls, "productions": sorted(productions), "violations": violations}))


def _race(tmp_path, registry_url: str | None) -> None:
    url = str(tmp_path / "store")
    ctx = multiprocessing.get_context("spawn")
    stop = tmp_path / "writers-done"
    reader = ctx.Process(target=_race_reader, args=(url, registry_url, str(stop), str(tmp_path / "reader.json")))
    reader.start()
    writers = [
        ctx.Process(target=_race_worker, args=(url, registry_url, str(tmp_path / "src"), w, str(tmp_path / f"w{w}.json")))
        for w in range(N_WORKERS)
    ]
    for p in writers:
        p.start()
    for p in writers:
        p.join(300)
    stop.touch()
    reader.join(120)
    assert [p.exitcode for p in writers] == [0] * N_WORKERS and reader.exitcode == 0
    results = [json.loads((tmp_path / f"w{w}.json").read_text()) for w in range(N_WORKERS)]
    seen = json.loads((tmp_path / "reader.json").read_text())

    store = ArtifactStore(url, registry_url=registry_url)
    published = sorted(v for r in results for v in r["published"])
    assert store.versions() == published and len(published) == N_WORKERS * N_OPS
    history = store.history()
    assert len(history) == sum(r["moves"] for r in results)  # no lost history entry
    for alias in ("latest", "production"):
        moves = [h for h in history if h["alias"] == alias]
        # Each move starts where the previous one ended: no lost update, no interleaving.
        assert moves[0]["from"] is None and all(h["from"] == prev["to"] for prev, h in itertools.pairwise(moves))
        assert store.resolve(alias) == moves[-1]["to"]
    assert store.production_stack()[-1] == store.resolve("production")
    assert seen["violations"] == [] and seen["polls"] >= 1 and set(seen["productions"]) <= set(published)
    assert all(store.verify(v) == [] for v in published)


def test_concurrent_publishers_and_promoters_on_sqlite_lose_nothing(tmp_path):
    _race(tmp_path, None)


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1, started from the Debian binaries."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    psycopg = pytest.importorskip("psycopg", reason="the psycopg driver is not installed")
    run_as: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="qdup-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = base / "data"
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "qdup", "-A", "trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    options = f"-k {base} -h 127.0.0.1 -p {port} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "120",
                    "-o", options, "start"], check=True, capture_output=True, timeout=180)
    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=qdup dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE qdup_registry")
        yield f"postgresql+psycopg://qdup@127.0.0.1:{port}/qdup_registry"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False, capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def test_concurrent_publishers_and_promoters_on_postgresql_lose_nothing(tmp_path, postgres_url):
    _race(tmp_path, postgres_url)
    # Another host sees the same registry; a second store on it starts from what the first wrote.
    store = ArtifactStore(str(tmp_path / "store"), registry_url=postgres_url)
    assert len(store.versions()) == N_WORKERS * N_OPS
