"""Load test of `qdup serve-model`: python -m bench.load --out bench/results/serve [--duration 60] [--store URL].

Starts the real server (`python -m qdup.cli serve-model`) in a subprocess on 127.0.0.1 over a
temporary store holding two versions of one real model, then runs, each bounded by --duration
seconds and --max-requests requests:
  1. one client sending single pairs (latency p50/p99);
  2. --clients concurrent clients sending single pairs (micro-batching throughput);
  3. --batch-clients clients sending --batch-pairs pairs per request (batch throughput);
  4. the concurrent run again, with `production` promoted to the second version half-way:
     failed requests, and how often each client's answers change version.
For every phase: p50/p99 latency, requests/s, pairs/s, errors, and the server's peak RSS.
Clients are worker processes (threads inside them, keep-alive httpx clients), so the client's
own GIL does not cap the figures; they share the machine's cores with the server.

The model: with --store, the production version of that store (copied, never modified);
otherwise one trained for --epochs epoch(s) on ../shared/data's real 10k sample (default model
configuration, threshold chosen for F1 on the last 2,000 rows). Questions sent are real ones
from ../shared/data (QDUP_SHARED overrides the folder); without it, generated ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.report import latency_summary

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # the load test never leaves the machine
TARGETS = {
    "single_p50_ms": 10.0,
    "single_p99_ms": 30.0,
    "concurrent_pairs_per_s": 3000.0,
    "batch_pairs_per_s": 15000.0,
    "promotion_failed": 0,
}


def shared_dir() -> Path:
    env = os.environ.get("QDUP_SHARED")
    if env:
        return Path(env)
    beside = REPO.parent / "shared"
    return beside if beside.is_dir() else Path("/work/shared")


# ---------------------------------------------------------------- model and store


def _publish(store, export: Path, threshold: float, manifest: dict[str, Any]) -> str:
    files = {f"model/{p.name}": p for p in sorted(export.iterdir())}
    return store.publish(files, manifest | {"threshold": {"value": threshold, "chosen_on": "test rows (load test only)"}})


def build_store(root: Path, source_store: str | None, epochs: int, seed: int) -> tuple[str, str, str, dict[str, Any]]:
    """A fresh store with two versions of one model (thresholds t and t + 0.01); production -> the first."""
    import pandas as pd

    from qdup.config import ModelConfig, TrainConfig, VocabConfig
    from qdup.evaluation.metrics import choose_threshold, ranking_metrics
    from qdup.fileio import sha256_file
    from qdup.model.train import train_model
    from qdup.model.vocab import fit_vectorizer
    from qdup.registry.store import ArtifactStore
    from qdup.serving.export import export_models
    from qdup.serving.predictor import load_inference

    store = ArtifactStore(str(root / "store"))
    work = root / "work"
    if source_store:
        source = ArtifactStore(source_store)
        version = source.resolve("production")
        model_dir = source.local_path(version) / "model"
        manifest = {k: v for k, v in source.manifest(version).items() if k not in ("id", "created", "files")}
        threshold = float(load_inference(model_dir).threshold)
        info = {"model": f"production of {source_store} ({version})"}
        first = _publish(store, model_dir, threshold, manifest)
        # The second version differs only in its threshold (and so in its id): the switch is visible.
        work.mkdir(parents=True)
        second_dir = work / "second"
        import shutil

        shutil.copytree(model_dir, second_dir)
        meta = json.loads((second_dir / "threshold.json").read_text())
        meta["threshold"] = min(1.0, threshold + 0.01)
        (second_dir / "threshold.json").write_text(json.dumps(meta))
        second = _publish(store, second_dir, meta["threshold"], manifest)
    else:
        sample = shared_dir() / "data" / "quora_duplicate_questions_first10k.tsv"
        if not sample.is_file():
            raise SystemExit(f"no real sample at {sample}: give --store URL with a published model, or set QDUP_SHARED")
        df = pd.read_csv(sample, sep="\t", keep_default_na=False, dtype={"question1": str, "question2": str})
        df = df[(df.question1.str.strip() != "") & (df.question2.str.strip() != "")].reset_index(drop=True)
        train_df, val_df, test_df = df.iloc[:7000], df.iloc[7000:8000], df.iloc[8000:]
        model_cfg = ModelConfig()
        vec = fit_vectorizer(pd.concat([train_df.question1, train_df.question2]).tolist(), VocabConfig())
        result = train_model(train_df, val_df, vec, model_cfg, TrainConfig(epochs=epochs), seed, work / "train", log=print)
        exports = {}
        probe = export_models(result.encoder_path, vec, model_cfg, 0.5, work / "probe")
        predictor = load_inference(Path(probe["dir"]))
        sims = predictor.similarity(test_df.question1.tolist(), test_df.question2.tolist())
        y = test_df.is_duplicate.to_numpy()
        threshold = round(choose_threshold(y, sims)["f1_threshold"], 4)
        for name, t in (("first", threshold), ("second", min(1.0, threshold + 0.01))):
            exports[name] = (Path(export_models(result.encoder_path, vec, model_cfg, t, work / name)["dir"]), t)
        manifest = {
            "dataset": {"sha256": sha256_file(sample), "source": "first 10k rows of Quora Question Pairs (shared/data)"},
            "metrics": {"test": ranking_metrics(y, sims)},
        }
        info = {"model": f"default ModelConfig trained {epochs} epoch(s) on 7,000 real rows; test = last {len(test_df):,} rows",
                "test_roc_auc": manifest["metrics"]["test"]["roc_auc"], "threshold": threshold}
        first = _publish(store, *exports["first"], manifest)
        second = _publish(store, *exports["second"], manifest)
    store.promote(first, "bench", why="load test: first")
    return store.url, first, second, info


def question_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Real question pairs (shuffled across rows, so most are not duplicates) for the clients to send."""
    import pandas as pd

    path = shared_dir() / "data" / "quora_real_duplicate_pairs.tsv"
    if path.is_file():
        df = pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
        questions = [q for q in pd.concat([df.question1, df.question2]).tolist() if q.strip()]
    else:
        from qdup.data.demo import generate_pairs

        df = generate_pairs(max(n, 1000), seed=seed)
        questions = pd.concat([df.question1, df.question2]).tolist()
    rng = random.Random(seed)
    return [(rng.choice(questions), rng.choice(questions)) for _ in range(n)]


