"""bench.run's own figures: split sizes, its targets and its Markdown report (pure functions of results.json)."""

from __future__ import annotations

from typing import Any

from bench.harness.results import header
from bench.harness.stats import throughput
from bench.harness.tables import GIB, dig, fmt, limit_row, met_text, mib, table, target_row, targets_table

FULL_ROWS = 404_290
# Rows the project's default split needs (300,000 training-range rows + 10,240 test rows).
DEFAULT_SPLIT_ROWS = 300_000 + 10_240
# Stage order of the per-stage table; "train" is followed by one row per epoch.
STAGE_ORDER = ("fetch", "validate", "splits", "vocab", "train", "evaluate", "export", "publish", "inference")
# Accuracy within this much of the baseline counts as "equal".
ACCURACY_TOLERANCE = 0.005

TARGETS = {
    "train_speedup": 3.0,
    "prep_seconds": 60.0,
    "warm_rerun_seconds": 15.0,
    "warm_rerun_served_seconds": 8.0,
    "predict_p50_ms": 5.0,
    "batch_pairs_per_s": 10_000.0,
    "peak_rss_bytes": 4 * GIB,
}


# ---------------------------------------------------------------- sizes


def split_counts(rows: int) -> tuple[float, float]:
    """(n_train, n_test) for a data set of `rows`: the project default when it fits, else fractions."""
    if rows >= DEFAULT_SPLIT_ROWS:
        return 300_000, 10_240
    return 0.75, 0.25


def capped_rows(available: int, max_batches: int | None, batch_size: int) -> int:
    """How many training pairs to use: all, or the first `max_batches` full batches."""
    if max_batches is None or max_batches <= 0:
        return available
    return min(available, max_batches * batch_size)


# ---------------------------------------------------------------- targets


def _stage_ok(stage: Any) -> bool:
    return isinstance(stage, dict) and bool(stage.get("ok"))


def prep_seconds(stages: dict[str, Any]) -> float | None:
    """validate + splits + vocab work seconds, or None when one of them did not run."""
    parts = [stages.get(s) for s in ("validate", "splits", "vocab")]
    if not all(_stage_ok(p) for p in parts):
        return None
    return sum(float(p["seconds"]) for p in parts)


def peak_rss(stages: dict[str, Any]) -> tuple[int | None, str | None]:
    """Largest peak RSS (bytes) over the stages that ran, and which stage it was."""
    best: tuple[int | None, str | None] = (None, None)
    for name, st in stages.items():
        if _stage_ok(st) and st.get("peak_rss_bytes") is not None:
            if best[0] is None or st["peak_rss_bytes"] > best[0]:
                best = (int(st["peak_rss_bytes"]), name)
    return best


