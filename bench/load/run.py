"""`python -m bench.load`: drive a real `qdup serve-model` with wrk and compare each figure with the model alone.

Starts the server (`python -m qdup.cli serve-model`) in a subprocess on 127.0.0.1 over a temporary store
holding two versions of one model, then runs these phases, each bounded by --duration seconds and
--max-requests requests (wrk, a C load generator, so that the client's own cost does not hide the server's):

  similarity_single      /v1/similarity, one pair per request, 1 connection: p50/p99
  similarity_concurrent  one pair per request, --clients connections (default 32) on --wrk-threads threads: pairs/s, p50/p99
  similarity_batch_N     --batch-pairs pairs per request, N connections for each N of --batch-clients: pairs/s
  search_single          /v1/search (the version's default method and index), 1 connection: p50
  search_concurrent      /v1/search, --search-clients connections (default 16): queries/s, p50
  promotion              single pairs, --clients connections; `production` moves to the second version mid-run:
                         failed requests (non-2xx or socket errors), answers by version
  predict                `qdup predict` on one pair, the whole process, --predict-runs times: median seconds

Beside each server phase: the same computation in this process (the version loaded by the server's own loader,
`load_served`, then `Predictor.similarity` plus the version's pair reranker as /v1/similarity does, or the
searcher's `search`) on the same request payloads, measured just before and just after the phase.

The model: with --store, that store's production version (copied into the temporary store, never modified;
the second version is the same files with the threshold + 0.01); otherwise `qdup run` on ../shared/data's real
10k sample in a temporary home (several minutes). Questions sent: the real shared duplicate pairs
(QDUP_SHARED overrides the folder), read at run time and written only to a temporary folder; generated ones
when absent (flagged in the report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.load.feedback import feedback_phases, feedback_targets
from bench.load.report import render_markdown, targets_table
from bench.load.wrk import (
    find_wrk,
    pair_batches,
    parse_wrk_output,
    search_body,
    search_queries,
    similarity_body,
    summarise,
    write_bodies,
    wrk_command,
    wrk_version,
)
from bench.report import latency_summary

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"  # the load test never leaves the machine
MIB = 2**20
REAL_PAIRS = "quora_real_duplicate_pairs.tsv"
REAL_SAMPLE = "quora_duplicate_questions_first10k.tsv"


def shared_dir() -> Path:
    env = os.environ.get("QDUP_SHARED")
    if env:
        return Path(env)
    beside = REPO.parent / "shared"
    return beside if beside.is_dir() else Path("/work/shared")


def qdup_command() -> list[str]:
    """The `qdup` console script of this interpreter's environment (what a user runs), else `python -m qdup.cli`."""
    exe = Path(sys.executable).parent / "qdup"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "qdup.cli"]


# ---------------------------------------------------------------- the model and its store


