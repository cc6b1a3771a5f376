"""One benchmark stage in a fresh process: calls qdup's plain stage functions, reports time and peak RSS."""

# Usage (the orchestrator `bench.run` does this): python -m bench.stage STAGE --work DIR --out FILE.json
# DIR holds params.json (the RetrainConfig and the bench options) and the outputs of earlier stages.

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.report import capped_rows, latency_summary, throughput  # noqa: E402
from qdup.runtime import INTER, INTRA, apply_tf_thread_defaults  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in bytes; None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Probe:
    """Times the stage: imports first (`imported()`), then the work, split into named parts."""

    def __init__(self) -> None:
        self.t_imported: float | None = None
        self.rss_after_imports: int | None = None
        self.parts: dict[str, float] = {}
        self.info: dict[str, Any] = {}

    def imported(self) -> None:
        self.t_imported = time.perf_counter()
        self.rss_after_imports = proc_status_bytes("VmRSS")

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
    from qdup.data.fetch import fetch_dataset

    p.imported()
    cache = ctx.fresh_dir("fetch") / "cache"
    with p.part("fetch_dataset"):
        got = fetch_dataset(ctx.cfg.fetch, cache, log=_log)
    p.info.update(source=got.source, bytes=got.size, sha256=got.sha256, from_cache=got.from_cache)
    p.info["mb_per_s"] = got.size / 1e6 / p.parts["fetch_dataset"]
    ctx.save_state("fetch", {"path": str(got.path), "sha256": got.sha256, "md5": got.md5, "size": got.size})


def stage_validate(p: Probe, ctx: Ctx) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qdup.data import contracts

    p.imported()
    out = ctx.fresh_dir("validate")
    data_path = Path(ctx.state("fetch")["path"])
    suite = ctx.cfg.validate_.raw_suite
    shown = ctx.cfg.validate_.failed_rows_shown
    with p.part("read_tsv"):
        raw, typed = contracts.read_tsv(data_path)
    ge_context = getattr(contracts, "_context", None)
    if callable(ge_context):
        with p.part("ge_context"):
            ge_context()  # GE's ephemeral context: a one-off cost per process, shown apart
    with p.part("ge_validate"):
        report = contracts.validate_frame(typed, suite, "raw", raw=raw, shown=shown)
    if not report.success:
        raise RuntimeError(report.error_message(str(data_path)))
    with p.part("write_report"):
        report.write(out, "validation")
    with p.part("to_parquet"):
        frame = contracts.to_int_frame(typed)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / "validated.parquet", compression="zstd")
    p.info.update(rows=len(frame), expectations=report.evaluated, duplicates=int(frame["is_duplicate"].sum()))


def stage_splits(p: Probe, ctx: Ctx) -> None:
    import pyarrow.parquet as pq

    from qdup.data import contracts, splits

    p.imported()
    out = ctx.fresh_dir("splits")
    suites = ctx.cfg.validate_.split_suites
    with p.part("read_parquet"):
        frame = pq.read_table(ctx.work / "validate" / "validated.parquet").to_pandas()
    with p.part("make_splits"):
        parts, facts = splits.make_splits(frame, ctx.cfg.split)
    ge_context = getattr(contracts, "_context", None)
    if callable(ge_context):
        with p.part("ge_context"):
            ge_context()
    rows = {}
    for name, part in parts.items():
        with p.part("ge_validate"):
            report = contracts.validate_frame(part, suites[name], name, shown=ctx.cfg.validate_.failed_rows_shown)
        if not report.success:
            raise RuntimeError(report.error_message(f"split {name!r}"))
        report.write(out, f"validation-{name}")
        with p.part("write_split"):
            entry = splits.write_split(part, out / f"{name}.parquet")
        rows[name] = entry["rows"]
    p.info.update(rows=rows, facts=facts)


def stage_vocab(p: Probe, ctx: Ctx) -> None:
    from tasks import splits, vocab

    p.imported()
    out = ctx.fresh_dir("vocab")
    with p.part("read_splits"):
        train = splits.read_split(_split_path(ctx, "train"))
        others = {n: splits.read_split(_split_path(ctx, n)) for n in ("val", "test")}
    texts = list(train["question1"]) + list(train["question2"])
    with p.part("adapt"):
        vectorizer = vocab.fit_vectorizer(texts, ctx.cfg.vocab)
    with p.part("write_vocabulary"):
        size = vocab.write_vocabulary(vectorizer, out / "vocabulary.txt")
    oov = {}
    with p.part("oov_rates"):
        for name, part in others.items():
            oov[name] = vocab.oov_rate(vectorizer, list(part["question1"]) + list(part["question2"]))
    p.info.update(size=size, oov_rate=oov, texts=len(texts))


