"""Stage `vocab`: TextVectorization adapted on the train split's questions only; OOV rates of val and test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdup.config import VocabConfig
from qdup.data.splits import read_split
from qdup.fileio import sha256_file
from qdup.model import vocab

VOCAB_FILE = "vocabulary.txt"


def _questions(splits_dir: Path, name: str) -> list[str]:
    part = read_split(splits_dir / f"{name}.parquet")
    return list(part["question1"]) + list(part["question2"])


def build_vocab(splits_dir: Path, cfg: VocabConfig, out_dir: Path) -> dict[str, Any]:
    """Fit the vocabulary on `splits_dir/train.parquet`; write `out_dir/vocabulary.txt`."""
    vectorizer = vocab.fit_vectorizer(_questions(splits_dir, "train"), cfg)
    size = vocab.write_vocabulary(vectorizer, out_dir / VOCAB_FILE)
    oov = {name: round(vocab.oov_rate(vectorizer, _questions(splits_dir, name)), 6) for name in ("val", "test")}
    return {"file": VOCAB_FILE, "size": size, "sha256": sha256_file(out_dir / VOCAB_FILE), "oov_rate": oov}
