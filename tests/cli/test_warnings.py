"""Every warning a stage logs reaches the terminal under its stage line (a damaged cache entry, a drifted data set,
a resumed training), and `qdup run --quiet` keeps the stage lines only."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qdup.cli.progress import StageProgress
from qdup.config import FetchConfig, ModelConfig, TrainConfig, VocabConfig
from qdup.data.demo import generate_pairs
from qdup.data.profile import VERSION_PROFILE_DIR
from qdup.log import leveled
from qdup.registry.store import ArtifactStore
from qdup.text import standardize

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _qdup(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QDUP_HOME": str(home / "qdup"), "PREFECT_HOME": str(home / "prefect"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "qdup.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)


def _damage_cache(home: Path, source: Path) -> Path:
    """Fetch `source` into the cache (the real fetch), then change one byte of the cached copy."""
    from qdup.stages.fetch import build_fetch

    manifest, _ = build_fetch(FetchConfig(source=str(source)), home / "qdup" / "cache", log=lambda m: None)
    cached = home / "qdup" / "cache" / manifest["sha256"] / "data.tsv"
    data = bytearray(cached.read_bytes())
    data[-2] = ord("0") if data[-2] != ord("0") else ord("1")
    cached.write_bytes(bytes(data))
    return cached


def _production_from_other_data(home: Path, tmp: Path) -> str:
    """A production version whose drift profile was made from other data: fewer duplicates, longer questions."""
    from qdup.stages.drift import build_profile

    other = generate_pairs(2000, seed=3)
    other = other[(other["is_duplicate"] == 0) | (np.arange(len(other)) % 4 == 0)].reset_index(drop=True)
    for col in ("question1", "question2"):
        other[col] = other[col] + " What is the best way to do it and how do I learn it?"
    pq.write_table(pa.Table.from_pandas(other, preserve_index=False), tmp / "validated.parquet")
    words = sorted({t for col in ("question1", "question2") for q in other[col] for t in standardize(q)})
    (tmp / "vocabulary.txt").write_text("\n".join(["", "[UNK]", *words]) + "\n")
    build_profile(tmp / "validated.parquet", tmp / "vocabulary.txt", tmp / "profile")
    files = {f"{VERSION_PROFILE_DIR}/{p.name}": p for p in (tmp / "profile").iterdir()} | {"vocabulary.txt": tmp / "vocabulary.txt"}
    store = ArtifactStore(str(home / "qdup" / "store"))
    version = store.publish(files, {"note": "production of other data"})
    store.promote(version, "test")
    return version


def test_a_damaged_cache_and_drift_are_named_under_their_stage_lines_and_quiet_drops_them(tmp_path, demo_tsv):
    cached = _damage_cache(tmp_path, demo_tsv)
    production = _production_from_other_data(tmp_path, tmp_path)
    done = _qdup(tmp_path, "run", "--source", str(demo_tsv), "--until", "drift")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert [line.split()[:2] for line in lines if not line.startswith("  ")] == [["✓", "fetch"], ["✓", "validate"], ["✓", "drift"]]
    fetch, drift = lines.index(next(x for x in lines if x.startswith("✓ fetch"))), lines.index(next(x for x in lines if x.startswith("✓ drift")))
    assert lines[fetch + 1].startswith(f"  ! fetch: cached dataset {cached} is damaged (it hashes to sha256 ")
    assert lines[fetch + 1].endswith("edited or corrupted on disk); fetching it again")
    assert drift == len(lines) - 2 and lines[drift + 1].startswith("  ! drift: ")
    assert "drift expectations failed (warning only): expect_column_mean_to_be_between on 'is_duplicate'" in lines[drift + 1]
    assert production  # compared with it: its profile is the only one in the store

    _damage_cache(tmp_path, demo_tsv)
    quiet = _qdup(tmp_path, "run", "--source", str(demo_tsv), "--until", "drift", "--quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert [line.split()[:2] for line in quiet.stderr.strip().splitlines()] == [["✓", "fetch"], ["✓", "validate"], ["✓", "drift"]]


class _Console:
    def __init__(self):
        self.printed: list[str] = []

    def print(self, text, **kwargs):
        self.printed.append(text)


class _Interrupt(Exception):
    pass


def test_a_resumed_training_is_named_under_the_train_line(tmp_path):
    from qdup.model.train import train_model
    from qdup.model.vocab import fit_vectorizer

    pairs = generate_pairs(400, seed=1)
    duplicates = pairs[pairs["is_duplicate"] == 1].reset_index(drop=True)
    train, val = duplicates.iloc[:120], duplicates.iloc[120:160]
    vec = fit_vectorizer(train["question1"].tolist() + train["question2"].tolist(), VocabConfig())
    model = ModelConfig(embedding_dim=8, lstm_units=8, max_length=10, subwords=False)
    cfg = TrainConfig(epochs=2, batch_size=32, early_stopping_patience=2)

    def stop_after_one(epoch: int, total: int, logs: dict[str, float]) -> None:
        raise _Interrupt("killed")

    with pytest.raises(_Interrupt):
        train_model(train, val, vec, model, cfg, seed=3, work_dir=tmp_path, on_epoch_end=stop_after_one, log=lambda m: None)

    # The train task's log: Prefect's run logger names the task on each record, as this adapter does.
    logger = logging.getLogger("tests.cli.train")
    logger.propagate, logger.level = False, logging.INFO
    console = _Console()
    progress = StageProgress(console, live=False)
    logger.addHandler(progress)
    try:
        log = leveled(logging.LoggerAdapter(logger, {"task_name": "train"}))
        log("[train] running (key abc)")
        result = train_model(train, val, vec, model, cfg, seed=3, work_dir=tmp_path, log=log)
        log("[train] done in 1.0s -> /z")
    finally:
        logger.removeHandler(progress)
    assert result.resumed_from_epoch == 1
    assert len(console.printed) == 1
    line, warning = console.printed[0].splitlines()
    assert line.startswith("✓ train      done in ") and line.endswith(", 2 epochs")
    assert warning == "  ! resuming from epoch 1, the last checkpoint of an interrupted run of this training"
