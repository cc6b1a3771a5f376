"""Prefect task around `qdup.stages.pretrain.build_pretrain` (resumable work folder, like training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from qdup.config import RetrainConfig
from qdup.runtime import import_tensorflow_quietly
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage, stage_dir, stage_key
from tasks.common import TASK_OPTIONS, run_log


def pretrain_inputs(splits_key: str, vocab_key: str, cfg: RetrainConfig) -> dict[str, Any]:
    """What the pretrain stage's key hashes."""
    return {
        "splits": splits_key,
        "vocab": vocab_key,
        "model": params(cfg.model),
        "pretrain": params(cfg.pretrain),
        "seed": cfg.seed,
        "code": code_fingerprint("qdup.stages.pretrain", "tasks.pretrain"),
    }


@task(name="pretrain", **TASK_OPTIONS)
def pretrain_task(splits: StageResult, vocab: StageResult, cfg: RetrainConfig) -> StageResult:
    """SimCSE-style pre-training of the encoder on the train region's distinct questions."""
    log = run_log()
    inputs = pretrain_inputs(splits.key, vocab.key, cfg)
    work = stage_dir("pretrain", stage_key("pretrain", inputs)).with_suffix(".work")

    def build(out: Path) -> dict:
        import_tensorflow_quietly()
        from qdup.stages.pretrain import build_pretrain

        return build_pretrain(splits.path, vocab.file("vocabulary.txt"), cfg.model, cfg.pretrain, cfg.seed, work, out, log=log)

    result = run_stage("pretrain", inputs, build, log)
    m = result.manifest
    log(f"[pretrain] {m['questions']:,} questions, best epoch {m['best_epoch']} of {m['epochs_run']}")
    return result
