"""Prefect tasks: the I/O edge of each stage (stage cache, files, artifacts) around plain functions."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from qdup.config import RetrainConfig
from qdup.errors import DataContractError
from qdup.fileio import atomic_write_text, read_json, sha256_file, sha256_json
from qdup.log import get_log
from qdup.paths import cache_dir
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage, stage_dir, stage_key
from qdup.data import contracts, fetch, splits

# Stages cache their outputs by content (qdup.stagecache), so Prefect's own input-hash
# cache is off: it would key on paths and replay stale files.
_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


def _artifact(key: str, markdown: str, description: str) -> None:
    create_markdown_artifact(key=key, markdown=markdown, description=description)


def _fail_with_report(report: contracts.ContractReport, run_dir: Path, stem: str, file: str) -> None:
    json_path, md_path = report.write(run_dir, stem)
    _artifact("qdup-validation", report.markdown(), f"FAILED: {report.suite} on {report.data_name}")
    raise DataContractError(report.error_message(file) + f"\n  report: {md_path}\n  GE result: {json_path}")


@task(name="fetch", **_TASK)
def fetch_task(cfg: RetrainConfig) -> StageResult:
    """Download (or copy) the TSV into the content-addressed cache; network errors are retried inside."""
    log = get_log()
    got = fetch.fetch_dataset(cfg.fetch, cache_dir(), log=log)
    manifest = {
        "source": got.source,
        "path": str(got.path),
        "sha256": got.sha256,
        "md5": got.md5,
        "size": got.size,
        "record": str(got.record_path),
    }
    _artifact(
        "qdup-fetch",
        f"# Fetch\n\n| | |\n|---|---|\n| source | `{got.source}` |\n| sha256 | `{got.sha256}` |\n"
        f"| md5 | `{got.md5}` |\n| bytes | {got.size:,} |\n| from cache | {got.from_cache} |\n",
        "dataset fetched",
    )
    return StageResult(stage="fetch", key=got.sha256, path=got.path.parent, cached=got.from_cache, manifest=manifest)


@task(name="validate", **_TASK)
def validate_task(fetched: StageResult, cfg: RetrainConfig, run_dir: Path) -> StageResult:
    """Blocking raw data contract; on success the typed data set is kept as Parquet."""
    log = get_log()
    suite = cfg.validate_.raw_suite
    inputs = {
        "dataset_sha256": fetched.manifest["sha256"],
        "suite": suite,
        "suite_sha256": sha256_file(contracts.suite_path(suite)),
        "code": code_fingerprint(contracts),
        "shown": cfg.validate_.failed_rows_shown,
    }
    data_path = Path(fetched.manifest["path"])

    def build(out: Path) -> dict[str, Any]:
        raw, typed = contracts.read_tsv(data_path)
        report = contracts.validate_frame(typed, suite, "raw", raw=raw, shown=cfg.validate_.failed_rows_shown)
        if not report.success:
            _fail_with_report(report, run_dir, "validation-raw", str(data_path))
        report.write(out, "validation")
        frame = contracts.to_int_frame(typed)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / "validated.parquet", compression="zstd")
        missing = {c: int(frame[c].isna().sum()) for c in contracts.TEXT_COLUMNS}
        _artifact("qdup-validation", report.markdown(), f"passed: {suite}")
        return {
            "suite": suite,
            "rows": len(frame),
            "duplicates": int(frame["is_duplicate"].sum()),
            "duplicate_share": round(float(frame["is_duplicate"].mean()), 6),
            "missing_questions": missing,
            "expectations": report.evaluated,
            "report": "validation.md",
            "result": "validation.json",
        }

    result = run_stage("validate", inputs, build, log)
    m = result.manifest
    log(f"[validate] {m['rows']:,} rows pass {suite}; {sum(m['missing_questions'].values())} missing questions will be dropped")
    return result


@task(name="splits", **_TASK)
def splits_task(validated: StageResult, cfg: RetrainConfig, run_dir: Path) -> StageResult:
    """Positional splits as Parquet, each gated by its data contract."""
    log = get_log()
    suites = cfg.validate_.split_suites
    inputs = {
        "validated": validated.key,
        "split": params(cfg.split),
        "suites": {name: sha256_file(contracts.suite_path(s)) for name, s in suites.items()},
        "code": code_fingerprint(splits, contracts),
    }

    def build(out: Path) -> dict[str, Any]:
        frame = pq.read_table(validated.file("validated.parquet")).to_pandas()
        parts, facts = splits.make_splits(frame, cfg.split)
        entries: dict[str, Any] = {}
        for name, part in parts.items():
            report = contracts.validate_frame(part, suites[name], name, shown=cfg.validate_.failed_rows_shown)
            if not report.success:
                _fail_with_report(report, run_dir, f"validation-{name}", f"split {name!r}")
            report.write(out, f"validation-{name}")
            entries[name] = splits.write_split(part, out / f"{name}.parquet") | {"suite": suites[name]}
        return {"splits": entries, **facts}

    result = run_stage("splits", inputs, build, log)
    rows = [{"split": n, **{k: e[k] for k in ("rows", "duplicates", "content_sha256")}} for n, e in result.manifest["splits"].items()]
    for r in rows:
        r["content_sha256"] = r["content_sha256"][:16]
        log(f"[splits] {r['split']}: {r['rows']:,} rows, {r['duplicates']:,} duplicates")
    create_table_artifact(key="qdup-splits", table=rows, description="split sizes and content hashes")
    return result


def _split_hash(splits_result: StageResult, name: str) -> str:
    return splits_result.manifest["splits"][name]["content_sha256"]


def _read(splits_result: StageResult, name: str):
    return splits.read_split(splits_result.file(f"{name}.parquet"))


@task(name="vocabulary", **_TASK)
def vocab_task(split_result: StageResult, cfg: RetrainConfig) -> StageResult:
    """Adapt TextVectorization on the train split's questions only; record OOV rates."""
    from qdup.model import vocab

    log = get_log()
    inputs = {
        "train": _split_hash(split_result, "train"),
        "val": _split_hash(split_result, "val"),
        "test": _split_hash(split_result, "test"),
        "vocab": params(cfg.vocab),
        "code": code_fingerprint(vocab),
    }

    def build(out: Path) -> dict[str, Any]:
        train = _read(split_result, "train")
        vectorizer = vocab.fit_vectorizer(list(train["question1"]) + list(train["question2"]), cfg.vocab)
        size = vocab.write_vocabulary(vectorizer, out / "vocabulary.txt")
        oov = {}
        for name in ("val", "test"):
            part = _read(split_result, name)
            oov[name] = round(vocab.oov_rate(vectorizer, list(part["question1"]) + list(part["question2"])), 6)
        return {"file": "vocabulary.txt", "size": size, "sha256": sha256_file(out / "vocabulary.txt"), "oov_rate": oov}

    result = run_stage("vocab", inputs, build, log)
    m = result.manifest
    log(f"[vocab] {m['size']:,} tokens; OOV rate val {m['oov_rate']['val']:.2%}, test {m['oov_rate']['test']:.2%}")
    _artifact(
        "qdup-vocabulary",
        f"# Vocabulary\n\n| size | OOV val | OOV test | sha256 |\n|---|---|---|---|\n"
        f"| {m['size']:,} | {m['oov_rate']['val']:.2%} | {m['oov_rate']['test']:.2%} | `{m['sha256'][:16]}` |\n",
        "vocabulary fitted on train",
    )
    return result


