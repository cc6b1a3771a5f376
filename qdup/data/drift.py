"""Drift of a new dataset against the production version's data, as a Great Expectations suite built from a profile.

Every version keeps a profile of its dataset (`profile_dataset`, `write_profile`): duplicate share,
question lengths, the OOV share under its own vocabulary, and compact hashes of its questions and
of its (pair, label) rows. A new dataset is compared with production's profile by adding derived
per-pair columns (`drift_frame`) and validating them with a suite whose bounds come from that
profile (`drift_suite`), through the same machinery as the data contracts, so the drift report
is a GE result with the same markdown.

Questions are compared in the vocabulary's standardisation (ASCII lower case, ASCII punctuation
stripped, split on ASCII whitespace: Keras's "lower_and_strip_punctuation" and "whitespace"),
re-implemented here so that a drift check needs no TensorFlow. A question's hash is the first 8
bytes of blake2b over its standardised tokens joined by one space; a pair's hash is blake2b over
its two question hashes in increasing order, so a pair is the same pair with its columns swapped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from qdup.config import DriftTolerances
from qdup.data.contracts import ContractReport, ContractViolation, validate_frame_with_suite
from qdup.data.questions import hash64 as _hash64
from qdup.errors import QdupError
from qdup.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from qdup.text import standardize

PROFILE_VERSION = 1
PROFILE_FILE = "profile.json"
# The folder of a published version that holds its profile (the next run's drift reference).
VERSION_PROFILE_DIR = "profile"
QUESTION_HASHES_FILE = "question_hashes.npy"
PAIR_LABELS_FILE = "pair_labels.npy"
HASH_DESCRIPTION = "blake2b, 8 bytes little-endian, of the standardised question (tokens joined by one space)"
NO_PRODUCTION = "no production: profile recorded"

DriftMode = Literal["warn", "block", "off"]


@lru_cache(maxsize=1)
def settings() -> dict[str, Any]:
    """Drift defaults that are data (quantiles, length cap, KL tail holdout): qdup/resources/drift.json."""
    with resources.files("qdup").joinpath("resources", "drift.json").open(encoding="utf-8") as f:
        return json.load(f)


@dataclass(frozen=True)
class _Questions:
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


def _questions(df: pd.DataFrame, vocabulary: set[str] | None) -> _Questions:
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
    return _Questions(codes[:n], codes[n:], tokens, chars, hashes, oov)


def _pair_hashes(q: _Questions) -> np.ndarray:
    h1, h2 = q.hashes[q.code1], q.hashes[q.code2]
    lo, hi = np.minimum(h1, h2), np.maximum(h1, h2)
    return np.fromiter(
        (_hash64(int(a).to_bytes(8, "little") + int(b).to_bytes(8, "little")) for a, b in zip(lo, hi, strict=True)),
        dtype=np.uint64,
        count=len(lo),
    )


def _labels(df: pd.DataFrame) -> np.ndarray:
    if "is_duplicate" not in df.columns:
        raise QdupError(f"drift: the dataset has no 'is_duplicate' column (columns: {list(df.columns)})")
    y = df["is_duplicate"].to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise QdupError("drift: is_duplicate must be 0 or 1 in every row (validate the data first)")
    return y.astype(np.int64)


def _vocab_set(vocabulary_tokens: list[str] | None) -> set[str] | None:
    if vocabulary_tokens is None:
        return None
    # The padding ("") and OOV ("[UNK]") entries are not words.
    return set(vocabulary_tokens[2:]) if vocabulary_tokens[:2] == ["", "[UNK]"] else set(vocabulary_tokens)


def vocabulary_sha256(vocabulary_tokens: list[str]) -> str:
    """sha256 of the vocabulary file's content (one token a line, as `qdup.model.vocab.write_vocabulary` writes it)."""
    return hashlib.sha256(("\n".join(vocabulary_tokens) + "\n").encode("utf-8")).hexdigest()


def _pair_oov_share(q: _Questions) -> np.ndarray:
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
    y = _labels(df)
    vocab = _vocab_set(vocabulary_tokens)
    q = _questions(df, vocab)
    cap = int(settings()["length_cap_tokens"])
    lengths = np.concatenate([q.tokens[q.code1], q.tokens[q.code2]])
    chars = np.concatenate([q.chars[q.code1], q.chars[q.code2]])
    values, counts = np.unique(np.minimum(lengths, cap), return_counts=True)
    pairs = np.unique(np.stack([_pair_hashes(q), y.astype(np.uint64)], axis=1), axis=0)
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
        summary["oov_share"] = float(_pair_oov_share(q).mean())
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


# ---------------------------------------------------------------- the suite and the derived frame


