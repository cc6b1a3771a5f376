"""The server side of `python -m bench.load`: `qdup serve-model` started and watched (CPU, memory, idle), wrk runs,
the phases (`Bench.phase`), the promotion under load and `qdup predict` as a whole process."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness.procs import machine_busy_seconds, tree_cpu_seconds, tree_status_bytes
from bench.harness.steps import qdup_command
from bench.harness.tables import MIB
from bench.load.reference import both_sides
from bench.load.wrk import parse_wrk_output, summarise, wrk_command
from bench.shared_data import REPO

HOST = "127.0.0.1"  # the load test never leaves the machine


def wait_idle(pid: int, max_s: float = 30.0, interval_s: float = 0.25) -> float:
    """Wait until the server has drained what wrk left queued (under 5% of a core for two intervals); seconds waited."""
    t0 = time.monotonic()
    quiet, last = 0, tree_cpu_seconds(pid)
    while quiet < 2 and time.monotonic() - t0 < max_s:
        time.sleep(interval_s)
        now = tree_cpu_seconds(pid)
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
        cpu0, busy0, own0, t0 = tree_cpu_seconds(self.server.pid), machine_busy_seconds(), time.process_time(), time.monotonic()
        first_body = self.sent.get(bodies, 0)
        raw, client_cpu, event = self.wrk(name, route, bodies, clients, threads, seconds, self.out / "wrk" / f"{name}.txt", during)
        server_cpu = tree_cpu_seconds(self.server.pid) - cpu0
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
            "server_peak_rss_mib": round(tree_status_bytes(self.server.pid, "VmHWM") / MIB, 1),
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