@task(name="train", **_TASK)
def train_task(split_result: StageResult, vocab_result: StageResult, cfg: RetrainConfig) -> StageResult:
    """Train the Siamese encoder; checkpoints live beside the stage folder so a killed run resumes."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    from qdup.model import network as model, train, vocab

    log = get_log()
    inputs = {
        "train": _split_hash(split_result, "train"),
        "val": _split_hash(split_result, "val"),
        "vocab": vocab_result.manifest["sha256"],
        "model": params(cfg.model),
        "train_params": params(cfg.train),
        "seed": cfg.seed,
        "code": code_fingerprint(model, train, vocab),
    }

    # A stable work folder beside the stage folder (not inside its temporary one), named by
    # the stage key, so that checkpoints survive a crash and the retry of this stage finds them.
    work = stage_dir("train", stage_key("train", inputs)).with_suffix(".work")

    def build(out: Path) -> dict[str, Any]:
        progress_id = create_progress_artifact(progress=0.0, key="qdup-training", description="training epochs")

        def on_epoch_end(epoch: int, total: int, logs: dict[str, float]) -> None:
            update_progress_artifact(artifact_id=progress_id, progress=100.0 * epoch / total)

        vectorizer = vocab.load_vectorizer(vocab_result.file("vocabulary.txt"))
        result = train.train_model(
            _read(split_result, "train"), _read(split_result, "val"), vectorizer,
            cfg.model, cfg.train, cfg.seed, work, on_epoch_end=on_epoch_end, log=log,
        )
        update_progress_artifact(artifact_id=progress_id, progress=100.0)
        shutil.copyfile(result.encoder_path, out / "encoder.keras")
        shutil.copytree(result.tensorboard_dir, out / "tensorboard")
        manifest = {
            "encoder": "encoder.keras",
            "encoder_sha256": sha256_file(out / "encoder.keras"),
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "epochs_run": result.epochs_run,
            "resumed_from_epoch": result.resumed_from_epoch,
            "stopped_early": result.stopped_early,
            "steps_per_epoch": result.steps_per_epoch,
        }
        shutil.rmtree(work, ignore_errors=True)
        return manifest

    result = run_stage("train", inputs, build, log)
    m = result.manifest
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in m["history"]]
    create_table_artifact(key="qdup-training-history", table=rows, description=f"best epoch {m['best_epoch']}")
    return result


@task(name="evaluate", **_TASK)
def evaluate_task(split_result: StageResult, vocab_result: StageResult, train_result: StageResult, cfg: RetrainConfig) -> StageResult:
    """Threshold on calibration, metrics on test; a failure fails the flow (no default metrics)."""
    import keras

    from qdup.evaluation import metrics as evaluate
    from qdup.model import vocab

    log = get_log()
    inputs = {
        "encoder": train_result.manifest["encoder_sha256"],
        "vocab": vocab_result.manifest["sha256"],
        "calibration": _split_hash(split_result, "calibration"),
        "test": _split_hash(split_result, "test"),
        "max_length": cfg.model.max_length,
        "evaluate": params(cfg.evaluate),
        "code": code_fingerprint(evaluate),
    }

    def build(out: Path) -> dict[str, Any]:
        encoder = keras.saving.load_model(train_result.file("encoder.keras"), safe_mode=True, compile=False)
        vectorizer = vocab.load_vectorizer(vocab_result.file("vocabulary.txt"))
        metrics = evaluate.evaluate_model(
            encoder, vectorizer, _read(split_result, "calibration"), _read(split_result, "test"), cfg.model, cfg.evaluate, out
        )
        sweep = read_json(out / "threshold_sweep.json")["rows"]
        atomic_write_text(out / "threshold_sweep.md", evaluate.sweep_markdown(sweep))
        return {"metrics": metrics}

    result = run_stage("evaluate", inputs, build, log)
    metrics = result.manifest["metrics"]
    summary = metrics_rows(metrics)
    for row in summary:
        log("[evaluate] " + ", ".join(f"{k}={v}" for k, v in row.items()))
    create_table_artifact(key="qdup-test-metrics", table=summary, description="test metrics (threshold from calibration)")
    _artifact("qdup-threshold-sweep", result.file("threshold_sweep.md").read_text(), "threshold sweep on test")
    # Embedded, so the UI shows the curve without access to this machine's disk.
    png = base64.b64encode(result.file("roc_curve.png").read_bytes()).decode()
    _artifact("qdup-roc-curve", f"# ROC curve (test)\n\n![ROC curve](data:image/png;base64,{png})\n", "ROC on test")
    return result


def metrics_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline test metrics as table rows: chosen threshold and the reference 0.7."""
    test = metrics["test"]
    rows = []
    for label, key, thr in (
        ("calibration-chosen", "at_threshold", metrics["threshold"]["value"]),
        ("reference", "at_reference_threshold", metrics["threshold"]["reference"]),
    ):
        at = test[key]
        rows.append(
            {
                "threshold": f"{label} {thr:.4f}",
                "accuracy": round(at["accuracy"], 4),
                "precision": None if at["precision"] is None else round(at["precision"], 4),
                "recall": None if at["recall"] is None else round(at["recall"], 4),
                "f1": None if at["f1"] is None else round(at["f1"], 4),
                "roc_auc": round(test["ranking"]["roc_auc"], 4),
                "pr_auc": round(test["ranking"]["pr_auc"], 4),
            }
        )
    return rows


