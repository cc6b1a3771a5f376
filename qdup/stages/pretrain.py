"""Stage `pretrain`: self-supervised (SimCSE-style) pre-training of the encoder on the train region's distinct questions."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qdup.config import ModelConfig, PretrainConfig, TrainConfig
from qdup.data.splits import read_split
from qdup.errors import QdupError
from qdup.fileio import sha256_file
from qdup.log import LogFn, stderr_log
from qdup.model import train, vocab

ENCODER_FILE = "encoder.keras"
# The splits whose questions are pre-trained on: the train region only (never val, calibration or test text).
SOURCE_SPLITS = ("train", "negatives")


def pretraining_questions(splits_dir: Path, cfg: PretrainConfig, seed: int) -> pd.DataFrame:
    """Each distinct question of the train region paired with itself (question1 == question2, a positive of itself)."""
    frames = [read_split(splits_dir / f"{name}.parquet") for name in SOURCE_SPLITS if (splits_dir / f"{name}.parquet").is_file()]
    questions = pd.unique(pd.concat([q for f in frames for q in (f["question1"], f["question2"])], ignore_index=True))
    if len(questions) < 2:
        raise QdupError(f"{splits_dir}: {len(questions)} distinct question(s) in {', '.join(SOURCE_SPLITS)}; pretraining needs at least 2")
    if len(questions) > cfg.max_questions:
        questions = questions[np.sort(np.random.default_rng([seed, 0x5C5E]).choice(len(questions), cfg.max_questions, replace=False))]
    return pd.DataFrame({"question1": questions, "question2": questions, "is_duplicate": np.int8(1)})


def build_pretrain(
    splits_dir: Path, vocab_file: Path, model_cfg: ModelConfig, cfg: PretrainConfig, seed: int, work_dir: Path, out_dir: Path,
    log: LogFn = stderr_log,
) -> dict[str, Any]:
    """Pre-train an encoder: two dropout views of each question are positives, the batch's other questions negatives."""
    vectorizer = vocab.load_vectorizer(vocab_file)
    questions = pretraining_questions(splits_dir, cfg, seed)
    train_cfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, loss="softmax", scale=cfg.scale,
        early_stopping_patience=cfg.early_stopping_patience, lr_schedule="constant",
    )
    log(f"[pretrain] {len(questions):,} distinct questions of {', '.join(SOURCE_SPLITS)}; early stopping on the val duplicates")
    result = train.train_model(questions, read_split(splits_dir / "val.parquet"), vectorizer, model_cfg, train_cfg, seed, work_dir,
                               log=log)
    shutil.copyfile(result.encoder_path, out_dir / ENCODER_FILE)
    manifest = {
        "encoder": ENCODER_FILE, "encoder_sha256": sha256_file(out_dir / ENCODER_FILE), "questions": len(questions),
        "source_splits": list(SOURCE_SPLITS), "history": result.history, "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
    }
    shutil.rmtree(work_dir, ignore_errors=True)
    return manifest
