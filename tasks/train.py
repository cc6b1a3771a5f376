"""Prefect task around `qdup.stages.train.build_train` (progress artifact, resumable work folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from qdup.config import RetrainConfig
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage, stage_dir, stage_key
from tasks.common import TASK_OPTIONS, run_log

# Training options that do nothing while training reads no silver split: left out of the key then, so that a run
# without search negatives or silver pairs keeps the key it had before they existed.
SILVER_FIELDS = ("search_negatives", "search_negatives_depth", "silver_positive_score", "silver_negative_score")


def train_inputs(splits_key: str, vocab_key: str, cfg: RetrainConfig, pretrain_key: str | None = None,
                 silver_key: str | None = None) -> dict[str, Any]:
    """What the train stage's key hashes (the pretrain stage's key when training starts from its encoder, the silver
    stage's when search negatives join the batches)."""
    train_params = params(cfg.train)
    if not cfg.train.uses_silver:
        train_params = {k: v for k, v in train_params.items() if k not in SILVER_FIELDS}
    return {
        "splits": splits_key,
        "vocab": vocab_key,
        **({"pretrain": pretrain_key} if pretrain_key else {}),
        **({"silver": silver_key} if silver_key else {}),
        "model": params(cfg.model),
        "train_params": train_params,
        "seed": cfg.seed,
        "code": code_fingerprint("qdup.stages.train", "tasks.train"),
    }


@task(name="train", **TASK_OPTIONS)
def train_task(splits: StageResult, vocab: StageResult, cfg: RetrainConfig, pretrain: StageResult | None = None,
               silver: StageResult | None = None) -> StageResult:
    """Train the Siamese encoder; checkpoints live beside the stage folder so a killed run resumes."""
    log = run_log()
    inputs = train_inputs(splits.key, vocab.key, cfg, pretrain.key if pretrain else None, silver.key if silver else None)
    # A stable work folder beside the stage folder (not inside its temporary one), named by
    # the stage key, so that checkpoints survive a crash and the retry of this stage finds them.
    work = stage_dir("train", stage_key("train", inputs)).with_suffix(".work")

    def build(out: Path) -> dict:
        from qdup.stages.train import build_train_in_child

        progress_id = create_progress_artifact(progress=0.0, key="qdup-training", description="training epochs")

        def on_epoch_end(epoch: int, total: int, logs: dict[str, float]) -> None:
            update_progress_artifact(artifact_id=progress_id, progress=100.0 * epoch / total)

        # In a child process: TensorFlow's memory of training leaves with it (qdup.stages.train).
        manifest = build_train_in_child(
            splits.path, vocab.file("vocabulary.txt"), cfg.model, cfg.train, cfg.seed, work, out,
            on_epoch_end=on_epoch_end, log=log, init_encoder=pretrain.file("encoder.keras") if pretrain else None,
            silver_file=silver.file(silver.manifest["silver"]["file"]) if silver else None,
            **({"silver_suite": silver.manifest["silver"]["suite"]} if silver else {}),
        )
        update_progress_artifact(artifact_id=progress_id, progress=100.0)
        return manifest

    result = run_stage("train", inputs, build, log)
    m = result.manifest
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in m["history"]]
    create_table_artifact(key="qdup-training-history", table=rows, description=f"best epoch {m['best_epoch']}")
    return result
