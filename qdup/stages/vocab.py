"""Stage `vocab`: TextVectorization adapted on the train split's questions only; OOV rates of val and test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qdup.childproc import call_in_child
from qdup.config import VocabConfig
from qdup.data.splits import read_split
from qdup.fileio import sha256_file
from qdup.log import LogFn, stderr_log

VOCAB_FILE = "vocabulary.txt"


def _questions(splits_dir: Path, name: str) -> list[str]:
    part = read_split(splits_dir / f"{name}.parquet")
    return list(part["question1"]) + list(part["question2"])


def build_vocab(splits_dir: Path, cfg: VocabConfig, out_dir: Path) -> dict[str, Any]:
    """Fit the vocabulary on `splits_dir/train.parquet`; write `out_dir/vocabulary.txt`."""
    # Imported here: TensorFlow loads only where the vocabulary is fitted (the child process of `build_vocab_in_child`).
    from qdup.model import vocab

    vectorizer = vocab.fit_vectorizer(_questions(splits_dir, "train"), cfg)
    size = vocab.write_vocabulary(vectorizer, out_dir / VOCAB_FILE)
    oov = {name: round(vocab.oov_rate(vectorizer, _questions(splits_dir, name)), 6) for name in ("val", "test")}
    return {"file": VOCAB_FILE, "size": size, "sha256": sha256_file(out_dir / VOCAB_FILE), "oov_rate": oov}


def _build_vocab_child(log: LogFn, emit: Callable[..., None], **kwargs: Any) -> dict[str, Any]:
    from qdup.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    return build_vocab(**kwargs)


def build_vocab_in_child(splits_dir: Path, cfg: VocabConfig, out_dir: Path, log: LogFn = stderr_log) -> dict[str, Any]:
    """`build_vocab` in a child process (`qdup.childproc`): the same file and manifest, and the flow's process has not
    loaded TensorFlow (most of a training process's memory) while the training process, which loads its own, runs beside it."""
    return call_in_child(_build_vocab_child, dict(splits_dir=splits_dir, cfg=cfg, out_dir=out_dir), log=log,
                         what="vocabulary process")
