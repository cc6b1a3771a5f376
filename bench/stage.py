"""One benchmark stage in a fresh process: calls qdup's plain stage functions, reports time and peak RSS."""

# Usage (the orchestrator `bench.run` does this): python -m bench.stage STAGE --work DIR --out FILE.json
# DIR holds params.json (the RetrainConfig and the bench options) and the outputs of earlier stages.

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.harness.procs import cpu_seconds, status_bytes
from bench.harness.stats import call_latencies, latency_summary, throughput
from bench.harness.steps import write_step
from bench.report import capped_rows
from qdup.runtime import INTER, INTRA, apply_tf_thread_defaults

# Import time is measured from here: the modules above are the standard library and two small ones.
T0 = time.perf_counter()


class Probe:
    """Times the stage: imports first (`imported()`), then the work, split into named parts."""

    def __init__(self) -> None:
        self.t_imported: float | None = None
        self.rss_after_imports: int | None = None
        self.parts: dict[str, float] = {}
        self.info: dict[str, Any] = {}

    def imported(self) -> None:
        self.t_imported = time.perf_counter()
        self.rss_after_imports = status_bytes("VmRSS")

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t


class Ctx:
    """Where a stage finds its inputs and writes its outputs."""

    def __init__(self, work: Path):
        self.work = work
        self.params = json.loads((work / "params.json").read_text())
        self._cfg = None

    @property
    def cfg(self):
        if self._cfg is None:
            from qdup.config import RetrainConfig

            self._cfg = RetrainConfig.model_validate(self.params["config"])
        return self._cfg

    def dir(self, stage: str) -> Path:
        d = self.work / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def fresh_dir(self, stage: str) -> Path:
        d = self.work / stage
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def state(self, name: str) -> dict[str, Any]:
        return json.loads((self.work / "state" / f"{name}.json").read_text())

    def save_state(self, name: str, obj: dict[str, Any]) -> None:
        (self.work / "state").mkdir(exist_ok=True)
        (self.work / "state" / f"{name}.json").write_text(json.dumps(obj, indent=2, default=str))


def _log(msg: str) -> None:
    print(f"{time.perf_counter() - T0:8.2f}s {msg}", file=sys.stderr, flush=True)


def _split_path(ctx: Ctx, name: str) -> Path:
    return ctx.work / "splits" / f"{name}.parquet"


def train_frame(ctx: Ctx, train_df):
    """The training split, cut to the first `max_train_batches` full batches when the bench caps training."""
    n = capped_rows(len(train_df), ctx.params.get("max_train_batches"), ctx.cfg.train.batch_size)
    return train_df.iloc[:n].reset_index(drop=True)


# ---------------------------------------------------------------- stages


def stage_fetch(p: Probe, ctx: Ctx) -> None:
    from qdup.stages.fetch import build_fetch

    p.imported()
    cache = ctx.fresh_dir("fetch") / "cache"
    with p.part("build_fetch"):
        manifest, from_cache = build_fetch(ctx.cfg.fetch, cache, log=_log)
    p.info.update(source=manifest["source"], bytes=manifest["size"], sha256=manifest["sha256"], from_cache=from_cache)
    p.info["mb_per_s"] = manifest["size"] / 1e6 / p.parts["build_fetch"]
    ctx.save_state("fetch", manifest)


def stage_validate(p: Probe, ctx: Ctx) -> None:
    from qdup.stages.validate import build_validate

    p.imported()
    out = ctx.fresh_dir("validate")
    with p.part("build_validate"):
        manifest = build_validate(Path(ctx.state("fetch")["path"]), ctx.cfg.validate_, out)
    ctx.save_state("validate", manifest)
    p.info.update(rows=manifest["rows"], expectations=manifest["expectations"], duplicates=manifest["duplicates"])


def stage_splits(p: Probe, ctx: Ctx) -> None:
    from qdup.stages.splits import build_splits

    p.imported()
    out = ctx.fresh_dir("splits")
    with p.part("build_splits"):
        manifest = build_splits(ctx.work / "validate" / "validated.parquet", ctx.cfg.split, ctx.cfg.validate_, out)
    ctx.save_state("splits", manifest)
    facts = {k: v for k, v in manifest.items() if k != "splits"}
    p.info.update(rows={n: e["rows"] for n, e in manifest["splits"].items()}, facts=facts)