def model_reference(store_url: str, version: str, pairs: list[tuple[str, str]], seconds: float) -> dict[str, Any]:
    """The model alone in this process (Predictor.similarity, no HTTP), for the sizes the phases send."""
    from qdup.registry.store import ArtifactStore
    from qdup.serving.predictor import load_inference

    store = ArtifactStore(store_url)
    predictor = load_inference(store.local_path(version) / "model")
    out = {}
    for n in (1, 32, 1000):
        predictor.similarity([a for a, _ in pairs[:n]], [b for _, b in pairs[:n]])  # trace
        walls, cpus, i = [], [], 0
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end or len(walls) < 3:
            chunk = [pairs[(i + j) % len(pairs)] for j in range(n)]
            i += n
            w0, c0 = time.perf_counter(), time.process_time()
            predictor.similarity([a for a, _ in chunk], [b for _, b in chunk])
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        lat = latency_summary(walls)
        out[str(n)] = {"calls": len(walls), "p50_ms": round(lat["p50_ms"], 3), "p99_ms": round(lat["p99_ms"], 3),
                       "pairs_per_s": round(n * len(walls) / sum(walls), 1),
                       "pairs_per_cpu_s": round(n * len(cpus) / sum(cpus), 1)}
    return out


# ---------------------------------------------------------------- server


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """The server's largest resident set size seen while a phase runs (sampled every 100 ms)."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(store_url: str, port: int, args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "qdup.cli", "serve-model", "--store", store_url, "--host", HOST, "--port", str(port),
           "--poll-s", str(args.poll_s), "--batch-wait-ms", str(args.batch_wait_ms), "--max-batch-pairs", str(args.batch_pairs)]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
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


# ---------------------------------------------------------------- clients


def _client_thread(url: str, pairs: list[tuple[str, str]], batch: int, t_end: float, quota: list[int], lock, out: list) -> None:
    import httpx

    records = []
    i = random.Random(len(out)).randrange(len(pairs))
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < t_end:
            with lock:
                if quota[0] <= 0:
                    break
                quota[0] -= 1
            if batch == 1:
                a, b = pairs[i % len(pairs)]
                body: dict[str, Any] = {"question1": a, "question2": b}
            else:
                chunk = (pairs[(i + j) % len(pairs)] for j in range(batch))
                body = {"pairs": [{"question1": a, "question2": b} for a, b in chunk]}
            i += batch
            t0 = time.perf_counter()
            try:
                r = client.post("/v1/similarity", json=body)
                ok = r.status_code == 200
                version = r.json().get("version") if ok else None
                error = None if ok else f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.HTTPError as exc:
                ok, version, error = False, None, f"{type(exc).__name__}: {exc}"
            records.append((time.monotonic(), time.perf_counter() - t0, ok, version, error))
    out.append(records)


def _client_process(args: tuple) -> list[list]:
    """One worker process: `threads` keep-alive clients until t_end or its share of the request budget."""
    url, pairs, batch, threads, t_end, quota = args
    lock, out, quota_box = threading.Lock(), [], [quota]
    ts = [threading.Thread(target=_client_thread, args=(url, pairs, batch, t_end, quota_box, lock, out)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def run_phase(name: str, url: str, pid: int, pairs, clients: int, batch: int, args, during=None) -> dict[str, Any]:
    """Run `clients` clients for args.duration seconds (or args.max_requests requests); summarise."""
    procs = min(clients, args.client_processes)
    per_proc = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    quota = args.max_requests // procs
    print(f"[{name}] {clients} client(s) x {batch} pair(s) per request for {args.duration:.0f} s ...", flush=True)
    ctx = mp.get_context("fork")
    cpu0 = cpu_seconds(pid)
    with RssSampler(pid) as rss, ctx.Pool(procs) as pool:
        t0 = time.monotonic()
        t_end = t0 + args.duration
        pending = pool.map_async(_client_process, [(url, pairs, batch, n, t_end, quota) for n in per_proc])
        event = during(t0) if during else None
        per_client = [c for proc_out in pending.get() for c in proc_out]
        elapsed = time.monotonic() - t0
    server_cpu = cpu_seconds(pid) - cpu0
    records = [r for c in per_client for r in c]
    ok = [r for r in records if r[2]]
    errors = [r[4] for r in records if not r[2]]
    result: dict[str, Any] = {
        "clients": clients,
        "pairs_per_request": batch,
        "seconds": round(elapsed, 2),
        "requests": len(records),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "requests_per_s": round(len(ok) / elapsed, 1),
        "pairs_per_s": round(len(ok) * batch / elapsed, 1),
        "latency": {k: round(v, 3) for k, v in latency_summary([r[1] for r in ok]).items()} if ok else None,
        "server_peak_rss_mib": round(rss.peak / 2**20, 1),
        # What the server could do with the CPU it got: the machine is shared with the clients (and others).
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_share": round(server_cpu / elapsed, 2),
        "pairs_per_server_cpu_s": round(len(ok) * batch / server_cpu, 1) if server_cpu > 0 else None,
    }
    if event is not None:
        result["event"] = event
        changes = []
        for c in per_client:
            versions = [r[3] for r in c if r[2]]
            changes.append(sum(1 for a, b in zip(versions, versions[1:]) if a != b))
        result["version_changes_per_client"] = {"min": min(changes), "max": max(changes)}
        result["clients_switching_exactly_once"] = sum(1 for n in changes if n == 1)
        result["versions_seen"] = sorted({r[3] for r in ok})
    print(f"[{name}] {json.dumps({k: v for k, v in result.items() if k != 'error_examples'})}", flush=True)
    return result


# ---------------------------------------------------------------- report


def targets_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    single, conc, batch, promo = (results["phases"][k] for k in ("single", "concurrent", "batch", "promotion"))
    p50, p99 = single["latency"]["p50_ms"], single["latency"]["p99_ms"]
    rows = [
        ("one pair, one client: p50", "<= 10 ms", p50, p50 <= TARGETS["single_p50_ms"], "ms"),
        ("one pair, one client: p99", "<= 30 ms", p99, p99 <= TARGETS["single_p99_ms"], "ms"),
        (f"{conc['clients']} clients, single pairs", ">= 3,000 pairs/s, 0 errors", conc["pairs_per_s"],
         conc["pairs_per_s"] >= TARGETS["concurrent_pairs_per_s"] and conc["errors"] == 0, "pairs/s"),
        (f"batches of {batch['pairs_per_request']:,} pairs", ">= 15,000 pairs/s", batch["pairs_per_s"],
         batch["pairs_per_s"] >= TARGETS["batch_pairs_per_s"], "pairs/s"),
        ("promotion under load", "0 failed requests, one switch", promo["errors"],
         promo["errors"] == 0 and promo["clients_switching_exactly_once"] == promo["clients"], "failed"),
    ]
    return [{"what": w, "target": t, "measured": m, "met": bool(ok), "unit": u} for w, t, m, ok, u in rows]


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# `qdup serve-model` load test",
        "",
        f"{results['started']} · {results['machine']['cpus']} CPUs ({results['machine']['processor']}), "
        f"load average at start {results['machine']['loadavg_start']} · {results['model']['model']}",
        f"Command: `{results['command']}`",
        "",
        "| target | wanted | measured | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        value = f"{t['measured']:,.1f} {t['unit']}" if isinstance(t["measured"], float) else f"{t['measured']} {t['unit']}"
        lines.append(f"| {t['what']} | {t['target']} | {value} | {'yes' if t['met'] else 'no'} |")
    lines += [
        "",
        "| phase | clients | pairs/request | requests | errors | requests/s | pairs/s | p50 ms | p99 ms | server CPU share | "
        "pairs per server CPU-s | server peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in results["phases"].items():
        lat = p["latency"] or {}
        lines.append(
            f"| {name} | {p['clients']} | {p['pairs_per_request']:,} | {p['requests']:,} | {p['errors']} | "
            f"{p['requests_per_s']:,.1f} | "
            f"{p['pairs_per_s']:,.1f} | {lat.get('p50_ms', float('nan')):.2f} | {lat.get('p99_ms', float('nan')):.2f} | "
            f"{p['server_cpu_share']:.2f} | {p['pairs_per_server_cpu_s'] or 0:,.0f} | {p['server_peak_rss_mib']:,.0f} |"
        )
    lines += ["", "The model alone (`Predictor.similarity` in the benchmark's process, no HTTP), for reference:", "",
              "| pairs per call | p50 ms | p99 ms | pairs/s | pairs per CPU-s |", "|---|---|---|---|---|"]
    for n, r in results["model_alone"].items():
        lines.append(f"| {int(n):,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['pairs_per_s']:,.0f} | "
                     f"{r['pairs_per_cpu_s']:,.0f} |")
    promo = results["phases"]["promotion"]
    lines += [
        "",
        f"Promotion at {promo['event']['at_s']:.1f} s of {promo['seconds']:.0f} s: "
        f"production {promo['event']['from']} -> {promo['event']['to']}; "
        f"versions answered: {', '.join(promo['versions_seen'])}; clients whose answers changed version exactly once: "
        f"{promo['clients_switching_exactly_once']}/{promo['clients']}; failed requests: {promo['errors']}.",
        "",
        f"Micro-batching (server's own count over the whole run): {json.dumps(results['server_batching'])}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "serve"), help="folder for load.json and load.md")
    p.add_argument("--store", help="take the model from this store's production version (copied into a temporary store)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per phase (default %(default)s)")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="requests per phase at most (default %(default)s)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--batch-clients", type=int, default=2)
    p.add_argument("--batch-pairs", type=int, default=1000)
    p.add_argument("--client-processes", type=int, default=2, help="worker processes the clients are spread over")
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--poll-s", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=1, help="training epochs of the model when no --store is given")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.max_requests < 1:
        p.error("--duration must be in (0, 600] and --max-requests >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from qdup.runtime import apply_tf_thread_defaults

    apply_tf_thread_defaults()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    loadavg = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="qdup-load-") as tmp:
        os.environ["QDUP_HOME"] = str(Path(tmp) / "home")
        store_url, first, second, model_info = build_store(Path(tmp), args.store, args.epochs, args.seed)
        pairs = question_pairs(20_000, args.seed)
        print("[model alone] Predictor.similarity in this process ...", flush=True)
        reference = model_reference(store_url, first, pairs, min(10.0, args.duration / 4))
        print(f"[model alone] {json.dumps(reference)}", flush=True)
        port = free_port()
        url = f"http://{HOST}:{port}"
        server = start_server(store_url, port, args, out / "server.log")
        try:
            phases: dict[str, Any] = {}
            phases["single"] = run_phase("single", url, server.pid, pairs, 1, 1, args)
            phases["concurrent"] = run_phase("concurrent", url, server.pid, pairs, args.clients, 1, args)
            phases["batch"] = run_phase("batch", url, server.pid, pairs, args.batch_clients, args.batch_pairs, args)

            def promote_half_way(t0: float) -> dict[str, Any]:
                from qdup.registry.store import ArtifactStore

                time.sleep(max(0.0, t0 + args.duration / 2 - time.monotonic()))
                at = time.monotonic() - t0
                ArtifactStore(store_url).promote(second, "bench", why="load test: promotion under load")
                return {"at_s": round(at, 2), "from": first, "to": second}

            phases["promotion"] = run_phase("promotion", url, server.pid, pairs, args.clients, 1, args, during=promote_half_way)
            import httpx

            facts = httpx.get(f"{url}/v1/model", timeout=30).json()
        finally:
            server.terminate()
            server.wait(timeout=60)
    results = {
        "started": started,
        "command": "python -m bench.load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                    "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "loadavg_start": [round(x, 2) for x in loadavg]},
        "settings": {k: getattr(args, k) for k in ("duration", "max_requests", "clients", "batch_clients", "batch_pairs",
                                                   "client_processes", "batch_wait_ms", "poll_s")},
        "model": model_info | {"versions": [first, second]},
        "model_alone": reference,
        "phases": phases,
        "server_batching": facts["batching"],
        "server_switches": facts["switches"],
    }
    results["targets"] = targets_table(results)
    (out / "load.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "load.md").write_text(render_markdown(results))
    print((out / "load.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
