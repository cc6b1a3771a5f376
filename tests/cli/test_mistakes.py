"""Each common mistake is answered by `qdup` in one line that names the user's own file, column or row and the next
command, exit 2, no traceback, before any model, index, server or pipeline library loads."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import pandas as pd
import pytest

from qdup.config import ModelConfig, VocabConfig
from qdup.model.network import build_encoder
from qdup.model.vocab import fit_vectorizer
from qdup.registry.store import ArtifactStore
from qdup.serving.export import export_models

ROOT = Path(__file__).resolve().parents[2]
# `qdup ARGS` in a fresh interpreter, with the modules named in QDUP_TEST_MISSING made unimportable (an install
# without that extra); then prints which heavy libraries answering the mistake imported.
PROBE = """
import os, sys
for name in filter(None, os.environ.get("QDUP_TEST_MISSING", "").split(",")):
    sys.modules[name] = None
from qdup.cli.main import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print(sorted(m for m in ("tensorflow", "onnxruntime", "faiss", "prefect", "uvicorn") if sys.modules.get(m) is not None))
sys.exit(rc)
"""
CFG = ModelConfig(embedding_dim=8, lstm_units=8, max_length=8)


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_tsv) -> dict[str, Path]:
    """A store whose production is a tiny real export (no index), the export folder itself, and the mistaken files."""
    tmp = tmp_path_factory.mktemp("mistakes")
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    questions = list(dict.fromkeys(list(df.question1) + list(df.question2)))[:100]
    vec = fit_vectorizer(questions, VocabConfig())
    keras.utils.set_random_seed(0)
    build_encoder(vec.vocabulary_size(), CFG).save(tmp / "encoder.keras")
    export_models(tmp / "encoder.keras", vec, CFG, 0.9, tmp / "export")
    store = ArtifactStore(str(tmp / "home" / "qdup" / "store"))
    store.promote(store.publish({f"model/{p.name}": p for p in (tmp / "export").iterdir()}, {"note": "test"}), "test")
    (tmp / "no_question2.tsv").write_text("id\tquestion1\n1\tHow do I learn Python?\n")
    (tmp / "blank.tsv").write_text("question1\tquestion2\nHow do I learn Python?\tWhat is Python?\nWhy?\t \n")
    df.drop(columns=["is_duplicate"]).to_csv(tmp / "no_label.tsv", sep="\t", index=False)
    (tmp / "no_index").mkdir()
    return {"tmp": tmp, "home": tmp / "home", "export": tmp / "export", "demo": demo_tsv}


def _qdup(home: Path, *args: str, missing: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QDUP_HOME": str(home / "qdup"), "PREFECT_HOME": str(home / "prefect"), "PYTHONPATH": str(ROOT),
           "QDUP_TEST_MISSING": missing}
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdup: error: "), done.stderr
    # Answered before any model, index, server or pipeline library loaded: what makes it fast.
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
    return lines[0]


def test_a_pairs_file_without_question2_is_named_before_the_model_loads(world):
    pairs, out = world["tmp"] / "no_question2.tsv", world["tmp"] / "out.parquet"
    line = _one_line_error(_qdup(world["home"], "predict", "--pairs", str(pairs), "--out", str(out)))
    assert line == (f"qdup: error: {pairs} has no 'question2' column (its columns: id, question1); its first line must name "
                    f"question1 and question2, tab-separated; fix it, then: qdup predict --pairs {pairs} --out {out}")
    assert not out.exists()


def test_an_empty_question_in_a_pairs_file_is_named_by_row_and_line(world):
    pairs, out = world["tmp"] / "blank.tsv", world["tmp"] / "out.parquet"
    line = _one_line_error(_qdup(world["home"], "predict", "--pairs", str(pairs), "--out", str(out)))
    assert f"{pairs}: question2 of data row 1 (file line 3) is empty or whitespace-only: ' '" in line
    assert line.endswith(f"fix it, then: qdup predict --pairs {pairs} --out {out}")


def test_an_empty_question_on_the_command_line(world):
    line = _one_line_error(_qdup(world["home"], "predict", "How do I learn Python?", "  "))
    assert line == ('qdup: error: question 2 is empty; give two questions: qdup predict "How do I learn Python?" '
                    '"What is the best way to learn Python?"')


def test_index_on_a_folder_without_an_index(world):
    folder = world["tmp"] / "no_index"
    line = _one_line_error(_qdup(world["home"], "search", "--index", str(folder), "How do I learn Python?"))
    assert line == (f"qdup: error: --index {folder}: no question index there (index.json is missing); build one: "
                    f"qdup index build --model production --index {folder}")


def test_a_training_file_without_is_duplicate_names_the_users_file(world):
    source = world["tmp"] / "no_label.tsv"
    line = _one_line_error(_qdup(world["home"], "run", "--source", str(source)))
    assert line == (f"qdup: error: --source {source}: no column 'is_duplicate' (its first line names: id, qid1, qid2, "
                    "question1, question2); a training TSV has the tab-separated columns id qid1 qid2 question1 question2 "
                    f"is_duplicate: fix it, then: qdup run --source {source}")
    assert "cache" not in line


@pytest.mark.parametrize("argv, missing, pip", [
    (["run", "--source", "DEMO"], "prefect", "pip install 'qdup[pipeline]'"),
    (["serve"], "prefect", "pip install 'qdup[pipeline]'"),
    (["serve-model"], "uvicorn", "pip install 'qdup[serve]'"),
], ids=["run without prefect", "serve without prefect", "serve-model without uvicorn"])
def test_a_missing_extra_names_the_pip_command(world, argv, missing, pip):
    argv = [str(world["demo"]) if a == "DEMO" else a for a in argv]
    line = _one_line_error(_qdup(world["home"], *argv, missing=missing))
    assert line.startswith(f"qdup: error: `qdup {argv[0]}` needs {missing}, which is not installed") and line.endswith(pip)


def test_a_busy_port_is_found_before_the_model_loads_and_nothing_claims_to_serve(world):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _qdup(world["home"], "serve-model", "--port", str(port))
    line = _one_line_error(done)
    assert line == (f"qdup: error: --port {port}: cannot listen on 127.0.0.1:{port} (Address already in use); another "
                    f"server holds it? stop it or pick another port: qdup serve-model --port {port + 1}")
    assert "serving" not in done.stdout


def test_an_empty_store_suggests_the_first_run(tmp_path):
    line = _one_line_error(_qdup(tmp_path, "search", "How do I learn Python?"))
    assert line == (f"qdup: error: no version in the store {tmp_path / 'qdup' / 'store'} yet: train and publish one first: "
                    "qdup demo-data demo.tsv --rows 20000 && qdup run --source demo.tsv --n-train 0.75 --n-test 0.25")


def test_an_export_folder_is_taken_by_m_or_named_as_one(world):
    export = world["export"]
    line = _one_line_error(_qdup(world["home"], "search", "-m", str(export), "How do I learn Python?"))
    assert line == (f"qdup: error: export folder {export} has no question index; build one: qdup index build --model {export} "
                    "--questions FILE.tsv --index DIR")
    # A command about the store's versions says what an export folder is not, instead of "invalid alias name".
    line = _one_line_error(_qdup(world["home"], "show", "-m", str(export)))
    assert line == f"qdup: error: --model {export}: an export folder; this command takes a version of the store (its ids and aliases: qdup versions)"