def stage_vocab(p: Probe, ctx: Ctx) -> None:
    from qdup.stages.vocab import build_vocab

    p.imported()
    out = ctx.fresh_dir("vocab")
    with p.part("build_vocab"):
        manifest = build_vocab(ctx.work / "splits", ctx.cfg.vocab, out)
    ctx.save_state("vocab", manifest)
    p.info.update(size=manifest["size"], oov_rate=manifest["oov_rate"])


def capped_splits(ctx: Ctx) -> Path:
    """The splits folder the train stage reads: the real one, or a copy whose train split is capped."""
    from qdup.data.splits import read_split, write_split

    cap = ctx.params.get("max_train_batches")
    if not cap:
        return ctx.work / "splits"
    capped = ctx.fresh_dir("splits-capped")
    for f in (ctx.work / "splits").glob("*.parquet"):
        shutil.copyfile(f, capped / f.name)
    train_df = read_split(capped / "train.parquet")
    n = capped_rows(len(train_df), cap, ctx.cfg.train.batch_size)
    write_split(train_df.iloc[:n].reset_index(drop=True), capped / "train.parquet")
    return capped


def stage_train(p: Probe, ctx: Ctx) -> None:
    from qdup.stages.train import build_train

    p.imported()
    out = ctx.fresh_dir("train")
    work = ctx.work / "train-work"
    shutil.rmtree(work, ignore_errors=True)
    splits_dir = capped_splits(ctx)
    t_start = time.perf_counter()
    events: list[tuple[float, str]] = []

    def log(msg: str) -> None:
        events.append((time.perf_counter() - t_start, msg))
        _log(msg)

    cpu_at: list[float] = [cpu_seconds()]

    def on_epoch_end(epoch: int, total: int, logs: dict[str, float]) -> None:
        events.append((time.perf_counter() - t_start, f"hook epoch {epoch}/{total}"))
        cpu_at.append(cpu_seconds())

    with p.part("build_train"):
        m = build_train(
            splits_dir, ctx.work / "vocab" / "vocabulary.txt", ctx.cfg.model, ctx.cfg.train, ctx.cfg.seed, work, out,
            on_epoch_end=on_epoch_end, log=log,
        )
    ctx.save_state("train", m)
    with p.part("batch_widths (bench only)"):
        p.info["mean_batch_width"] = mean_batch_width(splits_dir, ctx)
    p.info["train_pairs"] = p.info["mean_batch_width"]["train_pairs"]
    first_epoch_line = next((t for t, msg in events if msg.startswith("epoch ")), None)
    epoch_total = sum(h["seconds"] for h in m["history"])
    p.info.update(
        steps_per_epoch=m["steps_per_epoch"],
        epochs=m["epochs_run"],
        history=m["history"],
        best_epoch=m["best_epoch"],
        best_val_loss=m["best_val_loss"],
        events=[[round(t, 3), msg] for t, msg in events],
        # CPU seconds between epoch hooks: epoch i's training, validation and checkpoint save
        # (the first one also holds vectorising and model building).
        epoch_cpu_seconds=[b - a for a, b in zip(cpu_at, cpu_at[1:], strict=False)],
        # Time before the first epoch began: vectorising the splits, building and compiling the model.
        seconds_before_first_epoch=None if first_epoch_line is None else first_epoch_line - m["history"][0]["seconds"],
        epoch_seconds_total=epoch_total,
        # Everything in the stage that is not an epoch: prep, checkpoints between epochs, final save.
        seconds_outside_epochs=p.parts["build_train"] - epoch_total,
    )


