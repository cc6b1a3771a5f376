"""Prefect task around `qdup.registry.publish.publish_version` (I/O retries, version and lineage artifacts)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact

from qdup.config import RetrainConfig
from qdup.log import WARNING_MARK
from qdup.registry.publish import CARD_FILE, publish_version
from qdup.registry.store import ArtifactStore, StoreUnavailable, actor
from qdup.stagecache import StageResult
from tasks.common import TASK_OPTIONS, artifact, flow_run_info, run_log


def retry_on_io(task, task_run, state) -> bool:
    """Retry publishing only for transient failures (I/O, store or registry unreachable or busy), never for a refused (invalid) publish."""
    try:
        state.result()
    except (OSError, StoreUnavailable):
        return True
    except Exception:
        return False
    return False


def profile_files(stages: dict[str, StageResult], out_dir: Path) -> dict[str, Path]:
    """This version's data profile (validated data under its own vocabulary), written to `out_dir`, under version names."""
    from qdup.data.profile import VERSION_PROFILE_DIR
    from qdup.stages.drift import build_profile
    from qdup.stages.validate import VALIDATED_FILE

    build_profile(stages["validate"].file(VALIDATED_FILE), stages["vocab"].file("vocabulary.txt"), out_dir)
    return {f"{VERSION_PROFILE_DIR}/{p.name}": p for p in sorted(Path(out_dir).iterdir())}


def lineage_markdown(m: dict[str, Any], promoted: bool, why: str) -> str:
    return (
        f"# Version `{m['id']}`\n\n"
        f"- production moved: **{promoted}** ({why})\n"
        f"- source: `{m['dataset']['source']}`\n- dataset sha256: `{m['dataset']['sha256']}`\n"
        f"- data contract: `{m['validation']['suite']}` passed on {m['validation']['rows']:,} rows\n"
        + "".join(f"- split `{n}`: {e['rows']:,} rows, `{e['content_sha256'][:16]}`\n" for n, e in m["splits"].items() if not n.startswith("_"))
        + f"- vocabulary: {m['vocabulary']['size']:,} tokens, `{m['vocabulary']['sha256'][:16]}`\n"
        f"- encoder: `{m['model']['encoder_sha256'][:16]}`, best epoch {m['model']['best_epoch']}\n"
        f"- test: ROC-AUC {m['metrics']['test']['roc_auc']:.4f}, accuracy {m['metrics']['test']['accuracy']:.4f} "
        f"at threshold {m['threshold']['value']:.4f} (chosen on calibration)\n"
        f"- code: qdup {m['code']['version']} commit `{m['code']['git_commit']}` dirty={m['code']['git_dirty']}\n"
    )


@task(name="publish", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_on_io, **TASK_OPTIONS)
def publish_task(stages: dict[str, StageResult], cfg: RetrainConfig, version: str) -> dict[str, Any]:
    """Publish the exact outputs handed in as `version`; move `latest`, and `production` if it passes the gate."""
    store = ArtifactStore(cfg.publish.store_url, registry_url=cfg.publish.registry_url)
    info = flow_run_info()
    log = run_log()
    with tempfile.TemporaryDirectory(prefix="qdup-profile-") as tmp:
        outcome = publish_version(
            store, cfg, stages, version, run_info=info, actor=f"{actor()} via flow run {info.get('flow_run_name')}", log=log,
            extra_files=profile_files(stages, Path(tmp) / "profile"),
        )
    if outcome.published and not outcome.promoted:  # refused by the gate (or promotion off): the reason stays on the terminal
        log(f"[publish] {WARNING_MARK}production not moved to {outcome.version}: {outcome.reason}")
    if outcome.published:
        link = f"{store.url.rstrip('/')}/versions/{version}" if "://" in store.url else f"file://{store.local_path(version)}"
        create_link_artifact(key="qdup-version", link=link, link_text=f"qdup version {version}", description="the version this run published")
        artifact("qdup-lineage", lineage_markdown(store.manifest(version), outcome.promoted, outcome.reason), f"lineage of {version}")
        artifact("qdup-model-card", (store.open_version(version) / CARD_FILE).read_text(), f"model card of {version}")
    return outcome.as_dict()
