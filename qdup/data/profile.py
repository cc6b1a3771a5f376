"""A dataset's profile: the summary and question hashes a version keeps as the next run's drift reference.

Every version keeps a profile of its dataset (`profile_dataset`, `write_profile`): duplicate share,
question lengths, the OOV share under its own vocabulary, and compact hashes of its questions and
of its (pair, label) rows. `qdup.data.drift` compares a new dataset with production's profile.

Questions are compared in the vocabulary's standardisation (ASCII lower case, ASCII punctuation
stripped, split on ASCII whitespace: Keras's "lower_and_strip_punctuation" and "whitespace"),
re-implemented here so that a drift check needs no TensorFlow. A question's hash is the first 8
bytes of blake2b over its standardised tokens joined by one space; a pair's hash is blake2b over
its two question hashes in increasing order, so a pair is the same pair with its columns swapped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qdup.data.questions import hash64 as _hash64
from qdup.errors import QdupError
from qdup.fileio import atomic_write_bytes, atomic_write_json, read_json
from qdup.text import standardize

PROFILE_VERSION = 1
PROFILE_FILE = "profile.json"
# The folder of a published version that holds its profile (the next run's drift reference).
VERSION_PROFILE_DIR = "profile"
QUESTION_HASHES_FILE = "question_hashes.npy"
PAIR_LABELS_FILE = "pair_labels.npy"
HASH_DESCRIPTION = "blake2b, 8 bytes little-endian, of the standardised question (tokens joined by one space)"


@lru_cache(maxsize=1)
def settings() -> dict[str, Any]:
    """Drift defaults that are data (quantiles, length cap, KL tail holdout): qdup/resources/drift.json."""
    with resources.files("qdup").joinpath("resources", "drift.json").open(encoding="utf-8") as f:
        return json.load(f)


@dataclass(frozen=True)
class QuestionStats:
    """Per distinct question text: token count, char count, hash, OOV token count; and each pair's codes."""

    code1: np.ndarray
    code2: np.ndarray
    tokens: np.ndarray
    chars: np.ndarray
    hashes: np.ndarray
    oov: np.ndarray | None