def drift_frame(df: pd.DataFrame, production: DatasetProfile, vocabulary_tokens: list[str] | None = None) -> pd.DataFrame:
    """One row per pair of `df` (same index) with the columns the drift suite checks.

    - is_duplicate: the label;
    - q1_tokens, q2_tokens: question length in tokens, capped at the profile's cap;
    - oov_share: share of the pair's tokens outside production's vocabulary (0 for a pair with none);
      absent without a vocabulary;
    - unseen_share: 0, 0.5 or 1, the share of the pair's two questions production never saw;
    - label_flip: 1 when production holds the same pair (either column order) with the other label.
    """
    summary = production.summary
    vocab = None
    if vocabulary_tokens is not None:
        expected = (summary.get("vocabulary") or {}).get("sha256")
        got = vocabulary_sha256(vocabulary_tokens)
        if expected is not None and expected != got:
            raise QdupError(f"drift: the vocabulary given (sha256 {got[:12]}) is not the profile's ({expected[:12]})")
        vocab = _vocab_set(vocabulary_tokens)
    y = _labels(df)
    q = _questions(df, vocab)
    cap = int(summary["length_tokens"]["cap"])
    seen = np.isin(q.hashes, production.question_hashes)
    unseen = (2 - seen[q.code1].astype(np.int64) - seen[q.code2].astype(np.int64)) / 2.0
    flipped_rows = np.stack([_pair_hashes(q), (1 - y).astype(np.uint64)], axis=1)
    # Row-wise membership of (pair, other label) in production's (pair, label) rows, via a structured view.
    view = np.dtype([("h", np.uint64), ("y", np.uint64)])
    flip = np.isin(
        np.ascontiguousarray(flipped_rows).view(view).ravel(), np.ascontiguousarray(production.pair_labels).view(view).ravel()
    )
    out = pd.DataFrame(
        {
            "id": df["id"].to_numpy() if "id" in df.columns else np.arange(len(df)),
            "is_duplicate": y,
            "q1_tokens": np.minimum(q.tokens[q.code1], cap),
            "q2_tokens": np.minimum(q.tokens[q.code2], cap),
            "unseen_share": unseen,
            "label_flip": flip.astype(np.int64),
        },
        index=df.index,
    )
    if vocab is not None:
        out["oov_share"] = _pair_oov_share(q)
    return out


def _expectation(kind: str, description: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"description": description}}


def drift_suite(production: DatasetProfile | dict[str, Any], tolerances: DriftTolerances, *, with_vocabulary: bool = True) -> dict[str, Any]:
    """The drift suite (data_contracts JSON shape) with bounds from production's profile and `tolerances`."""
    p = production.summary if isinstance(production, DatasetProfile) else production
    t = tolerances
    share = p["duplicate_share"]
    hist = p["length_tokens"]["histogram"]
    median = p["length_tokens"]["quantiles"]["0.5"]
    holdout = float(settings()["kl_tail_weight_holdout"])
    exps = [
        _expectation(
            "expect_column_mean_to_be_between",
            f"duplicate share within {t.duplicate_share} of production's {share:.4f}",
            column="is_duplicate", min_value=max(0.0, share - t.duplicate_share), max_value=min(1.0, share + t.duplicate_share),
        )
    ]
    for col in ("q1_tokens", "q2_tokens"):
        exps.append(_expectation(
            "expect_column_kl_divergence_to_be_less_than",
            f"{col[:2]} length distribution (tokens, capped at {p['length_tokens']['cap']}): KL divergence from production's "
            f"at most {t.length_kl_divergence}",
            column=col, partition_object={"values": hist["values"], "weights": hist["weights"]},
            threshold=t.length_kl_divergence, tail_weight_holdout=holdout,
        ))
        exps.append(_expectation(
            "expect_column_median_to_be_between",
            f"{col[:2]} median length within {t.median_length_tokens} tokens of production's {median:g}",
            column=col, min_value=median - t.median_length_tokens, max_value=median + t.median_length_tokens,
        ))
    if with_vocabulary and p.get("oov_share") is not None:
        exps.append(_expectation(
            "expect_column_mean_to_be_between",
            f"share of tokens outside production's vocabulary at most production's {p['oov_share']:.4f} + {t.oov_share}",
            column="oov_share", min_value=0.0, max_value=min(1.0, p["oov_share"] + t.oov_share),
        ))
    exps.append(_expectation(
        "expect_column_mean_to_be_between",
        f"share of questions production never saw at most {t.unseen_question_share}",
        column="unseen_share", min_value=0.0, max_value=t.unseen_question_share,
    ))
    flip_kwargs: dict[str, Any] = {"column": "label_flip", "value_set": [0]}
    if t.label_flip_share > 0:
        flip_kwargs["mostly"] = 1.0 - t.label_flip_share
    exps.append(_expectation(
        "expect_column_values_to_be_in_set",
        f"pairs production saw with the other label: at most {t.label_flip_share:.4g} of pairs",
        **flip_kwargs,
    ))
    return {
        "name": settings()["suite_name"],
        "meta": {
            "applies_to": "drift_frame(new dataset, production profile)",
            "production_profile": {"rows": p["rows"], "duplicate_share": share, "vocabulary": p.get("vocabulary")},
            "tolerances": t.model_dump(mode="json"),
        },
        "expectations": exps,
    }