def mean_batch_width(splits_dir: Path, ctx: Ctx) -> dict[str, float]:
    """Mean padded width of qdup's training batches (question1 and question2), from its own batch plan."""
    import numpy as np

    from qdup.data.splits import read_split
    from qdup.model import batches, vocab

    train_df = read_split(splits_dir / "train.parquet")
    vectorizer = vocab.load_vectorizer(ctx.work / "vocab" / "vocabulary.txt")
    pairs = batches.pair_arrays(train_df, vectorizer, ctx.cfg.model, "train")
    plan = batches.batch_plan(np.maximum(pairs.len1, pairs.len2), ctx.cfg.train.batch_size, batches.epoch_seed(ctx.cfg.seed, 1))
    fixed = not ctx.cfg.model.mask_padding
    w1 = [pairs.q1.shape[1] if fixed else int(pairs.len1[b].max()) for b in plan]
    w2 = [pairs.q2.shape[1] if fixed else int(pairs.len2[b].max()) for b in plan]
    return {"question1": float(np.mean(w1)), "question2": float(np.mean(w2)),
            "mean_tokens": float((pairs.len1.mean() + pairs.len2.mean()) / 2), "train_pairs": len(train_df)}


def stage_evaluate(p: Probe, ctx: Ctx) -> None:
    from qdup.stages.evaluate import build_evaluate

    p.imported()
    out = ctx.fresh_dir("evaluate")
    with p.part("build_evaluate"):
        manifest = build_evaluate(
            ctx.work / "splits", ctx.work / "vocab" / "vocabulary.txt", ctx.work / "train" / "encoder.keras",
            ctx.cfg.model, ctx.cfg.evaluate, out, seed=ctx.cfg.seed, gate_metric=ctx.cfg.publish.gate_metric,
        )
    ctx.save_state("evaluate", manifest)
    metrics = manifest["metrics"]
    t = metrics["test"]
    p.info.update(
        calibration_pairs=metrics["calibration"]["rows"],
        test_pairs=t["rows"],
        threshold=metrics["threshold"]["value"],
        test_accuracy=t["at_threshold"]["accuracy"],
        reference_threshold=metrics["threshold"]["reference"],
        test_accuracy_at_reference=t["at_reference_threshold"]["accuracy"],
        test_roc_auc=t["ranking"]["roc_auc"],
        test_pr_auc=t["ranking"]["pr_auc"],
    )


def stage_export(p: Probe, ctx: Ctx) -> None:
    from qdup.stages.export import build_export

    p.imported()
    out = ctx.fresh_dir("export")
    threshold = json.loads((ctx.work / "evaluate" / "metrics.json").read_text())["threshold"]["value"]
    with p.part("build_export"):
        m = build_export(ctx.work / "vocab" / "vocabulary.txt", ctx.work / "train" / "encoder.keras", ctx.cfg.model, threshold, out)
    ctx.save_state("export", m)
    p.info.update(threshold=m["threshold"], bytes={f.name: f.stat().st_size for f in (out / "model").iterdir()})


def stage_publish(p: Probe, ctx: Ctx) -> None:
    """The registry's publish (gate, manifest, aliases) on the stage outputs of this benchmark run."""
    from qdup.registry.publish import publish_version
    from qdup.registry.store import ArtifactStore, new_version_id
    from qdup.stagecache import StageResult

    p.imported()
    root = ctx.fresh_dir("publish") / "store"
    stages = {}
    for name in ("fetch", "validate", "splits", "vocab", "train", "evaluate", "export"):
        folder = ctx.work / name if name != "fetch" else Path(ctx.state("fetch")["path"]).parent
        stages[name] = StageResult(stage=name, key=f"bench-{name}", path=folder, cached=False, manifest=ctx.state(name))
    # The flow's stage cache writes stage.json; the version keeps the splits' one.
    (ctx.work / "splits" / "stage.json").write_text(json.dumps({"manifest": stages["splits"].manifest}))
    store = ArtifactStore(str(root))
    from qdup.stages.gate import build_gate

    gate_dir = ctx.fresh_dir("gate")
    cfg = ctx.cfg.model_copy(update={"publish": ctx.cfg.publish.model_copy(update={"store_url": str(root)})})
    # No retrieval stage here: the gate judges dense search (the first version has no production to compare with).
    with p.part("gate"):
        gate = build_gate(ctx.work / "splits", ctx.work / "export" / "model", {"method": "dense"},
                          stages["evaluate"].manifest["metrics"], cfg, gate_dir)
    stages["gate"] = StageResult(stage="gate", key="bench-gate", path=gate_dir, cached=False, manifest=gate)
    with p.part("publish_version"):
        outcome = publish_version(store, ctx.cfg, stages, new_version_id(), run_info={"bench": True}, actor="qdup-bench", log=_log)
    with p.part("list_versions"):
        store.versions()
    p.info.update(version=outcome.version, promoted=outcome.promoted, files=len(store.manifest(outcome.version)["files"]))