def evaluate_targets(results: dict[str, Any], dataset: str = "generated") -> list[dict[str, Any]]:
    """One row per target: name, target text, measured text, met (True/False/None = not measured)."""
    data = dig(results, "datasets", dataset) or {}
    stages = data.get("stages") or {}
    rows: list[dict[str, Any]] = []

    cmp_ = dig(data, "training", "comparison") or {}
    ratio = cmp_.get("speedup")
    acc_q, acc_b = cmp_.get("qdup_test_accuracy"), cmp_.get("baseline_test_accuracy")
    if ratio is None or acc_q is None or acc_b is None:
        rows.append(target_row("training throughput vs baseline", ">= 3.0x at equal or better test accuracy", "not measured", None))
    else:
        diff = acc_q - acc_b
        met = ratio >= TARGETS["train_speedup"] and diff >= -ACCURACY_TOLERANCE
        rows.append(
            target_row(
                "training throughput vs baseline",
                f">= 3.0x at equal or better test accuracy (within {ACCURACY_TOLERANCE:.3f})",
                f"{ratio:.2f}x; accuracy {acc_q:.4f} vs {acc_b:.4f} ({diff:+.4f})",
                met,
                f"speed {ratio / TARGETS['train_speedup']:.0%} of target",
            )
        )

    prep = prep_seconds(stages)
    rows.append(
        limit_row(f"validate + splits + vocab ({data.get('rows', 0):,} rows)", "<= 60 s", prep, f"{prep or 0:.1f} s", TARGETS["prep_seconds"], "s")
    )
    warm = dig(results, "warm_rerun", "warm_seconds")
    rows.append(
        limit_row("warm re-run (`qdup run`, nothing changed), temporary Prefect server", "<= 15 s end to end", warm, f"{warm or 0:.1f} s",
                   TARGETS["warm_rerun_seconds"], "s")
    )
    served = dig(results, "warm_rerun", "served_seconds")
    rows.append(
        limit_row("warm re-run against a running Prefect server (`PREFECT_API_URL`)", "<= 8 s end to end", served, f"{served or 0:.1f} s",
                   TARGETS["warm_rerun_served_seconds"], "s")
    )
    p50 = dig(data, "stages", "inference", "info", "single_pair", "p50_ms")
    p99 = dig(data, "stages", "inference", "info", "single_pair", "p99_ms")
    rows.append(
        limit_row(
            "single-pair predict latency p50", "<= 5 ms", p50, f"p50 {p50 or 0:.2f} ms (p99 {p99 or 0:.2f} ms)", TARGETS["predict_p50_ms"], "ms"
        )
    )

    batch = dig(data, "stages", "inference", "info", "score_file", "pairs_per_s")
    sim = dig(data, "stages", "inference", "info", "batch_similarity", "pairs_per_s")
    measured = "not measured" if batch is None else f"{batch:,.0f} pairs/s (score_file)"
    if sim is not None:
        measured += f"; {sim:,.0f} pairs/s (Predictor.similarity)"
    rows.append(
        target_row(
            "batch scoring throughput",
            ">= 10,000 pairs/s",
            measured,
            None if batch is None else batch >= TARGETS["batch_pairs_per_s"],
            None if batch is None else f"{batch / TARGETS['batch_pairs_per_s']:.0%} of target",
        )
    )

    rss, where = peak_rss(stages)
    rows.append(
        target_row(
            "peak RSS, every stage",
            "<= 4 GiB",
            "not measured" if rss is None else f"max {rss / GIB:.2f} GiB ({where})",
            None if rss is None else rss <= TARGETS["peak_rss_bytes"],
        )
    )
    return rows


# ---------------------------------------------------------------- markdown


def stage_rows(stages: dict[str, Any]) -> list[list[str]]:
    """Per-stage table rows: stage, work s, process s, import s, RSS after imports, peak RSS, RSS met?, notes."""
    rows: list[list[str]] = []
    limit = TARGETS["peak_rss_bytes"]
    for name in STAGE_ORDER:
        st = stages.get(name)
        if st is None:
            continue
        if not st.get("ok"):
            status = st.get("status") or ("failed: " + str(st.get("error", "?"))[:120])
            rows.append([name, "—", "—", "—", "—", "—", "n/a", "", status])
            continue
        peak = st.get("peak_rss_bytes")
        parts = st.get("parts") or {}
        notes = ", ".join(f"{k} {v:.1f}s" for k, v in parts.items() if isinstance(v, (int, float)))
        rows.append(
            [
                name,
                fmt(st.get("seconds")),
                fmt(st.get("wall_seconds")),
                fmt(st.get("import_seconds")),
                mib(st.get("rss_after_imports_bytes")),
                mib(peak),
                met_text(None if peak is None else peak <= limit),
                _cpu_load(st),
                notes,
            ]
        )
        if name == "train":
            hist = dig(st, "info", "history") or []
            pairs = dig(st, "info", "train_pairs")
            for h in hist:
                tp = throughput(pairs, h.get("seconds")) if pairs else None
                rows.append(
                    [
                        f"train epoch {h.get('epoch')}",
                        fmt(h.get("seconds")),
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        f"loss {fmt(h.get('loss'), 3)}, val_loss {fmt(h.get('val_loss'), 3)}"
                        + (f", {tp:,.0f} pairs/s" if tp else ""),
                    ]
                )
    return rows