def stage_train(p: Probe, ctx: Ctx) -> None:
    from tasks import splits, train, vocab

    p.imported()
    out = ctx.fresh_dir("train")
    work = ctx.work / "train-work"
    shutil.rmtree(work, ignore_errors=True)
    with p.part("read"):
        train_df = train_frame(ctx, splits.read_split(_split_path(ctx, "train")))
        val_df = splits.read_split(_split_path(ctx, "val"))
        vectorizer = vocab.load_vectorizer(ctx.work / "vocab" / "vocabulary.txt")
    t_start = time.perf_counter()
    events: list[tuple[float, str]] = []

    def log(msg: str) -> None:
        events.append((time.perf_counter() - t_start, msg))
        _log(msg)

    cpu_at: list[float] = [cpu_seconds()]

    def on_epoch_end(epoch: int, total: int, logs: dict[str, float]) -> None:
        events.append((time.perf_counter() - t_start, f"hook epoch {epoch}/{total}"))
        cpu_at.append(cpu_seconds())

    with p.part("train_model"):
        result = train.train_model(
            train_df, val_df, vectorizer, ctx.cfg.model, ctx.cfg.train, ctx.cfg.seed, work, on_epoch_end=on_epoch_end, log=log
        )
    shutil.copyfile(result.encoder_path, out / "encoder.keras")
    with p.part("batch_widths (bench only)"):
        p.info["mean_batch_width"] = _mean_batch_width(train, train_df, vectorizer, ctx)
    first_epoch_line = next((t for t, m in events if m.startswith("epoch ")), None)
    epoch_total = sum(h["seconds"] for h in result.history)
    p.info.update(
        train_pairs=len(train_df),
        val_pairs=len(val_df),
        steps_per_epoch=result.steps_per_epoch,
        epochs=result.epochs_run,
        history=result.history,
        best_epoch=result.best_epoch,
        best_val_loss=result.best_val_loss,
        facts=result.facts,
        events=[[round(t, 3), m] for t, m in events],
        # CPU seconds between epoch hooks: epoch i's training, validation and checkpoint save
        # (the first one also holds vectorising and model building).
        epoch_cpu_seconds=[b - a for a, b in zip(cpu_at, cpu_at[1:])],
        # Time before the first epoch began: vectorising the splits, building and compiling the model.
        seconds_before_first_epoch=None if first_epoch_line is None else first_epoch_line - result.history[0]["seconds"],
        epoch_seconds_total=epoch_total,
        # Everything in train_model that is not an epoch: prep, checkpoints between epochs, final save.
        seconds_outside_epochs=p.parts["train_model"] - epoch_total,
    )


def _mean_batch_width(train, train_df, vectorizer, ctx: Ctx) -> dict[str, float] | None:
    """Mean padded width of qdup's training batches (question1 and question2), from its own batch plan."""
    try:
        import numpy as np

        pairs = train.pair_arrays(train_df, vectorizer, ctx.cfg.model, "train")
        plan = train.batch_plan(np.maximum(pairs.len1, pairs.len2), ctx.cfg.train.batch_size, train.epoch_seed(ctx.cfg.seed, 1))
        fixed = not ctx.cfg.model.mask_padding
        w1 = [pairs.q1.shape[1] if fixed else int(pairs.len1[b].max()) for b in plan]
        w2 = [pairs.q2.shape[1] if fixed else int(pairs.len2[b].max()) for b in plan]
        return {"question1": float(np.mean(w1)), "question2": float(np.mean(w2)),
                "mean_tokens": float((pairs.len1.mean() + pairs.len2.mean()) / 2)}
    except Exception as exc:  # noqa: BLE001 - internals of qdup.model.train may change; this is only a diagnostic
        return {"error": f"{type(exc).__name__}: {exc}"}


def _load_encoder(path: Path):
    import keras

    import qdup.model.network  # noqa: F401  (registers the custom layers)

    return keras.saving.load_model(path, safe_mode=True, compile=False)