@task(name="export", **_TASK)
def export_task(vocab_result: StageResult, train_result: StageResult, eval_result: StageResult, cfg: RetrainConfig) -> StageResult:
    """The serving bundle: raw strings in, similarity out, threshold beside it; safe_mode loadable."""
    from qdup.model import vocab
    from qdup.serving import export

    log = get_log()
    threshold = eval_result.manifest["metrics"]["threshold"]["value"]
    inputs = {
        "encoder": train_result.manifest["encoder_sha256"],
        "vocab": vocab_result.manifest["sha256"],
        "threshold": threshold,
        "max_length": cfg.model.max_length,
        "code": code_fingerprint(export),
    }

    def build(out: Path) -> dict[str, Any]:
        vectorizer = vocab.load_vectorizer(vocab_result.file("vocabulary.txt"))
        info = export.export_models(train_result.file("encoder.keras"), vectorizer, cfg.model, threshold, out / "model")
        return {"model_dir": "model", "threshold": info["threshold"], "sha256": info["sha256"]}

    result = run_stage("export", inputs, build, log)
    _artifact(
        "qdup-export",
        f"# Export\n\n| file | sha256 |\n|---|---|\n"
        + "".join(f"| `{name}` | `{digest[:16]}` |\n" for name, digest in sorted(result.manifest["sha256"].items()))
        + f"\nthreshold {threshold:.4f} (chosen on calibration); loads with `safe_mode=True`\n",
        "serving bundle",
    )
    log(f"[export] model: {result.file('model')} (threshold {threshold:.4f}); try: qdup predict --model {result.file('model')} \"q1\" \"q2\"")
    return result