def _cpu_load(st: dict[str, Any]) -> str:
    """CPU seconds of the stage process and the 1-minute load average before it (contention check)."""
    cpu, load = st.get("cpu_seconds"), st.get("loadavg_1min_before")
    if cpu is None:
        return ""
    return f"{cpu:,.1f}" + ("" if load is None else f" / {load:.1f}")


def _threads(value: Any) -> str:
    if not isinstance(value, dict):
        return fmt(value)
    return " / ".join(str(value.get(k, "?")) for k in ("TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS"))


def training_rows(training: dict[str, Any]) -> list[list[str]]:
    q, b = training.get("qdup") or {}, training.get("baseline") or {}
    keys = [
        ("training pairs per epoch", "train_pairs", 0),
        ("batches per epoch", "steps_per_epoch", 0),
        ("epochs", "epochs", 0),
        ("TensorFlow threads (inter-op / intra-op)", "tf_threads", 0),
        ("mean padded batch width (tokens)", "mean_batch_width", 1),
        ("epoch seconds (train + val pass), per epoch", "epoch_seconds", 1),
        ("throughput, pairs/s (all epochs)", "pairs_per_s", 0),
        ("throughput, pairs/s (last epoch)", "pairs_per_s_last_epoch", 0),
        ("CPU seconds, last epoch (qdup: incl. its checkpoint save)", "cpu_seconds_last_epoch", 1),
        ("pairs per CPU-second, last epoch (robust to other load)", "pairs_per_cpu_s_last_epoch", 0),
        ("training work seconds end to end (prep + fit + saves)", "total_seconds", 1),
        ("own val_loss after the last epoch", "val_loss", 3),
        ("val loss, same file-order batches for both", "common_val_loss", 3),
        ("threshold chosen on calibration", "threshold", 4),
        ("test accuracy at that threshold", "test_accuracy", 4),
        ("test accuracy at 0.7", "test_accuracy_at_0.7", 4),
        ("test ROC AUC", "test_roc_auc", 4),
    ]
    rows = []
    for label, key, digits in keys:
        qv, bv = q.get(key), b.get(key)
        if isinstance(qv, dict) or isinstance(bv, dict):
            rows.append([label, _threads(qv), _threads(bv)])
            continue
        if isinstance(qv, list):
            qv = ", ".join(fmt(x, digits) for x in qv)
        else:
            qv = fmt(qv, digits) if isinstance(qv, float) else fmt(qv)
        if isinstance(bv, list):
            bv = ", ".join(fmt(x, digits) for x in bv)
        else:
            bv = fmt(bv, digits) if isinstance(bv, float) else fmt(bv)
        rows.append([label, qv, bv])
    return rows


