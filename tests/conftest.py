"""Test-wide settings: isolated QDUP_HOME and PREFECT_HOME, no telemetry, quiet TensorFlow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before Prefect or TensorFlow is imported by any test module.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="qdup-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_TMP / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["QDUP_HOME"] = str(_SESSION_TMP / "qdup-home")

SHARED_SAMPLE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "quora_duplicate_questions_first10k.tsv"
)


@pytest.fixture
def qdup_home(tmp_path, monkeypatch) -> Path:
    """A fresh QDUP_HOME for one test."""
    home = tmp_path / "qdup-home"
    monkeypatch.setenv("QDUP_HOME", str(home))
    return home


@pytest.fixture
def shared_sample() -> Path:
    """The real 10k-row Quora sample beside the checkout; skips the test when absent."""
    if not SHARED_SAMPLE.is_file():
        pytest.skip(f"real sample not found at {SHARED_SAMPLE}")
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def prefect_harness():
    """One real (temporary) Prefect server for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def demo_tsv(tmp_path_factory) -> Path:
    """A small generated dataset in the Quora TSV format (600 rows, seed 7)."""
    from qdup.data.demo import write_demo_tsv

    path = tmp_path_factory.mktemp("demo") / "demo.tsv"
    write_demo_tsv(path, rows=600, seed=7)
    return path
