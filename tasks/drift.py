"""Prefect task around `qdup.stages.drift.build_drift`: the new dataset against the production version's profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from qdup.config import RetrainConfig
from qdup.data.drift import DriftViolation
from qdup.data.profile import VERSION_PROFILE_DIR
from qdup.log import WARNING_MARK
from qdup.registry.store import ArtifactStore
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks.common import TASK_OPTIONS, artifact, fail_with_report, run_log

# The reranker's meta file in an export (qdup.evaluation.reranker.META_FILE), named here rather than imported so that
# the drift stage's key does not follow the reranker's code and libraries.
RERANKER_META = "reranker.json"


def drift_inputs(validate_key: str, production: str | None, cfg: RetrainConfig) -> dict[str, Any]:
    """What the drift stage's key hashes: the validated data, the production version it is compared with, the settings."""
    return {
        "validate": validate_key,
        "production": production,
        "mode": cfg.validate_.drift,
        "tolerances": params(cfg.validate_.drift_tolerances),
        "shown": cfg.validate_.failed_rows_shown,
        "code": code_fingerprint("qdup.stages.drift", "tasks.drift"),
    }


@task(name="drift", **TASK_OPTIONS)
def drift_task(validated: StageResult, cfg: RetrainConfig, production: str | None, run_dir: Path) -> StageResult:
    """Compare with `production` (resolved once by the flow); warn names each failed expectation, block fails the run."""
    from qdup.stages.drift import build_drift
    from qdup.stages.validate import VALIDATED_FILE

    log = run_log()
    inputs = drift_inputs(validated.key, production, cfg)

    def build(out: Path) -> dict:
        profile_dir = vocabulary = reranker_meta = None
        if production is not None and cfg.validate_.drift != "off":
            root = ArtifactStore(cfg.publish.store_url, registry_url=cfg.publish.registry_url).open_version(production)
            profile_dir, vocabulary = root / VERSION_PROFILE_DIR, root / "vocabulary.txt"
            reranker_meta = root / "model" / RERANKER_META
        try:
            return build_drift(validated.file(VALIDATED_FILE), cfg.validate_, out, production, profile_dir, vocabulary,
                               reranker_meta)
        except DriftViolation as error:
            artifact("qdup-drift", error.drift.markdown(), f"BLOCKED: drift against production {production}")
            fail_with_report(error, run_dir)
            raise

    result = run_stage("drift", inputs, build, log)
    m = result.manifest
    # A drifted data set is a warning (shown under the stage line); its failed expectations stay in the run's log.
    log(f"[drift] {WARNING_MARK if m['status'] == 'drifted' else ''}{m['message']}")
    for line in m.get("failing") or []:
        log(f"[drift] failed expectation: {line}")
    for line in (m.get("reranker_fit") or {}).get("warnings") or []:
        log(f"[drift] {WARNING_MARK}against production's reranker: {line}")
    artifact("qdup-drift", result.file("drift.md").read_text(), f"drift: {m['status']} (mode {m['mode']})")
    return result