def render_markdown(results: dict[str, Any]) -> str:
    """The whole report: machine, targets, and per data set the stages, training, inference."""
    m = results.get("machine") or {}
    out: list[str] = ["# qdup benchmark", "", *header(results),
                      f"Python {m.get('python', '?')}, TensorFlow {m.get('tensorflow', '?')}, Keras {m.get('keras', '?')}."]
    if results.get("quick"):
        out += ["", "**Quick (smoke) run: tiny sizes; the targets refer to the full 404,290-row scale.**"]
    out += ["", "## Targets (generated data set)", "", targets_table(results.get("targets", []))]

    for ds_name, data in (results.get("datasets") or {}).items():
        out += ["", f"## Data set `{ds_name}`", ""]
        if data.get("skipped"):
            out.append(f"Skipped: {data['skipped']}")
            continue
        out.append(
            f"{fmt(data.get('rows'))} rows, {fmt(data.get('bytes'))} bytes, source `{data.get('source_note', '?')}`"
            + (f"; generated in {fmt(data.get('generate_seconds'), 1)} s" if data.get("generate_seconds") is not None else "")
            + "."
        )
        if data.get("split_rows"):
            out.append("Split rows: " + ", ".join(f"{k} {v:,}" for k, v in data["split_rows"].items()) + ".")
        if data.get("train_cap_note"):
            out.append(data["train_cap_note"])
        out += ["", "### Stages (each in a fresh process)", ""]
        out.append(
            "`work s`: the stage's own calls; `process s`: the whole subprocess (interpreter, imports, work); "
            "peak RSS is the process's VmHWM (RSS limit 4 GiB)."
        )
        out.append("")
        out.append(
            table(
                ["stage", "work s", "process s", "imports s", "RSS after imports MiB", "peak RSS MiB", "RSS <= 4 GiB?",
                 "CPU s / load", "breakdown"],
                stage_rows(data.get("stages") or {}),
            )
        )
        prep = prep_seconds(data.get("stages") or {})
        if prep is not None:
            out.append("")
            out.append(f"validate + splits + vocab: **{prep:.1f} s** (target <= 60 s at 404,290 rows).")
        training = data.get("training") or {}
        if training:
            out += ["", "### Training: qdup trainer vs notebook baseline", ""]
            if training.get("note"):
                out.append(training["note"])
                out.append("")
            out.append(table(["", "qdup (`qdup.model.train.train_model`)", "baseline (TextVectorization in the model)"], training_rows(training)))
            c = training.get("comparison") or {}
            if c.get("speedup") is not None:
                out.append("")
                out.append(
                    f"Speed-up (pairs/s, all epochs): **{c['speedup']:.2f}x**"
                    + (f"; last epoch {c['speedup_last_epoch']:.2f}x" if c.get("speedup_last_epoch") else "")
                    + (f"; end to end {c['speedup_end_to_end']:.2f}x" if c.get("speedup_end_to_end") else "")
                    + (f"; per CPU-second (last epoch) {c['speedup_cpu_last_epoch']:.2f}x" if c.get("speedup_cpu_last_epoch") else "")
                    + "."
                )
        inf = dig(data, "stages", "inference", "info")
        if inf:
            out += ["", "### Inference (warm process)", ""]
            sp, raw = inf.get("single_pair") or {}, inf.get("single_pair_graph_only") or {}
            rows = [
                ["single pair, `Predictor.similarity([q1], [q2])`", f"p50 {fmt(sp.get('p50_ms'))} ms", f"p99 {fmt(sp.get('p99_ms'))} ms", f"n={sp.get('n')}"],
                ["single pair, compiled graph only (`_run`)", f"p50 {fmt(raw.get('p50_ms'))} ms", f"p99 {fmt(raw.get('p99_ms'))} ms", f"n={raw.get('n')}"],
            ]
            for key, label in (
                ("batch_similarity", "`Predictor.similarity`"),
                ("score_file", "`score_file` (TSV -> Parquet)"),
            ):
                b = inf.get(key) or {}
                rows.append([f"batch, {label}", f"{fmt(b.get('pairs_per_s'), 0)} pairs/s", f"{fmt(b.get('seconds'))} s", f"{fmt(b.get('pairs'))} pairs"])
            out.append(table(["what", "", "", ""], rows))
    warm = results.get("warm_rerun") or {}
    if warm:
        out += ["", "## Warm re-run (`qdup run` twice, nothing changed)", ""]
        if warm.get("skipped"):
            out.append(f"Skipped: {warm['skipped']}")
        else:
            out.append(f"Command: `{warm.get('command')}`; config: `{warm.get('config_note', '')}`")
            out.append("")
            out.append(
                table(
                    ["run", "exit", "seconds end to end"],
                    [["first (cold: trains)", warm.get("cold_rc"), fmt(warm.get("cold_seconds"), 1)],
                     ["second (warm: nothing changed)", warm.get("warm_rc"), fmt(warm.get("warm_seconds"), 1)]],
                )
            )
            tl = warm.get("warm_timeline") or []
            if tl:
                out += ["", "Timeline of the warm run (seconds since launch, first matching output line):", ""]
                out.append(table(["t (s)", "event"], [[f"{t:.1f}", e] for t, e in tl]))
    notes = results.get("notes") or []
    if notes:
        out += ["", "## Notes", ""]
        out += [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