def stage_evaluate(p: Probe, ctx: Ctx) -> None:
    import keras  # noqa: F401

    from tasks import evaluate, splits, vocab

    p.imported()
    out = ctx.fresh_dir("evaluate")
    with p.part("load"):
        encoder = _load_encoder(ctx.work / "train" / "encoder.keras")
        vectorizer = vocab.load_vectorizer(ctx.work / "vocab" / "vocabulary.txt")
        cal = splits.read_split(_split_path(ctx, "calibration"))
        test = splits.read_split(_split_path(ctx, "test"))
    with p.part("evaluate_model"):
        metrics = evaluate.evaluate_model(encoder, vectorizer, cal, test, ctx.cfg.model, ctx.cfg.evaluate, out)
    t = metrics["test"]
    p.info.update(
        calibration_pairs=len(cal),
        test_pairs=len(test),
        threshold=metrics["threshold"]["value"],
        test_accuracy=t["at_threshold"]["accuracy"],
        reference_threshold=metrics["threshold"]["reference"],
        test_accuracy_at_reference=t["at_reference_threshold"]["accuracy"],
        test_roc_auc=t["ranking"]["roc_auc"],
        test_pr_auc=t["ranking"]["pr_auc"],
    )


def stage_export(p: Probe, ctx: Ctx) -> None:
    from tasks import export, vocab

    p.imported()
    out = ctx.fresh_dir("export")
    threshold = json.loads((ctx.work / "evaluate" / "metrics.json").read_text())["threshold"]["value"]
    with p.part("load_vectorizer"):
        vectorizer = vocab.load_vectorizer(ctx.work / "vocab" / "vocabulary.txt")
    with p.part("export_models"):
        info = export.export_models(ctx.work / "train" / "encoder.keras", vectorizer, ctx.cfg.model, threshold, out / "model")
    p.info.update(threshold=info["threshold"], bytes={Path(f).name: Path(f).stat().st_size for f in info["files"].values()})


def stage_publish(p: Probe, ctx: Ctx) -> None:
    from qdup.registry.store import ArtifactStore, new_version_id

    p.imported()
    root = ctx.fresh_dir("publish") / "store"
    files: dict[str, Path] = {}
    for f in sorted((ctx.work / "export" / "model").iterdir()):
        files[f"model/{f.name}"] = f
    files["vocabulary.txt"] = ctx.work / "vocab" / "vocabulary.txt"
    for name in ("metrics.json", "threshold_sweep.json", "roc_curve.png"):
        if (ctx.work / "evaluate" / name).is_file():
            files[f"evaluation/{name}"] = ctx.work / "evaluate" / name
    for f in sorted((ctx.work / "splits").glob("validation-*")):
        files[f"validation/{f.name}"] = f
    manifest = {"bench": True, "content_key": ctx.state("fetch")["sha256"]}
    store = ArtifactStore(str(root))
    who = "qdup-bench"
    with p.part("publish"):
        version = store.publish(files, manifest, version=new_version_id())
    with p.part("aliases"):
        with store.lock():
            store.move_alias("latest", version, "bench publish", who, "publish")
            store.move_alias("production", version, "bench publish", who, "publish")
    with p.part("list_versions"):
        store.versions()
    p.info.update(version=version, files=len(files), bytes=sum(f.stat().st_size for f in files.values()))


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
    import tensorflow as tf

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
        for a, b in singles[:warmup]:
            predictor.similarity([a], [b])
        times = []
        for a, b in singles[warmup:]:
            t = time.perf_counter()
            predictor.similarity([a], [b])
            times.append(time.perf_counter() - t)
    p.info["single_pair"] = latency_summary(times)
    run = getattr(predictor, "_run", None)
    if callable(run):
        # The compiled graph alone, without the Python around it (validation, tf.constant, numpy copy).
        with p.part("single_pair_graph_only"):
            for a, b in singles[:warmup]:
                run(tf.constant([a]), tf.constant([b]))
            times = []
            for a, b in singles[warmup:]:
                t = time.perf_counter()
                x1, x2 = tf.constant([a]), tf.constant([b])
                run(x1, x2).numpy()
                times.append(time.perf_counter() - t)
        p.info["single_pair_graph_only"] = latency_summary(times)
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

    baseline.run(p, ctx)


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
    except BaseException as exc:  # noqa: BLE001 - reported to the orchestrator, which carries on
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
        vmhwm_bytes=proc_status_bytes("VmHWM"),
        vmrss_end_bytes=proc_status_bytes("VmRSS"),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str))
    return rc


if __name__ == "__main__":
    sys.exit(main())
