"""Drift of a new dataset against the production version's data, as a Great Expectations suite built from a profile.

A new dataset is compared with production's profile (`qdup.data.profile`) by adding derived
per-pair columns (`drift_frame`) and validating them with a suite whose bounds come from that
profile (`drift_suite`), through the same machinery as the data contracts, so the drift report
is a GE result with the same markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from qdup.config import DriftTolerances
from qdup.data.contracts import ContractReport, ContractViolation, validate_frame_with_suite
from qdup.data.profile import (
    DatasetProfile,
    duplicate_labels,
    pair_hashes,
    pair_oov_share,
    question_stats,
    settings,
    vocabulary_sha256,
    vocabulary_words,
)
from qdup.errors import QdupError
from qdup.fileio import atomic_write_json, atomic_write_text

NO_PRODUCTION = "no production: profile recorded"

DriftMode = Literal["warn", "block", "off"]


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
        vocab = vocabulary_words(vocabulary_tokens)
    y = duplicate_labels(df)
    q = question_stats(df, vocab)
    cap = int(summary["length_tokens"]["cap"])
    seen = np.isin(q.hashes, production.question_hashes)
    unseen = (2 - seen[q.code1].astype(np.int64) - seen[q.code2].astype(np.int64)) / 2.0
    flipped_rows = np.stack([pair_hashes(q), (1 - y).astype(np.uint64)], axis=1)
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
        out["oov_share"] = pair_oov_share(q)
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
