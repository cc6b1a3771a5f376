"""Prefect tasks: the I/O edge of each stage (stage cache, files, artifacts) around plain functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from qdup.config import RetrainConfig
from qdup.errors import DataContractError
from qdup.fileio import sha256_file
from qdup.log import get_log
from qdup.paths import cache_dir
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks import contracts, fetch, splits

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
