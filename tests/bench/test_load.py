"""The load benchmark's pieces: request body files, wrk's command line and result line, the targets table, and
rotate.lua itself against a small HTTP server on 127.0.0.1 (when wrk is installed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.load.report import render_markdown, targets_table
from bench.load.wrk import (
    LUA_SCRIPT,
    RESULT_MARKER,
    WrkError,
    find_wrk,
    pair_batches,
    parse_wrk_output,
    search_body,
    similarity_body,
    summarise,
    write_bodies,
    wrk_command,
)

QUESTIONS = [f"How do I learn topic number {i}?" for i in range(10)]


def test_pairs_use_the_whole_pool_before_repeating_and_are_seeded():
    batches = pair_batches(QUESTIONS, 1, 5, seed=3)
    sent = [q for b in batches for pair in b for q in pair]
    assert sorted(sent) == sorted(QUESTIONS)  # 5 one-pair requests = the 10 questions, each once
    assert pair_batches(QUESTIONS, 1, 5, seed=3) == batches
    assert pair_batches(QUESTIONS, 1, 5, seed=4) != batches
    big = pair_batches(QUESTIONS, 4, 3, seed=0)
    assert [len(b) for b in big] == [4, 4, 4]
    with pytest.raises(ValueError):
        pair_batches([], 1, 1, seed=0)


def test_body_file_has_one_valid_json_body_per_line(tmp_path):
    tricky = [("Line one\nline two?", 'A "quoted" question?'), ("Ünïcode — ok?", "Tab\there?")]
    bodies = [similarity_body(tricky[:1]), similarity_body(tricky), search_body("What is 2+2?", 5)]
    info = write_bodies(tmp_path / "b.jsonl", bodies)
    lines = (tmp_path / "b.jsonl").read_text(encoding="utf-8").splitlines()
    assert info["bodies"] == len(lines) == 3
    assert [json.loads(line) for line in lines] == [
        {"question1": "Line one\nline two?", "question2": 'A "quoted" question?'},
        {"pairs": [{"question1": a, "question2": b} for a, b in tricky]},
        {"question": "What is 2+2?", "k": 5},
    ]
    assert info["max_bytes"] == max(len(line.encode()) for line in lines)
    with pytest.raises(ValueError):
        write_bodies(tmp_path / "none.jsonl", [])


def test_wrk_command_splits_the_request_budget_over_threads():
    cmd = wrk_command("wrk", "http://127.0.0.1:9", "/v1/search", LUA_SCRIPT, threads=2, connections=16, seconds=10,
                      max_requests=1001, timeout_s=60)
    assert cmd[:9] == ["wrk", "-t", "2", "-c", "16", "-d", "10s", "--timeout", "60s"]
    assert cmd[-6:] == ["--", str(LUA_SCRIPT), "/v1/search", "501", "0", "2"]
    one = wrk_command("wrk", "http://h", "/", LUA_SCRIPT, threads=2, connections=1, seconds=0.4, max_requests=5, timeout_s=1)
    assert one[1:7] == ["-t", "1", "-c", "1", "-d", "1s"]  # never more threads than connections, at least 1 s
    with pytest.raises(ValueError):
        wrk_command("wrk", "http://h", "/", LUA_SCRIPT, threads=1, connections=0, seconds=1, max_requests=1, timeout_s=1)


RAW = {
    "duration_us": 5_000_000, "requests": 300, "bytes": 1000,
    "errors": {"connect": 0, "read": 1, "write": 0, "status": 2, "timeout": 0},
    "latency_us": {"min": 900, "max": 40_000, "mean": 2500.0, "stdev": 10.0,
                   "percentiles": {"50": 2100, "90": 3000, "99": 9000, "99.9": 30_000}},
    "threads": [
        {"statuses": {"200": 149, "422": 1}, "versions": {"a": 100, "b": 49}, "version_changes": 1,
         "first_sent_s": 100.0, "last_answer_s": 103.5, "stopped_on_budget": False},
        {"statuses": {"200": 149, "503": 1}, "versions": {"a": 60, "b": 89}, "version_changes": 3,
         "first_sent_s": 100.5, "last_answer_s": 104.0, "stopped_on_budget": True},
    ],
}


def test_parse_and_summarise_the_result_line():
    text = f"Running 5s test @ http://127.0.0.1:1\n  2 threads\n{RESULT_MARKER}{json.dumps(RAW)}\n"
    s = summarise(parse_wrk_output(text), items_per_request=10)
    assert (s["answered"], s["ok"], s["non_2xx"], s["socket_errors"], s["failed"]) == (300, 298, 2, 1, 3)
    assert s["statuses"] == {"200": 298, "422": 1, "503": 1}
    assert s["versions"] == {"a": 160, "b": 138}
    assert s["window_s"] == 4.0  # first request sent (100.0) to last answer (104.0), across threads
    assert s["requests_per_s"] == pytest.approx(74.5)
    assert s["items_per_s"] == pytest.approx(745.0)
    assert s["latency_ms"] == {"p50": 2.1, "p90": 3.0, "p99": 9.0, "p99.9": 30.0, "mean": 2.5, "max": 40.0}
    assert s["version_changes_per_thread"] == [1, 3]
    assert s["stopped_on_budget"] is True
    empty = summarise({"threads": [{"statuses": {}, "versions": {}}], "errors": {}}, 1)
    assert (empty["answered"], empty["requests_per_s"], empty["latency_ms"]["p50"]) == (0, None, None)
    with pytest.raises(WrkError, match="no QDUP_WRK_JSON line"):
        parse_wrk_output("Running 5s test\nunable to connect to 127.0.0.1:1 Connection refused\n")


def test_missing_wrk_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(SystemExit, match="apt-get install -y wrk"):
        find_wrk()


def _phase(items_per_s, p50, p99, alone, *, clients=1, items=1, failed=0, alone_key="pairs_per_s", alone_p50=None):
    return {"clients": clients, "items_per_request": items,
            "server": {"items_per_s": items_per_s, "requests_per_s": items_per_s, "answered": 100, "failed": failed,
                       "latency_ms": {"p50": p50, "p99": p99}},
            "model_alone": {alone_key: alone, "p50_ms": alone_p50}}


def _results(generated=False):
    return {
        "command": "python -m bench.load", "commit": "abc", "started": "now", "total_seconds": 1.0,
        "machine": {"cpus": 2, "usable_cores": 2, "cpu_model": "x", "ram_gib": 8.0, "loadavg_start": [0.1], "wrk": "wrk 4"},
        "model": {"description": "m", "first": "v1", "second": "v2", "search_method": "hybrid", "index_questions": 19413},
        "questions": {"source": "s", "pool": 10, "generated": generated, "median_chars": 30},
        "bodies": {"single": {"bodies": 5, "mean_bytes": 80.0, "questions": 10, "distinct_questions": 10}},
        "phases": {
            "similarity_single": _phase(300.0, 3.5, 9.0, None, alone_p50=2.0),
            "similarity_concurrent": _phase(2600.0, 20.0, 99.0, 3000.0, clients=32),
            "similarity_batch_2": _phase(7000.0, 280.0, 300.0, 8000.0, clients=2, items=1000),
            "similarity_batch_8": _phase(7500.0, 900.0, 1000.0, 8000.0, clients=8, items=1000),
            "search_single": _phase(80.0, 12.0, 20.0, 100.0, alone_key="queries_per_s", alone_p50=9.0),
            "search_concurrent": _phase(150.0, 90.0, 200.0, 110.0, clients=16, alone_key="queries_per_s"),
            "promotion": _phase(2000.0, 20.0, 80.0, None, clients=32) | {
                "switched": True, "promoted_at_s": 3.0, "served_at_s": 7.5, "seconds": 120.0,
                "server": {"failed": 0, "answered": 5000, "versions": {"v1": 2000, "v2": 3000},
                           "version_changes_per_thread": [1, 2], "statuses": {"200": 5000}, "socket_errors": 0,
                           "latency_ms": {}, "window_s": 12.5}},
        },
        "predict": {"command": "qdup predict", "runs_s": [2.5, 2.4, 2.6], "median_s": 2.5},
        "server_peak_rss_mib": 900.0,
    }


def _row(rows, start):
    return next(r for r in rows if r["figure"].startswith(start))


def test_targets_table_checks_each_figure_and_the_ratio():
    rows = targets_table(_results())
    single = _row(rows, "`/v1/similarity` one pair")
    assert (single["met"], single["ratio"]) == (True, 1.75)  # 3.5 ms <= 4 ms; 3.5 / 2.0
    conc = _row(rows, "one pair per request")
    assert (conc["met"], conc["ratio"]) == (True, pytest.approx(0.867, abs=1e-3))
    batch = _row(rows, "1,000-pair requests")
    assert batch["ratio"] == pytest.approx(0.9375, abs=1e-3) and batch["met"] is True  # the best client count: 7,500 of 8,000
    assert "2 clients 7,000 pairs/s, 8 clients 7,500 pairs/s" in batch["measured"]
    assert _row(rows, "in-process batch scoring")["met"] is False  # 8,000 < 15,000
    search1 = _row(rows, "`/v1/search` (hybrid, the default), 19,413-question index")
    assert (search1["met"], search1["ratio"]) == (False, pytest.approx(1.333, abs=1e-3))  # p50 12 ms > 10 ms
    assert _row(rows, "`/v1/search`, 16 clients")["met"] is False  # 150 queries/s < 200
    assert _row(rows, "`qdup predict` one pair")["met"] is False  # 2.5 s > 2 s
    assert _row(rows, "promotion under load")["met"] is True


def test_with_a_reranker_the_encoder_alone_is_shown_and_scores_in_process_batches():
    results = _results()
    for name in ("similarity_batch_2", "similarity_batch_8"):
        results["phases"][name]["model_alone"] |= {"reranker": True, "encoder": {"pairs_per_s": 16000.0}}
    rows = targets_table(results)
    batch = _row(rows, "1,000-pair requests")
    assert batch["ratio"] == pytest.approx(0.9375, abs=1e-3)  # like for like: the endpoint's work, reranker included
    assert "`Predictor.similarity` alone 16,000 pairs/s" in batch["model_alone"]
    scoring = _row(rows, "in-process batch scoring")
    assert (scoring["met"], scoring["measured"]) == (True, "16,000 pairs/s")


def test_targets_table_fails_a_promotion_with_a_failed_request_and_says_unmeasured():
    results = _results()
    results["phases"]["promotion"]["server"]["failed"] = 1
    results["phases"]["similarity_concurrent"]["server"]["latency_ms"]["p99"] = 150.0
    del results["phases"]["search_single"], results["predict"]
    rows = targets_table(results)
    assert _row(rows, "promotion under load")["met"] is False
    assert _row(rows, "one pair per request")["met"] is False  # 2,600 pairs/s but p99 150 ms > 100 ms
    predict = _row(rows, "`qdup predict` one pair")
    assert (predict["met"], predict["measured"]) == (None, "not measured")


def test_markdown_flags_generated_questions():
    results = _results(generated=True)
    results["targets"] = targets_table(results)
    md = render_markdown(results)
    assert "**The questions are generated" in md
    assert "the server served it 4.5 s later" in md and "the phase ran 12.5 s" in md
    assert "Body files: single 5 bodies (mean 80 bytes, 10 distinct of 10 questions)." in md
    assert "| `/v1/similarity` one pair, 1 client, p50 | 5.8 ms | 2.00 ms | ≤ 4 ms |" in md
    results = _results()
    results["targets"] = targets_table(results)
    assert "generated" not in render_markdown(results).lower()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave as they are written, not 40 ms apart
    seen: list[dict] = []
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.seen.append(body | {"_path": self.path})
            n = len(self.seen)
        status = 422 if n % 10 == 0 else 200
        answer = json.dumps({"version": "first" if n <= 20 else "second"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_rotate_lua_rotates_bodies_counts_statuses_and_versions_and_stops_on_budget(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Handler.seen = []
    try:
        bodies = [search_body(q, 3) for q in QUESTIONS[:4]]
        write_bodies(tmp_path / "b.jsonl", bodies)
        cmd = wrk_command(find_wrk(), f"http://127.0.0.1:{server.server_address[1]}", "/v1/search", tmp_path / "b.jsonl",
                          threads=2, connections=2, seconds=1, max_requests=50, timeout_s=5, start=1)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr
    s = summarise(parse_wrk_output(out.stdout), 1)
    # One connection per thread, each stopping after its 25 answers: exactly 50, every 10th a 422.
    assert (s["answered"], s["ok"], s["non_2xx"], s["statuses"]) == (50, 45, 5, {"200": 45, "422": 5})
    assert s["versions"] == {"first": 20, "second": 30}
    assert s["stopped_on_budget"] is True and s["window_s"] > 0
    assert len(_Handler.seen) == 50 and {b["_path"] for b in _Handler.seen} == {"/v1/search"}
    # Thread 0 sends bodies 1, 3, 1, ... and thread 1 bodies 2, 0, 2, ... (start 1, step 2), 25 each; wrk's check of
    # the first thread's request before the run is not sent, and does not move the rotation.
    sent = [QUESTIONS.index(b["question"]) for b in _Handler.seen]
    assert {i: sent.count(i) for i in range(4)} == {0: 12, 1: 13, 2: 13, 3: 12}
    assert s["sent"] == 50
    assert all(b["k"] == 3 for b in _Handler.seen)


def test_build_store_copies_production_and_a_second_version_the_server_can_load(tmp_path):
    """The benchmark's store: the source's production version (model and index, built later beside it) under the same
    id, and a second version differing only in its threshold (+ 0.01) whose index names it; the source is untouched."""
    import keras

    from bench.load.model import build_store
    from qdup.config import ModelConfig, VocabConfig
    from qdup.model.network import build_encoder
    from qdup.model.vocab import fit_vectorizer
    from qdup.registry.store import ArtifactStore
    from qdup.search.encoder import load_query_encoder
    from qdup.search.index import build_index
    from qdup.search.service import late_index_dir
    from qdup.serving.export import export_models
    from qdup.serving.follower import load_served

    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=8)
    vec = fit_vectorizer(QUESTIONS, VocabConfig())
    keras.utils.set_random_seed(0)
    build_encoder(vec.vocabulary_size(), cfg).save(tmp_path / "encoder.keras")
    export = Path(export_models(tmp_path / "encoder.keras", vec, cfg, 0.5, tmp_path / "export")["dir"])
    source = ArtifactStore(str(tmp_path / "source"))
    version = source.publish({f"model/{p.name}": p for p in export.iterdir()}, {"threshold": {"value": 0.5}})
    source.promote(version, "test", why="first")
    embeddings = load_query_encoder(export).encode(QUESTIONS)
    build_index(list(range(len(QUESTIONS))), QUESTIONS, embeddings, model_version=version, corpus={"note": "test"},
                seed=0).save(late_index_dir(source.local_path(version).parent.parent, version))
    before = (source.versions(), source.aliases())

    made = build_store(tmp_path / "bench", source.url)
    store = ArtifactStore(made["store"])
    assert made["first"] == version and store.resolve("production") == version
    assert sorted(store.versions()) == sorted([version, made["second"]])
    # The first is the source's files as they were (its index moved into the version); the second is what the
    # server must switch to under load: loaded and verified by the server's own loader.
    first = store.open_version(version)
    assert json.loads((first / "index" / "index.json").read_text())["model_version"] == version
    assert json.loads((first / "model" / "threshold.json").read_text())["threshold"] == pytest.approx(0.5)
    second = load_served(store, made["second"])
    assert second.threshold == pytest.approx(0.51) and store.manifest(made["second"])["threshold"]["value"] == second.threshold
    assert second.searcher is not None
    assert second.searcher.search([QUESTIONS[3]], 1)[0][0]["question"] == QUESTIONS[3]
    assert (source.versions(), source.aliases()) == before


def test_the_server_is_measured_over_its_process_tree():
    from bench.harness.procs import process_tree, tree_cpu_seconds, tree_status_bytes

    parent = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(parent.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process_tree(parent.pid)
        assert tree[0] == parent.pid and len(tree) == 3  # the shell and its two sleeps
        assert tree_status_bytes(parent.pid, "VmHWM") > tree_status_bytes(tree[1], "VmHWM") > 0
        assert tree_cpu_seconds(parent.pid) >= 0
    finally:
        for pid in process_tree(parent.pid)[1:]:
            os.kill(pid, signal.SIGTERM)
        parent.wait(timeout=10)