def _inference_pairs(ctx: Ctx, n: int) -> tuple[list[str], list[str]]:
    import pandas as pd

    df = pd.read_csv(
        ctx.state("fetch")["path"], sep="\t", dtype=str, keep_default_na=False, usecols=["question1", "question2"], nrows=n + 1000
    )
    ok = df["question1"].str.strip().ne("") & df["question2"].str.strip().ne("")
    df = df[ok].head(n)
    return df["question1"].tolist(), df["question2"].tolist()


def stage_inference(p: Probe, ctx: Ctx) -> None:
    import numpy as np
    import pandas as pd

    from qdup.serving.predictor import load_inference, score_file

    p.imported()
    out = ctx.fresh_dir("inference")
    n_batch = int(ctx.params.get("inference_pairs", 50_000))
    calls = int(ctx.params.get("latency_calls", 300))
    warmup = int(ctx.params.get("latency_warmup", 20))
    q1, q2 = _inference_pairs(ctx, n_batch)
    tsv = out / "pairs.tsv"
    pd.DataFrame({"id": np.arange(len(q1)), "question1": q1, "question2": q2}).to_csv(tsv, sep="\t", index=False)

    with p.part("load_inference"):
        predictor = load_inference(ctx.work / "export" / "model")
    singles = [(q1[i % len(q1)], q2[i % len(q2)]) for i in range(warmup + calls)]
    with p.part("single_pair"):
        times = call_latencies(lambda pair: predictor.similarity([pair[0]], [pair[1]]), singles, warmup)
    p.info["single_pair"] = latency_summary(times)
    with p.part("batch_similarity"):
        predictor.similarity(q1[:256], q2[:256])  # warm the batch shapes
        t = time.perf_counter()
        predictor.similarity(q1, q2)
        secs = time.perf_counter() - t
    p.info["batch_similarity"] = {"pairs": len(q1), "seconds": secs, "pairs_per_s": throughput(len(q1), secs)}
    with p.part("score_file"):
        t = time.perf_counter()
        info = score_file(predictor, tsv, out / "scores.parquet")
        secs = time.perf_counter() - t
    p.info["score_file"] = {"pairs": info["rows"], "seconds": secs, "pairs_per_s": throughput(info["rows"], secs)}
    (out / "pairs.tsv").unlink()


def stage_baseline(p: Probe, ctx: Ctx) -> None:
    from bench import baseline

    baseline.run(p, ctx, capped_splits)


STAGES: dict[str, Callable[[Probe, Ctx], None]] = {
    "fetch": stage_fetch,
    "validate": stage_validate,
    "splits": stage_splits,
    "vocab": stage_vocab,
    "train": stage_train,
    "evaluate": stage_evaluate,
    "export": stage_export,
    "publish": stage_publish,
    "inference": stage_inference,
    "baseline": stage_baseline,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stage", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    probe = Probe()
    record: dict[str, Any] = {"stage": args.stage, "pid": os.getpid()}
    # qdup's stages run with qdup's TensorFlow thread defaults, as `qdup run` does; the baseline
    # keeps TensorFlow's own unless bench.run passed QDUP_BENCH_BASELINE_THREADS=qdup.
    if args.stage != "baseline" or os.environ.get("QDUP_BENCH_BASELINE_THREADS") == "qdup":
        apply_tf_thread_defaults()
    record["tf_threads"] = {k: os.environ.get(k, "tensorflow default") for k in (INTER, INTRA)}
    rc = 0
    try:
        STAGES[args.stage](probe, Ctx(args.work))
        record["ok"] = True
    except BaseException as exc:  # reported to the orchestrator, which carries on with the next stage
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        traceback.print_exc()
        rc = 1
    end = time.perf_counter()
    t_imp = probe.t_imported if probe.t_imported is not None else end
    record.update(
        import_seconds=t_imp - T0,
        seconds=end - t_imp,
        parts=probe.parts,
        info=probe.info,
        rss_after_imports_bytes=probe.rss_after_imports,
    )
    write_step(args.out, record)
    return rc


if __name__ == "__main__":
    sys.exit(main())