def _retry_on_io(task, task_run, state) -> bool:
    """Retry publishing only for I/O failures, never for a refused (invalid) publish."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(name="publish", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_on_io, **_TASK)
def publish_task(stages: dict[str, StageResult], cfg: RetrainConfig, version: str) -> dict[str, Any]:
    """Publish the exact outputs handed in as `version`; move `latest`, and `production` if it passes the gate."""
    from prefect.artifacts import create_link_artifact

    from qdup.runs import flow_run_info
    from qdup.registry.store import ArtifactStore, actor
    from qdup.registry import publish
    from qdup.serving.predictor import load_inference

    log = get_log()
    store = ArtifactStore(cfg.publish.store_url)
    metric, tolerance = cfg.publish.gate_metric, cfg.publish.tolerance
    challenger = publish.gate_value(stages["evaluate"].manifest["metrics"], metric)
    test_hash = stages["splits"].manifest["splits"]["test"]["content_sha256"]
    who = f"{actor()} via flow run {flow_run_info().get('flow_run_name')}"
    # Stage keys hash inputs, parameters and code, so equal keys mean an identical model:
    # re-running an unchanged pipeline must not fill the store with copies.
    content_key = sha256_json({name: r.key for name, r in sorted(stages.items())})
    for existing in reversed(store.versions()):
        if store.manifest(existing).get("content_key") == content_key:
            log(f"[publish] identical to version {existing} (same data, parameters and code): nothing new to publish")
            return {"version": existing, "store": store.url, "published": False, "promoted": False,
                    "reason": f"identical to {existing}"}
    with store.lock():
        current = store.aliases().get("production")
        production_value, measured_on = None, None
        if current is not None:
            prod = store.manifest(current)
            if prod["splits"]["test"]["content_sha256"] == test_hash:
                production_value, measured_on = float(prod["metrics"]["test"][metric]), "stored metrics"
            else:
                # Different test data: score production on the challenger's test split so the
                # comparison is on the same rows.
                predictor = load_inference(store.local_path(current) / "model")
                production_value = publish.rescore_on(predictor, _read(stages["splits"], "test"), metric)
                measured_on = "re-scored on the challenger's test split"
        decision = publish.decide(metric, tolerance, challenger, current, production_value, measured_on)
        if version not in store.versions():  # a retry after a committed publish must not publish twice
            manifest = publish.lineage_manifest(cfg, stages, flow_run_info(), decision) | {"content_key": content_key}
            store.publish(publish.version_files(stages), manifest, version=version)
        store.move_alias("latest", version, "every publish moves latest", who, "publish")
        promoted = decision.promote and cfg.publish.promote
        if promoted:
            store.move_alias("production", version, decision.reason, who, "publish")
    why = decision.reason if cfg.publish.promote else "promotion disabled (publish.promote=false)"
    log(f"[publish] version {version} -> {store.url}; production {'moved' if promoted else 'NOT moved'}: {why}")
    create_link_artifact(
        key="qdup-version",
        link=f"{store.url.rstrip('/')}/versions/{version}" if "://" in store.url else f"file://{store.local_path(version)}",
        link_text=f"qdup version {version}",
        description="the version this run published",
    )
    m = store.manifest(version)
    _artifact(
        "qdup-lineage",
        f"# Version `{version}`\n\n"
        f"- production moved: **{promoted}** ({why})\n"
        f"- source: `{m['dataset']['source']}`\n- dataset sha256: `{m['dataset']['sha256']}`\n"
        f"- data contract: `{m['validation']['suite']}` passed on {m['validation']['rows']:,} rows\n"
        + "".join(f"- split `{n}`: {e['rows']:,} rows, `{e['content_sha256'][:16]}`\n" for n, e in m["splits"].items() if not n.startswith("_"))
        + f"- vocabulary: {m['vocabulary']['size']:,} tokens, `{m['vocabulary']['sha256'][:16]}`\n"
        f"- encoder: `{m['model']['encoder_sha256'][:16]}`, best epoch {m['model']['best_epoch']}\n"
        f"- test: ROC-AUC {m['metrics']['test']['roc_auc']:.4f}, accuracy {m['metrics']['test']['accuracy']:.4f} "
        f"at threshold {m['threshold']['value']:.4f} (chosen on calibration)\n"
        f"- code: qdup {m['code']['version']} commit `{m['code']['git_commit']}` dirty={m['code']['git_dirty']}\n",
        f"lineage of {version}",
    )
    return {"version": version, "store": store.url, "published": True, "promoted": promoted, "reason": why}
