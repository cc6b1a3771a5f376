"""Prefect task around `qdup.stages.index.build_question_index`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from qdup.config import RetrainConfig
from qdup.runtime import import_tensorflow_quietly
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks.common import TASK_OPTIONS, run_log


def index_inputs(validate_key: str, export_key: str, retrieval_key: str, cfg: RetrainConfig) -> dict[str, Any]:
    """What the index stage's key hashes."""
    return {
        "validate": validate_key,
        "export": export_key,
        "retrieval": retrieval_key,
        "seed": cfg.seed,
        "search": params(cfg.search),
        "code": code_fingerprint("qdup.stages.index", "tasks.index"),
    }


@task(name="index", **TASK_OPTIONS)
def index_task(
    fetch: StageResult, validate: StageResult, export: StageResult, retrieval: StageResult, cfg: RetrainConfig
) -> StageResult:
    """The index of the data set's distinct questions under the exported encoder, published with the version."""
    log = run_log()
    inputs = index_inputs(validate.key, export.key, retrieval.key, cfg)

    def build(out: Path) -> dict:
        import_tensorflow_quietly()
        from qdup.stages.index import build_question_index
        from qdup.stages.validate import VALIDATED_FILE

        return build_question_index(validate.file(VALIDATED_FILE), export.file("model"), retrieval.manifest, cfg.search,
                                    cfg.seed, fetch.manifest["sha256"], out)

    result = run_stage("index", inputs, build, log)
    log(f"[index] {result.manifest['count']:,} questions ({result.manifest['backend']}); "
        f"search ranks by {result.manifest['search_defaults']['method']} by default")
    return result