def train_source_store(home: Path, timeout_s: float) -> str:
    """`qdup run` on the real 10k sample (8,000 + 2,000 rows, project defaults) in its own home; returns its store URL."""
    sample = shared_dir() / "data" / REAL_SAMPLE
    if not sample.is_file():
        raise SystemExit(f"no real sample at {sample}: give --store URL with a published model, or set QDUP_SHARED")
    env = {**os.environ, "QDUP_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}
    cmd = [*qdup_command(), "run", "--source", str(sample), "--n-train", "8000", "--n-test", "2000"]
    log = home / "qdup-run.log"
    home.mkdir(parents=True, exist_ok=True)
    print(f"[model] {' '.join(cmd)} (log {log}) ...", flush=True)
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
    if rc != 0:
        raise SystemExit(f"qdup run on the real sample failed (exit {rc}); see {log}")
    return str(home / "store")


def _version_files(folder: Path) -> dict[str, Path]:
    """What serving reads of a version: its model export and its question index (published with it or built later)."""
    from qdup.search.service import VERSION_INDEX_DIR, find_index_dir

    files = {f"model/{p.relative_to(folder / 'model')}": p for p in sorted((folder / "model").rglob("*")) if p.is_file()}
    index_dir = find_index_dir(folder)
    if index_dir is not None:
        files |= {f"{VERSION_INDEX_DIR}/{p.relative_to(index_dir)}": p for p in sorted(index_dir.rglob("*")) if p.is_file()}
    return files


def build_store(root: Path, source_url: str, ref: str = "production") -> dict[str, Any]:
    """A fresh store with the source's `ref` version (same id, so its index still names it) and a second
    version of the same files whose threshold is 0.01 higher; production -> the first."""
    from qdup.registry.store import ArtifactStore, new_version_id
    from qdup.search.index import MANIFEST as INDEX_MANIFEST
    from qdup.search.service import VERSION_INDEX_DIR

    source = ArtifactStore(source_url)
    first = source.resolve(ref)
    folder = source.open_version(first)  # every file checked against the manifest
    manifest = {k: v for k, v in source.manifest(first).items() if k not in ("id", "created", "files")}
    files = _version_files(folder)
    store = ArtifactStore(str(root / "store"))
    store.publish(files, manifest, version=first)

    second = new_version_id()
    work = root / "second"
    copied: dict[str, Path] = {}
    for name, src in files.items():
        copied[name] = work / name
        copied[name].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, copied[name])
    meta_path = copied["model/threshold.json"]
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = min(1.0, float(meta["threshold"]) + 0.01)
    meta_path.write_text(json.dumps(meta, indent=2))
    second_manifest = json.loads(json.dumps(manifest))
    if isinstance(second_manifest.get("threshold"), dict):
        second_manifest["threshold"]["value"] = meta["threshold"]
    else:
        second_manifest["threshold"] = {"value": meta["threshold"]}
    index_manifest = copied.get(f"{VERSION_INDEX_DIR}/{INDEX_MANIFEST}")
    if index_manifest is not None:  # the index names the model version that built it
        index_meta = json.loads(index_manifest.read_text())
        index_meta["model_version"] = second
        index_manifest.write_text(json.dumps(index_meta, indent=2))
    store.publish(copied, second_manifest, version=second)
    store.promote(first, "bench.load", why="load test: first version")
    return {"store": store.url, "first": first, "second": second, "source": source_url}


# ---------------------------------------------------------------- questions


