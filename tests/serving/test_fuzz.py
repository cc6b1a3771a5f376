"""The API keeps its published contract under fuzzing: schemathesis, from the server's own OpenAPI schema, every check on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qdup.cli.main import main as cli_main
from qdup.serving.http import create_app
from qdup.serving.settings import ServeConfig
from tests.serving.conftest import TEXTS, live_server, make_store

# Small limits keep every generated request cheap; the body limit is above anything they allow (a question of
# 50 characters escaped as \\uXXXX surrogate pairs is 600 bytes), so a valid body is never answered 413.
LIMITS = {"max_batch_pairs": 4, "max_question_chars": 50, "max_search_queries": 3, "max_k": 8, "max_body_bytes": 64_000}
SEED = 17
# Seconds for the whole run: the examples and coverage phases, then fuzzing repeated until it is spent.
TIME_BUDGET_S = 25


@pytest.mark.slow
def test_every_operation_keeps_the_schemas_contract(tmp_path, tiny_exports):
    """schemathesis' own runner (all phases but stateful, positive and negative data, all checks) against a live server.

    The version has a question index, so /v1/search answers 200 and is fuzzed beyond its 501.
    """
    store, v1, _ = make_store(tmp_path / "store", tiny_exports)
    questions = tmp_path / "questions.tsv"
    questions.write_text("id\tquestion\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(TEXTS)))
    assert cli_main(["index", "build", "--model", v1, "--store", store.url, "--questions", str(questions)]) == 0
    report = tmp_path / "schemathesis.json"
    app = create_app(ServeConfig(store=store.url, poll_s=60, **LIMITS))
    with live_server(app) as url:
        cmd = [
            sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
            "--checks", "all", "--mode", "all", "--phases", "examples,coverage,fuzzing",
            "--seed", str(SEED), "--max-time", str(TIME_BUDGET_S), "--workers", "1", "--request-timeout", "30",
            "--report", "json", "--report-json-path", str(report), "--no-color",
        ]
        # cwd: a folder of its own, so no schemathesis.toml but the defaults' applies, and its example database stays there.
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_BUDGET_S + 240)
        facts = httpx_get_json(f"{url}/v1/model")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert report.is_file(), run.stdout[-3000:]
    summary = json.loads(report.read_text())
    assert summary["seed"] == SEED and summary["operations"]["tested"] == summary["operations"]["total"] == 7
    assert {phase: summary["phases"][phase]["status"] for phase in ("coverage", "fuzzing")} == {"coverage": "success", "fuzzing": "success"}
    assert summary["test_cases"]["generated"] >= 200 and summary["test_cases"]["with_failures"] == 0
    assert summary["failures"] == [] and summary["errors"] == []
    # The requests really reached the model (each similarity request is one model call or part of one).
    assert facts["batching"]["requests"] > 50


def httpx_get_json(url: str) -> dict:
    import httpx

    return httpx.get(url, timeout=30).json()