def _texts(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        raise QdupError(f"drift: the dataset has no {col!r} column (columns: {list(df.columns)})")
    # A missing question (the contract allows a handful) counts as an empty one.
    return df[col].fillna("").astype(str)


def question_stats(df: pd.DataFrame, vocabulary: set[str] | None) -> QuestionStats:
    both = pd.concat([_texts(df, "question1"), _texts(df, "question2")], ignore_index=True)
    codes, uniques = pd.factorize(both, sort=False)
    n = len(df)
    k = len(uniques)
    tokens = np.zeros(k, dtype=np.int64)
    chars = np.zeros(k, dtype=np.int64)
    hashes = np.zeros(k, dtype=np.uint64)
    oov = np.zeros(k, dtype=np.int64) if vocabulary is not None else None
    for i, text in enumerate(uniques.tolist()):
        toks = standardize(text)
        tokens[i] = len(toks)
        chars[i] = len(text)
        hashes[i] = _hash64(" ".join(toks).encode("utf-8"))
        if oov is not None:
            oov[i] = sum(1 for t in toks if t not in vocabulary)
    return QuestionStats(codes[:n], codes[n:], tokens, chars, hashes, oov)


def pair_hashes(q: QuestionStats) -> np.ndarray:
    h1, h2 = q.hashes[q.code1], q.hashes[q.code2]
    lo, hi = np.minimum(h1, h2), np.maximum(h1, h2)
    return np.fromiter(
        (_hash64(int(a).to_bytes(8, "little") + int(b).to_bytes(8, "little")) for a, b in zip(lo, hi, strict=True)),
        dtype=np.uint64,
        count=len(lo),
    )


def duplicate_labels(df: pd.DataFrame) -> np.ndarray:
    if "is_duplicate" not in df.columns:
        raise QdupError(f"drift: the dataset has no 'is_duplicate' column (columns: {list(df.columns)})")
    y = df["is_duplicate"].to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise QdupError("drift: is_duplicate must be 0 or 1 in every row (validate the data first)")
    return y.astype(np.int64)


def vocabulary_words(vocabulary_tokens: list[str] | None) -> set[str] | None:
    if vocabulary_tokens is None:
        return None
    # The padding ("") and OOV ("[UNK]") entries are not words.
    return set(vocabulary_tokens[2:]) if vocabulary_tokens[:2] == ["", "[UNK]"] else set(vocabulary_tokens)


def vocabulary_sha256(vocabulary_tokens: list[str]) -> str:
    """sha256 of the vocabulary file's content (one token a line, as `qdup.model.vocab.write_vocabulary` writes it)."""
    return hashlib.sha256(("\n".join(vocabulary_tokens) + "\n").encode("utf-8")).hexdigest()


def pair_oov_share(q: QuestionStats) -> np.ndarray:
    assert q.oov is not None
    toks = q.tokens[q.code1] + q.tokens[q.code2]
    oov = q.oov[q.code1] + q.oov[q.code2]
    return np.divide(oov, toks, out=np.zeros(len(toks), dtype=np.float64), where=toks > 0)


@dataclass(frozen=True)
class DatasetProfile:
    """A dataset's profile: a JSON-able summary and two hash arrays, written as three files."""

    summary: dict[str, Any]
    question_hashes: np.ndarray  # distinct question hashes, sorted uint64
    pair_labels: np.ndarray  # distinct (pair hash, label) rows, sorted, uint64 (m, 2)

    def as_dict(self) -> dict[str, Any]:
        return self.summary


def _quantiles(values: np.ndarray) -> dict[str, float]:
    qs = settings()["length_quantiles"]
    return {f"{q:g}": float(v) for q, v in zip(qs, np.quantile(values, qs), strict=True)}


def profile_dataset(df: pd.DataFrame, vocabulary_tokens: list[str] | None = None) -> DatasetProfile:
    """The profile of a validated dataset (every row); with the version's vocabulary, also its OOV share."""
    if len(df) == 0:
        raise QdupError("drift: cannot profile an empty dataset")
    y = duplicate_labels(df)
    vocab = vocabulary_words(vocabulary_tokens)
    q = question_stats(df, vocab)
    cap = int(settings()["length_cap_tokens"])
    lengths = np.concatenate([q.tokens[q.code1], q.tokens[q.code2]])
    chars = np.concatenate([q.chars[q.code1], q.chars[q.code2]])
    values, counts = np.unique(np.minimum(lengths, cap), return_counts=True)
    pairs = np.unique(np.stack([pair_hashes(q), y.astype(np.uint64)], axis=1), axis=0)
    conflicting = int(len(pairs) - len(np.unique(pairs[:, 0])))
    summary: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "rows": len(df),
        "duplicate_share": float(y.mean()),
        "questions": {
            "occurrences": len(lengths),
            "distinct": len(np.unique(q.hashes)),
            "hash": HASH_DESCRIPTION,
            "file": QUESTION_HASHES_FILE,
        },
        "pairs": {"distinct": len(np.unique(pairs[:, 0])), "with_both_labels": conflicting, "file": PAIR_LABELS_FILE},
        "length_tokens": {
            "mean": float(lengths.mean()),
            "quantiles": _quantiles(lengths),
            "cap": cap,
            # Categorical histogram of min(length, cap) over every question occurrence.
            "histogram": {"values": values.astype(int).tolist(), "weights": (counts / counts.sum()).tolist()},
        },
        "length_chars": {"mean": float(chars.mean()), "quantiles": _quantiles(chars)},
        "vocabulary": None,
        "oov_share": None,
    }
    if vocabulary_tokens is not None:
        summary["vocabulary"] = {"sha256": vocabulary_sha256(vocabulary_tokens), "size": len(vocabulary_tokens)}
        summary["oov_share"] = float(pair_oov_share(q).mean())
    return DatasetProfile(summary, np.unique(q.hashes), pairs)


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def write_profile(profile: DatasetProfile, out_dir: Path) -> list[Path]:
    """Write profile.json and the two .npy files it names (each atomically); return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / QUESTION_HASHES_FILE, out_dir / PAIR_LABELS_FILE, out_dir / PROFILE_FILE]
    atomic_write_bytes(paths[0], _npy_bytes(profile.question_hashes))
    atomic_write_bytes(paths[1], _npy_bytes(profile.pair_labels))
    # The summary last: it names the arrays, so a reader never finds it without them.
    atomic_write_json(paths[2], profile.summary)
    return paths


def read_profile(directory: Path) -> DatasetProfile:
    """A profile written by `write_profile`."""
    directory = Path(directory)
    path = directory / PROFILE_FILE
    if not path.is_file():
        raise QdupError(f"{path}: no drift profile here")
    summary = read_json(path)
    if summary.get("profile_version") != PROFILE_VERSION:
        raise QdupError(f"{path}: profile_version {summary.get('profile_version')!r}, expected {PROFILE_VERSION}")
    arrays = []
    for key in ("questions", "pairs"):
        p = directory / summary[key]["file"]
        try:
            arrays.append(np.load(p, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise QdupError(f"{p}: cannot read the profile's {key} hashes: {exc}") from exc
    q, pl = arrays
    if q.dtype != np.uint64 or q.ndim != 1 or pl.dtype != np.uint64 or pl.ndim != 2 or pl.shape[1] != 2:
        raise QdupError(f"{directory}: profile hash files have unexpected shapes {q.shape}/{pl.shape} or types")
    return DatasetProfile(summary, q, pl)