# ---------------------------------------------------------------- the check


@dataclass
class DriftReport:
    """The drift check's outcome; `contract` is the GE result (None when nothing was compared)."""

    mode: str
    status: Literal["passed", "drifted", "no production", "off"]
    message: str
    production_version: str | None = None
    contract: ContractReport | None = None
    failing: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> bool:
        return self.status == "drifted" and self.mode == "block"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "status": self.status,
            "blocking": self.blocking,
            "message": self.message,
            "production_version": self.production_version,
            "failing": self.failing,
        }
        if self.contract is not None:
            out["suite"] = self.contract.suite
            out["evaluated"] = self.contract.evaluated
            out["observed"] = {
                f"{r['expectation_config']['type']}:{r['expectation_config']['kwargs'].get('column', '')}": (
                    (r.get("result") or {}).get("observed_value")
                )
                for r in self.contract.result.get("results", [])
            }
        return out

    def markdown(self) -> str:
        head = f"# Drift against production {self.production_version or ''}".rstrip() + f": {self.status} (mode {self.mode})"
        lines = [head, "", self.message, ""]
        if self.contract is not None:
            # The contract's own table, under this heading.
            lines.append(self.contract.markdown().split("\n", 2)[2])
        return "\n".join(lines).rstrip() + "\n"

    def error_message(self, file: str) -> str:
        body = "\n".join(f"  - {f}" for f in self.failing)
        return f"{file}: drift against production {self.production_version} (validate.drift = \"block\"):\n{body}"

    def raise_if_blocking(self, file: str) -> None:
        """Raise `DriftViolation` when drift was found and validate.drift is "block"."""
        if self.blocking:
            raise DriftViolation(self, file)

    def write(self, out_dir: Path, stem: str = "drift") -> tuple[Path, Path]:
        """{stem}.json (the GE result, or the summary when nothing was compared) and {stem}.md."""
        out_dir = Path(out_dir)
        json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        atomic_write_json(json_path, self.contract.result if self.contract is not None else self.as_dict())
        atomic_write_text(md_path, self.markdown())
        return json_path, md_path


class DriftViolation(ContractViolation):
    """Blocking drift: a ContractViolation (so failure handling keeps its GE report) naming the failing expectations."""

    def __init__(self, report: DriftReport, file: str):
        assert report.contract is not None
        super().__init__(report.contract, file, stem="drift")
        self.args = (report.error_message(file),)
        self.drift = report


def check_drift(
    df: pd.DataFrame,
    production: DatasetProfile | None,
    vocabulary_tokens: list[str] | None = None,
    mode: DriftMode = "warn",
    tolerances: DriftTolerances | None = None,
    *,
    production_version: str | None = None,
    data_name: str = "dataset",
    shown: int | None = None,
) -> DriftReport:
    """Compare `df` with production's profile; the report names every failing expectation.

    mode "off" compares nothing; without a production profile the report says so (the caller
    records this dataset's profile with its version). Blocking is the caller's decision to
    raise: see `DriftReport.raise_if_blocking`.
    """
    if mode not in ("warn", "block", "off"):
        raise QdupError(f"validate.drift must be 'warn', 'block' or 'off', got {mode!r}")
    if mode == "off":
        return DriftReport(mode, "off", "drift check off (validate.drift = \"off\")", production_version)
    if production is None:
        return DriftReport(mode, "no production", f"{NO_PRODUCTION}: there is no production version to compare with; "
                           "this dataset's profile is kept with the version", None)
    tolerances = tolerances or DriftTolerances()
    frame = drift_frame(df, production, vocabulary_tokens)
    suite = drift_suite(production, tolerances, with_vocabulary=vocabulary_tokens is not None)
    report = validate_frame_with_suite(
        frame, suite, data_name, raw=frame, shown=int(shown if shown is not None else settings()["failed_rows_shown"])
    )
    failing = [f.line() for f in report.failures]
    if report.success:
        status, message = "passed", f"no drift: all {report.evaluated} drift expectations hold"
    else:
        consequence = "the run is blocked" if mode == "block" else "warning only"
        status = "drifted"
        message = f"drift: {len(failing)} of {report.evaluated} drift expectations failed ({consequence}): " + "; ".join(
            f"{f.expectation} on {f.column!r}" for f in report.failures
        )
    return DriftReport(mode, status, message, production_version, report, failing)