def load_questions(seed: int, generated_rows: int = 20_000) -> dict[str, Any]:
    """The distinct questions of the shared real pairs (read here, never copied into the project), else generated ones."""
    import pandas as pd

    path = shared_dir() / "data" / REAL_PAIRS
    if path.is_file():
        df = pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
        source, generated = f"real: {path.name} (question1 and question2)", False
    else:
        from qdup.data.demo import generate_pairs

        df = generate_pairs(generated_rows, seed=seed)
        source, generated = f"GENERATED by qdup.data.demo ({generated_rows:,} rows): {path} is absent", True
    questions = list(dict.fromkeys(q for q in pd.concat([df.question1, df.question2]).tolist() if q.strip()))
    lengths = sorted(len(q) for q in questions)
    return {"questions": questions, "source": source, "generated": generated, "pool": len(questions),
            "median_chars": lengths[len(lengths) // 2]}


# ---------------------------------------------------------------- the model alone


def endpoint_similarity(served, q1: list[str], q2: list[str]) -> float:
    """What /v1/similarity computes: the encoder's similarities (`Predictor.similarity`), then the version's pair
    reranker when it has one. Returns the seconds `Predictor.similarity` took (the rest was the reranker's)."""
    t0 = time.perf_counter()
    sims = served.predictor.similarity(q1, q2)
    encoder_s = time.perf_counter() - t0
    reranker = served.predictor.reranker
    if reranker is not None:
        reranker.score(q1, q2, sims)
    return encoder_s


def timed_calls(call: Callable[[Any], Any], payloads: Sequence[Any], seconds: float, min_calls: int = 3) -> dict[str, Any]:
    """Call on the payloads in turn for `seconds` (at least min_calls, one untimed first): wall and CPU per call, and
    what each call returned (`returned`: e.g. the seconds of a part of it)."""
    call(payloads[0])
    walls, cpus, returned, i = [], [], [], 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end or len(walls) < min_calls:
        payload = payloads[i % len(payloads)]
        i += 1
        w0, c0 = time.perf_counter(), time.process_time()
        returned.append(call(payload))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"calls": len(walls), **_latency(walls), "cpu_s": round(sum(cpus), 2), "wall_s": round(sum(walls), 2),
            "returned": returned}


def _latency(walls: Sequence[float]) -> dict[str, float]:
    lat = latency_summary(walls)
    return {"p50_ms": round(lat["p50_ms"], 3), "p99_ms": round(lat["p99_ms"], 3), "calls_per_s": round(len(walls) / sum(walls), 1)}


def similarity_reference(served, batches: list[list[tuple[str, str]]], seconds: float) -> dict[str, Any]:
    """/v1/similarity's work on these batches in this process; `encoder`: the `Predictor.similarity` part alone."""
    r = timed_calls(lambda b: endpoint_similarity(served, [a for a, _ in b], [q for _, q in b]), batches, seconds)
    encoder_walls = r.pop("returned")
    pairs = len(batches[0])
    encoder = _latency(encoder_walls)
    return r | {"pairs_per_call": pairs, "pairs_per_s": round(r["calls_per_s"] * pairs, 1),
                "pairs_per_cpu_s": round(r["calls"] * pairs / r["cpu_s"], 1) if r["cpu_s"] > 0 else None,
                "reranker": served.predictor.reranker is not None,
                "encoder": encoder | {"pairs_per_s": round(encoder["calls_per_s"] * pairs, 1)}}


def search_reference(served, queries: list[str], k: int, seconds: float) -> dict[str, Any]:
    """/v1/search's work (the version's searcher, its default method), one query at a time, in this process."""
    r = timed_calls(lambda q: served.searcher.search([q], k), queries, seconds)
    r.pop("returned")
    return r | {"queries_per_s": r["calls_per_s"]}


MEAN_KEYS = ("p50_ms", "p99_ms", "pairs_per_s", "queries_per_s", "pairs_per_cpu_s")


def both_sides(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The mean of the measurements taken before and after a phase (the encoder part's too), with both kept."""
    def mean(x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
        return {k: round((x[k] + y[k]) / 2, 3) for k in MEAN_KEYS if x.get(k) is not None and y.get(k) is not None}

    out = mean(before, after)
    if "encoder" in before and "encoder" in after:
        out["encoder"] = mean(before["encoder"], after["encoder"])
    if "reranker" in before:
        out["reranker"] = before["reranker"]
    return out | {"before": before, "after": after}


# ---------------------------------------------------------------- the server


def process_tree(pid: int) -> list[int]:
    """The process and its living descendants (uvicorn's worker processes, should the server be given --workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except FileNotFoundError:  # the thread ended meanwhile
                pass
    return out


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def proc_status(pid: int, field: str) -> int:
    """A /proc/PID/status size field (VmRSS, VmHWM) in bytes, summed over the process tree (for VmHWM: an upper bound)."""
    return sum(_gone_is_zero(_status_bytes, p, field, root=pid) for p in process_tree(pid))


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its living descendants (from /proc, in clock ticks)."""
    return sum(_gone_is_zero(_cpu, p, root=pid) for p in process_tree(pid))


def _gone_is_zero(read, pid: int, *args: Any, root: int):
    """read(pid, *args) for a descendant that may have ended since it was listed (0 then); the server itself must be there."""
    try:
        return read(pid, *args)
    except (FileNotFoundError, ProcessLookupError):
        if pid == root:
            raise
        return 0


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has been busy (all processes, all cores) since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    # guest time is already counted in user/nice
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, max_s: float = 30.0, interval_s: float = 0.25) -> float:
    """Wait until the server has drained what wrk left queued (under 5% of a core for two intervals); seconds waited."""
    t0 = time.monotonic()
    quiet, last = 0, cpu_seconds(pid)
    while quiet < 2 and time.monotonic() - t0 < max_s:
        time.sleep(interval_s)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last < 0.05 * interval_s else 0
        last = now
    return round(time.monotonic() - t0, 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(store_url: str, port: int, args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "qdup.cli", "serve-model", "--store", store_url, "--host", HOST, "--port", str(port),
           "--poll-s", str(args.poll_s), "--feedback-rate", "0", *args.server_arg]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    print(f"[server] {' '.join(cmd)}", flush=True)
    log = open(log_path, "w")  # the server writes to it until it is stopped
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"the server was not ready within 300 s; see {log_path}")


# ---------------------------------------------------------------- wrk phases


def run_wrk(cmd: list[str], raw_path: Path, during: Callable[[subprocess.Popen, float], Any] | None = None
            ) -> tuple[dict[str, Any], float, Any]:
    """Run wrk; returns its parsed result line, its CPU seconds (wait4), and what `during(wrk, start)` returned
    (called once wrk runs; it may end wrk early with SIGINT, after which wrk prints its results as usual)."""
    with open(raw_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            event = during(proc, time.monotonic()) if during else None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = raw_path.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"wrk exited {proc.returncode}: {' | '.join(text.strip().splitlines()[-3:])}")
    return parse_wrk_output(text), round(usage.ru_utime + usage.ru_stime, 2), event


class Bench:
    """One benchmark run: the server, wrk, the in-process model and the phases' results."""

    def __init__(self, args: argparse.Namespace, wrk: str, url: str, server: subprocess.Popen, served, work: Path, out: Path):
        self.args, self.wrk_exe, self.url, self.server, self.served = args, wrk, url, server, served
        self.work, self.out = work, out
        self.phases: dict[str, Any] = {}
        # Bodies sent so far from each file: every wrk run goes on where the last one stopped, so that no body is
        # sent twice (and no question repeats, as far as the pool goes) before its file is used up.
        self.sent: dict[Path, int] = {}
        self.bodies: dict[Path, int] = {}

    def wrk(self, name: str, route: str, bodies: Path, clients: int, threads: int, seconds: float, raw_path: Path,
            during: Callable[[subprocess.Popen, float], Any] | None = None) -> tuple[dict[str, Any], float, Any]:
        if bodies not in self.bodies:
            self.bodies[bodies] = sum(1 for line in open(bodies, encoding="utf-8") if line.strip())
        start = self.sent.get(bodies, 0)
        cmd = wrk_command(self.wrk_exe, self.url, route, bodies, threads=threads, connections=clients, seconds=seconds,
                          max_requests=self.args.max_requests, timeout_s=self.args.request_timeout_s,
                          start=start % self.bodies[bodies])
        raw, cpu, event = run_wrk(cmd, raw_path, during)
        self.sent[bodies] = start + sum(int(t.get("sent") or 0) for t in raw.get("threads") or [])
        return raw, cpu, event

    def phase(self, name: str, route: str, bodies: Path, clients: int, threads: int, items: int,
              reference: Callable[[], dict[str, Any]] | None,
              during: Callable[[subprocess.Popen, float], Any] | None = None, seconds: float | None = None) -> dict[str, Any]:
        seconds = seconds or self.args.duration
        if self.args.warmup_s > 0 and during is None:  # not recorded: first calls of a shape may trace graphs
            self.wrk(name, route, bodies, clients, threads, self.args.warmup_s, self.work / f"warmup-{name}.txt")
            wait_idle(self.server.pid)
        before = reference() if reference else None
        load = os.getloadavg()[0]
        print(f"[{name}] {clients} connection(s), {items} item(s) per request, {seconds:.0f} s (load average {load:.2f}) ...",
              flush=True)
        cpu0, busy0, own0, t0 = cpu_seconds(self.server.pid), machine_busy_seconds(), time.process_time(), time.monotonic()
        first_body = self.sent.get(bodies, 0)
        raw, client_cpu, event = self.wrk(name, route, bodies, clients, threads, seconds, self.out / "wrk" / f"{name}.txt", during)
        server_cpu = cpu_seconds(self.server.pid) - cpu0
        # What other processes took meanwhile: the machine's busy time less the server's, wrk's and this process's.
        others = machine_busy_seconds() - busy0 - server_cpu - client_cpu - (time.process_time() - own0)
        wall = time.monotonic() - t0
        drained = wait_idle(self.server.pid)  # requests wrk left in flight are still computed: not the model alone's time
        after = reference() if reference else None
        s = summarise(raw, items)
        result: dict[str, Any] = {
            "route": route, "clients": clients, "wrk_threads": min(threads, clients), "items_per_request": items,
            "seconds": seconds, "loadavg_before": round(load, 2), "server": s,
            "server_cpu_s": round(server_cpu, 2), "client_cpu_s": client_cpu, "server_drain_s": drained,
            "others_cpu_s": round(max(0.0, others), 2),
            "others_core_share": round(max(0.0, others) / (wall * len(os.sched_getaffinity(0))), 3) if wall > 0 else None,
            "server_items_per_cpu_s": round(s["ok"] * items / server_cpu, 1) if server_cpu > 0 else None,
            "server_peak_rss_mib": round(proc_status(self.server.pid, "VmHWM") / MIB, 1),
            # Bodies of the file sent before this phase, and whether it went past the file's end (repeating bodies).
            "bodies_sent_before": first_body, "bodies_in_file": self.bodies[bodies],
            "bodies_repeated": self.sent[bodies] > self.bodies[bodies],
        }
        if before is not None:
            result["model_alone"] = both_sides(before, after)
        if event is not None:
            result |= event
        print(f"[{name}] {s['ok']:,} ok, {s['failed']} failed, {s['requests_per_s']} requests/s, {s['items_per_s']} items/s, "
              f"p50 {s['latency_ms']['p50']} ms, p99 {s['latency_ms']['p99']} ms; model alone "
              f"{json.dumps({k: v for k, v in (result.get('model_alone') or {}).items() if k not in ('before', 'after')})}",
              flush=True)
        self.phases[name] = result
        return result


def measure_predict(store_url: str, pair: tuple[str, str], runs: int, env: dict[str, str]) -> dict[str, Any]:
    """`qdup predict` on one pair as a user runs it: a whole process (interpreter, imports, load, score), `runs` times."""
    cmd = [*qdup_command(), "predict", "--store", store_url, "-m", "production", "--json", pair[0], pair[1]]
    shown = "qdup predict --store STORE -m production --json Q1 Q2"
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"qdup predict exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
        if i > 0:  # the first run warms the page cache
            times.append(round(wall, 3))
        answer = json.loads(done.stdout)
    print(f"[predict] {times} s", flush=True)
    return {"command": shown, "runs_s": times, "median_s": statistics.median(times), "answer_keys": sorted(answer)}


# ---------------------------------------------------------------- main


def machine_facts() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    mem = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), None)
    return {"cpus": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "cpu_model": model,
            "ram_gib": round(mem / 2**30, 1) if mem else None, "python": platform.python_version(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" (with uncommitted changes)" if dirty else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "serve"), help="folder for results.json and results.md")
    p.add_argument("--store", help="take the model from this store's production version (copied; never modified)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per phase (default %(default)s)")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="requests per phase at most (default %(default)s)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="unrecorded wrk run before each phase (0: none; default %(default)s)")
    p.add_argument("--reference-s", type=float, default=3.0,
                   help="seconds of the in-process model before and after each phase (default %(default)s)")
    p.add_argument("--clients", type=int, default=32, help="connections of the concurrent and promotion phases")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk threads of the multi-connection phases (default %(default)s)")
    p.add_argument("--batch-clients", default="2,4,8", help="connection counts of the batch phases (default %(default)s)")
    p.add_argument("--batch-pairs", type=int, default=1000)
    p.add_argument("--search-clients", type=int, default=16)
    p.add_argument("--feedback-clients", type=int, default=16, help="connections writing feedback (default %(default)s)")
    p.add_argument("--k", type=int, default=10, help="hits per /v1/search query (default %(default)s)")
    p.add_argument("--promote-at-s", type=float, default=3.0,
                   help="seconds into the promotion phase when production moves (default %(default)s)")
    p.add_argument("--after-switch-s", type=float, default=5.0,
                   help="seconds the promotion phase goes on once the server serves the new version (default %(default)s)")
    p.add_argument("--promotion-max-s", type=float, default=120.0,
                   help="the promotion phase's limit, should the server never switch (default %(default)s)")
    p.add_argument("--predict-runs", type=int, default=5, help="timed `qdup predict` processes (default %(default)s)")
    p.add_argument("--request-timeout-s", type=float, default=60.0, help="wrk's per-request timeout (default %(default)s)")
    p.add_argument("--poll-s", type=float, default=1.0, help="the server's alias poll (default %(default)s)")
    p.add_argument("--server-arg", action="append", default=[],
                   help="one more argument for `qdup serve-model` (repeat; e.g. --server-arg=--batch-wait-ms=2)")
    p.add_argument("--skip", action="append", default=[], choices=["similarity", "batch", "search", "promotion", "predict", "feedback"],
                   help="leave out a group of phases (repeat)")
    p.add_argument("--run-timeout-s", type=float, default=3600.0, help="limit of `qdup run` when no --store is given")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    try:
        args.batch_clients = [int(x) for x in str(args.batch_clients).split(",") if x.strip()]
    except ValueError:
        p.error(f"--batch-clients: comma-separated whole numbers, got {args.batch_clients!r}")
    if not 0 < args.duration <= 600 or not 0 < args.promotion_max_s <= 600 or args.max_requests < 1:
        p.error("--duration and --promotion-max-s must be in (0, 600] and --max-requests >= 1")
    if not 0 <= args.promote_at_s < args.promotion_max_s or args.after_switch_s < 0:
        p.error("--promote-at-s must be in [0, --promotion-max-s) and --after-switch-s >= 0")
    if min([args.clients, args.search_clients, args.wrk_threads, args.batch_pairs, args.k, args.predict_runs,
            *args.batch_clients] or [0]) < 1 or not args.batch_clients:
        p.error("client counts, --wrk-threads, --batch-pairs, --k and --predict-runs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    out = Path(args.out)
    (out / "wrk").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from qdup.runtime import apply_tf_thread_defaults

    threads = apply_tf_thread_defaults()
    started_at = time.monotonic()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    machine = machine_facts() | {"wrk": wrk_version(wrk), "bench_tf_threads": threads}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qdup-load-") as tmp:
        work = Path(tmp)
        os.environ["QDUP_HOME"] = str(work / "home")
        if args.store:
            source_url, description = args.store, f"production of {args.store}"
        else:
            source_url = train_source_store(work / "train-home", args.run_timeout_s)
            description = f"`qdup run` on the real 10k sample (8,000 + 2,000 rows), project defaults, commit {git_commit()}"
        # A store of one's own run: its one version, whether or not the gate promoted it.
        store = build_store(work, source_url, "production" if args.store else "latest")
        from qdup.registry.store import ArtifactStore
        from qdup.serving.follower import load_served

        served = load_served(ArtifactStore(store["store"]), store["first"])
        searcher = served.searcher
        model = {"description": description, "first": store["first"], "second": store["second"],
                 "threshold": served.threshold, "reranker": served.predictor.reranker is not None,
                 "search_method": getattr(searcher, "default_method", None) if searcher else None,
                 "index_questions": len(searcher.index) if searcher is not None and hasattr(searcher, "index") else None}
        q = load_questions(args.seed)
        questions = q.pop("questions")
        print(f"[questions] {q['source']}: {q['pool']:,} distinct, median {q['median_chars']} characters", flush=True)

        bodies = work / "bodies"
        bodies.mkdir()
        # Each file goes once through the pool before any question repeats (the batch file, 80,000 questions, goes
        # past the real pool's ~49,000); the phases then go through each file in turn (Bench.sent).
        single = pair_batches(questions, 1, max(1000, len(questions) // 2), args.seed)
        single_file = write_bodies(bodies / "single.jsonl", [similarity_body(b) for b in single])
        # The model alone's 32-pair calls, on the same pairs the single-pair requests carry.
        in32 = [[p[0] for p in single[i:i + 32]] for i in range(0, len(single) - 31, 32)]
        batch = pair_batches(questions, args.batch_pairs, 40, args.seed + 1)
        batch_file = write_bodies(bodies / "batch.jsonl", [similarity_body(b) for b in batch])
        queries = search_queries(questions, max(1000, len(questions)), args.seed + 2)
        search_file = write_bodies(bodies / "search.jsonl", [search_body(s, args.k) for s in queries])
        body_files = {"single": single_file, "batch": batch_file, "search": search_file}
        for info, texts in ((single_file, [x for b in single for p in b for x in p]),
                            (batch_file, [x for b in batch for p in b for x in p]), (search_file, queries)):
            info |= {"questions": len(texts), "distinct_questions": len(set(texts))}

        port = free_port()
        url = f"http://{HOST}:{port}"
        server = start_server(store["store"], port, args, out / "server.log")
        ref_s = args.reference_s
        feedback = None
        try:
            b = Bench(args, wrk, url, server, served, work, out)
            single_path, batch_path, search_path = (Path(f["path"]) for f in (single_file, batch_file, search_file))
            if "similarity" not in args.skip:
                b.phase("similarity_single", "/v1/similarity", single_path, 1, 1, 1,
                        lambda: similarity_reference(served, single, ref_s))
                b.phase("similarity_concurrent", "/v1/similarity", single_path, args.clients, args.wrk_threads, 1,
                        lambda: similarity_reference(served, in32, ref_s))
            if "batch" not in args.skip:
                for n in args.batch_clients:
                    b.phase(f"similarity_batch_{n}", "/v1/similarity", batch_path, n, args.wrk_threads, args.batch_pairs,
                            lambda: similarity_reference(served, batch, ref_s))
            if "search" not in args.skip:
                if searcher is None:
                    notes.append("the version has no question index: the search phases did not run")
                else:
                    b.phase("search_single", "/v1/search", search_path, 1, 1, 1,
                            lambda: search_reference(served, queries, args.k, ref_s))
                    b.phase("search_concurrent", "/v1/search", search_path, args.search_clients, args.wrk_threads, 1,
                            lambda: search_reference(served, queries, args.k, ref_s))
            if "feedback" not in args.skip:  # before the promotion: the served version is still the first
                feedback = feedback_phases(b, store["store"], store["first"], questions, single_path)
            if "promotion" not in args.skip:
                promote_phase(b, store, single_path)
            import httpx

            facts = httpx.get(f"{url}/v1/model", timeout=30).json()
            server_peak = round(proc_status(server.pid, "VmHWM") / MIB, 1)
        finally:
            server.terminate()
            server.wait(timeout=60)
        predict = None
        if "predict" not in args.skip:
            print(f"[predict] {args.predict_runs} timed runs (after one untimed) ...", flush=True)
            predict = measure_predict(store["store"], single[0][0], args.predict_runs, dict(os.environ))
    results = {
        "started": started,
        "command": "python -m bench.load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(),
        "total_seconds": round(time.monotonic() - started_at, 1),
        "machine": machine,
        "model": model,
        "questions": q,
        "bodies": {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in body_files.items()},
        "settings": {k: getattr(args, k) for k in ("duration", "max_requests", "warmup_s", "reference_s", "clients", "wrk_threads",
                                                   "batch_clients", "batch_pairs", "search_clients", "k", "promote_at_s",
                                                   "after_switch_s", "promotion_max_s",
                                                   "predict_runs", "request_timeout_s", "poll_s", "server_arg", "skip")},
        "phases": b.phases,
        "predict": predict,
        "server_peak_rss_mib": server_peak,
        "server_model_facts": {k: facts.get(k) for k in ("version", "switches", "batching", "last_error", "refused")},
        "notes": notes,
        "feedback": feedback,
    }
    results["targets"] = targets_table(results) + (feedback_targets(results) if feedback else [])
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(render_markdown(results))
    print((out / "results.md").read_text())
    return 0


def promote_phase(b: Bench, store: dict[str, Any], bodies: Path) -> None:
    """Single pairs on --clients connections; `production` moves to the second version --promote-at-s seconds in,
    and wrk stops --after-switch-s seconds after the server says it serves it (at --promotion-max-s at the latest)."""
    import httpx

    from qdup.registry.store import ArtifactStore

    def promote(wrk: subprocess.Popen, t0: float) -> dict[str, Any]:
        time.sleep(max(0.0, t0 + b.args.promote_at_s - time.monotonic()))
        promoted_at = time.monotonic() - t0
        ArtifactStore(store["store"]).promote(store["second"], "bench.load", why="load test: promotion under load")
        served_at = None
        with httpx.Client(base_url=b.url, timeout=30) as client:
            while wrk.poll() is None:
                if client.get("/v1/model").json().get("version") == store["second"]:
                    served_at = time.monotonic() - t0
                    break
                time.sleep(0.5)
        if served_at is not None:
            time.sleep(b.args.after_switch_s)
            wrk.send_signal(signal.SIGINT)  # wrk stops and prints its results, done() included
        return {"promoted_at_s": round(promoted_at, 2), "served_at_s": None if served_at is None else round(served_at, 2)}

    result = b.phase("promotion", "/v1/similarity", bodies, b.args.clients, b.args.wrk_threads, 1, None, promote,
                     b.args.promotion_max_s)
    versions = result["server"]["versions"]
    result["switched"] = store["first"] in versions and store["second"] in versions
