"""Stage `train`: the Siamese encoder trained with triplet loss; resumable from its work folder."""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qdup.childproc import call_in_child
from qdup.config import ModelConfig, TrainConfig, ValidateConfig
from qdup.data.silver import read_checked_silver
from qdup.data.splits import read_split
from qdup.errors import QdupError
from qdup.fileio import sha256_file
from qdup.log import LogFn, stderr_log

ENCODER_FILE = "encoder.keras"
NEGATIVES_FILE = "negatives.parquet"


def build_train(
    splits_dir: Path,
    vocab_file: Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
    work_dir: Path,
    out_dir: Path,
    on_epoch_end: Callable[[int, int, dict[str, float]], None] | None = None,
    log: LogFn = stderr_log,
    init_encoder: Path | None = None,
    silver_file: Path | None = None,
    silver_suite: str = ValidateConfig.model_fields["silver_suite"].default,
) -> dict[str, Any]:
    """Train on `splits_dir`'s train/val splits (from `init_encoder`'s weights when given, the pretrain stage's; with
    `silver_file`'s search negatives when train.search_negatives > 0, the silver stage's split, checked against
    `silver_suite` first); checkpoints go to `work_dir`
    (kept on a crash, removed after)."""
    # Imported here: TensorFlow loads only where training runs (the child process of `build_train_in_child`).
    from qdup.model import train, vocab

    vectorizer = vocab.load_vectorizer(vocab_file)
    negatives = None
    if train_cfg.hard_negatives > 0:
        path = splits_dir / NEGATIVES_FILE
        if not path.is_file():
            raise QdupError(f"train.hard_negatives={train_cfg.hard_negatives} needs the negatives split, but {path} is missing")
        negatives = read_split(path)
    silver = None
    if train_cfg.uses_silver:
        if silver_file is None or not Path(silver_file).is_file():
            raise QdupError(f"train.search_negatives={train_cfg.search_negatives} / train.silver_positive_score="
                            f"{train_cfg.silver_positive_score} need the silver stage's split, but "
                            f"{silver_file or 'none'} was given; run the silver stage (qdup run builds it)")
        silver = read_checked_silver(Path(silver_file), silver_suite)
    result = train.train_model(
        read_split(splits_dir / "train.parquet"), read_split(splits_dir / "val.parquet"), vectorizer,
        model_cfg, train_cfg, seed, work_dir, on_epoch_end=on_epoch_end, log=log, negatives_df=negatives,
        init_encoder=init_encoder, silver_df=silver,
    )
    shutil.copyfile(result.encoder_path, out_dir / ENCODER_FILE)
    shutil.copytree(result.tensorboard_dir, out_dir / "tensorboard")
    manifest = {
        "encoder": ENCODER_FILE,
        "encoder_sha256": sha256_file(out_dir / ENCODER_FILE),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": result.epochs_run,
        "resumed_from_epoch": result.resumed_from_epoch,
        "stopped_early": result.stopped_early,
        "steps_per_epoch": result.steps_per_epoch,
        "facts": result.facts,
    }
    shutil.rmtree(work_dir, ignore_errors=True)
    return manifest


def _build_train_child(log: LogFn, emit: Callable[..., None], **kwargs: Any) -> dict[str, Any]:
    from qdup.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    return build_train(**kwargs, log=log, on_epoch_end=emit)


def build_train_in_child(
    *args: Any,
    on_epoch_end: Callable[[int, int, dict[str, float]], None] | None = None,
    log: LogFn = stderr_log,
    **kwargs: Any,
) -> dict[str, Any]:
    """`build_train(*args, **kwargs)` in a child process (`qdup.childproc`): the same files and manifest, and
    TensorFlow's native memory of training (gigabytes, which it never hands back) leaves with the child. Log lines and
    `on_epoch_end` calls reach this process as each epoch ends; the child's failure is raised here; its checkpoints in
    `work_dir` let a rerun resume."""
    arguments = inspect.signature(build_train).bind(*args, **kwargs).arguments  # by name, checked as a call is
    return call_in_child(_build_train_child, dict(arguments), log=log, on_event=on_epoch_end, what="training process")
