"""Configuration of the data stages: fetch, validate (with drift), splits, and the feedback a run trains with."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from qdup.config.base import Section

CANONICAL_URL = "http://qim.fs.quoracdn.net/quora_duplicate_questions.tsv"
# As published by torchtext's QQP loader (404,290 rows).
CANONICAL_MD5 = "b6d5672bd9dc1e66ab2bb020ebeafb8d"

# The splits the splits stage writes (qdup.data.splits.SPLITS), each validated by its own suite.
SPLIT_NAMES: tuple[str, ...] = ("train", "negatives", "val", "test", "calibration", "selection", "gate")
# The split thresholds and the reranker are fitted on (and the baseline-lift check reads); `test` is reported only.
SELECTION_SPLIT = "calibration"
# What chooses among fitted things (the hybrid's form and weight, the default search method, whether the reranker
# serves): pairs no fitted part saw, question-disjoint from train, negatives, val and calibration.
CHOICE_SPLIT = "selection"
# What judges a version against production: pairs no fitted part and no choice saw (question-disjoint from every
# split but test), so that challenger and production are measured on the same unseen rows.
JUDGE_SPLIT = "gate"


class FetchConfig(Section):
    """Where the raw TSV comes from and how it is checked."""

    source: str = CANONICAL_URL
    sha256: str | None = Field(default=None, description="expected sha256 of the file, if known")
    md5: str | None = Field(default=None, description="expected md5; defaults to the canonical one for the canonical URL")
    max_bytes: int = Field(default=512 * 1024 * 1024, gt=0, description="refuse downloads larger than this")
    retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    refresh: bool = Field(
        default=False, description="download even when the cache holds the file (a pinned checksum skips the network otherwise)"
    )

    def expected_md5(self) -> str | None:
        if self.md5:
            return self.md5.lower()
        return CANONICAL_MD5 if self.source == CANONICAL_URL else None


class DriftTolerances(Section):
    """How far a new dataset may move from the production version's data before a drift expectation fails."""

    duplicate_share: float = Field(default=0.05, ge=0, le=1, description="absolute change of the share of duplicates")
    length_kl_divergence: float = Field(
        default=0.1, ge=0, description="KL divergence of the question-length histogram (tokens) from production's"
    )
    median_length_tokens: float = Field(default=2.0, ge=0, description="absolute change of the median question length (tokens)")
    oov_share: float = Field(
        default=0.05, ge=0, le=1, description="increase of the mean per-question share of tokens outside production's vocabulary"
    )
    unseen_question_share: float = Field(
        default=0.99,
        ge=0,
        le=1,
        description="at most this share of questions production never saw (two disjoint halves of the real 10k sample: 0.97)",
    )
    label_flip_share: float = Field(
        default=0.0, ge=0, le=1, description="at most this share of pairs production saw with the other label"
    )
    reranker_overlap_distance: float = Field(
        default=0.15, ge=0, le=1, description="warn when the new labelled pairs' word-overlap profile is further than this "
        "(total variation) from the rows production's reranker was fitted on",
    )
    reranker_easy_negative_share: float = Field(
        default=0.1, ge=0, le=1, description="warn when the share of easy negatives (no word overlap) moves by more than this "
        "from the rows production's reranker was fitted on",
    )


class ValidateConfig(Section):
    """Which data-contract suites gate the data."""

    raw_suite: str = "qqp_raw.v1"
    split_suites: dict[str, str] = Field(
        default_factory=lambda: {
            "train": "qqp_split_duplicates.v1",
            "negatives": "qqp_split_negatives.v1",
            "val": "qqp_split_duplicates.v1",
            "test": "qqp_split_labelled.v1",
            "calibration": "qqp_split_labelled.v1",
            "selection": "qqp_split_labelled.v1",
            "gate": "qqp_split_labelled.v1",
        }
    )
    silver_suite: str = Field(default="qdup_silver.v1", description="the contract of the `silver` stage's split")
    failed_rows_shown: int = Field(default=5, ge=1, le=100)

    @field_validator("split_suites")
    @classmethod
    def _a_suite_per_split(cls, v: dict[str, str]) -> dict[str, str]:
        if set(v) != set(SPLIT_NAMES):
            raise ValueError(f"needs exactly one suite for each split {list(SPLIT_NAMES)}, got {sorted(v)}")
        return v
    drift: Literal["warn", "block", "off"] = Field(
        default="warn",
        description="drift against the production version's data: warn (report only), block (fail the run), off",
    )
    drift_tolerances: DriftTolerances = Field(default_factory=lambda: DriftTolerances())


class SplitConfig(Section):
    """How the data is cut; counts (>= 1) or fractions of all rows (< 1).

    The training range is cut into five contiguous regions: train (duplicates -> `train`,
    non-duplicates -> `negatives`), val (duplicates -> `val`), calibration (every pair -> `calibration`:
    thresholds and the reranker are fitted on it), selection (the hybrid search, the default method and
    the served scorer are chosen on it) and gate (a version is judged against production on it). Selection
    and gate keep only pairs whose questions no earlier region holds (gate: nor selection).
    """

    mode: Literal["positional", "question_disjoint"] = Field(
        default="positional",
        description="positional: the first n_train rows are the training range, the next n_test rows test (the reference "
        "course's split); question_disjoint: whole connected components of the question graph are drawn (seeded) so that "
        "test shares no question with any other split",
    )
    n_train: float = Field(default=300_000, gt=0)
    n_test: float = Field(default=10_240, gt=0)
    val_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="share of the duplicates before the calibration region that go to val"
    )
    calibration_fraction: float = Field(
        default=0.15, gt=0, le=0.5, description="share of the training range's rows before the selection region: calibration"
    )
    selection_fraction: float = Field(
        default=0.1, gt=0, le=0.3, description="share of the training range's rows before the gate region: the selection split"
    )
    gate_fraction: float = Field(
        default=0.1, gt=0, le=0.3, description="the last share of the training range's rows: the gate split"
    )

    @field_validator("n_train", "n_test")
    @classmethod
    def _count_or_fraction(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("must be a whole count (>= 1) or a fraction (< 1)")
        return v

    @model_validator(mode="after")
    def _every_split_possible(self) -> SplitConfig:
        # What can be told without the data; the rest is checked by the splits stage (a ConfigError too).
        if self.n_train < 1 and self.n_test < 1 and self.n_train + self.n_test > 1:
            raise ValueError(f"n_train + n_test = {self.n_train} + {self.n_test} is more than all the rows")
        if self.n_train >= 1:
            n = int(self.n_train)
            fractions = {"calibration": self.calibration_fraction, "selection": self.selection_fraction, "gate": self.gate_fraction}
            held = sum(round(n * f) for f in fractions.values())
            if n - held < 2:
                raise ValueError(
                    f"calibration_fraction={self.calibration_fraction} of n_train={n} rows leaves fewer than 2 rows for train "
                    f"and val (with selection_fraction={self.selection_fraction} and gate_fraction={self.gate_fraction})"
                )
            for name, fraction in fractions.items():
                if round(n * fraction) < 1:
                    raise ValueError(f"{name}_fraction={fraction} of n_train={n} rows leaves an empty {name} split")
        return self


class FeedbackConfig(Section):
    """People's judgements (POST /v1/feedback, the page's ✓ / ✗) as training data of the next run (`qdup run --feedback`).

    The run snapshots the store's feedback as Parquet named by its sha256, validates it with `suite`, resolves pairs
    with both labels (qdup.data.feedback.RESOLUTION_RULE) and adds the pairs to train (duplicates) and negatives (not
    duplicates); a pair with a question test holds is held out. Test never gets feedback.
    """

    enabled: bool = Field(default=False, description="snapshot the store's feedback and train with it")
    since: str | None = Field(default=None, description="only feedback at or after this ISO date/time (UTC); None: all")
    suite: str = Field(default="qdup_feedback.v1", description="the data contract the snapshot must pass")
    snapshot: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="train with this snapshot (its sha256: from the cache, or the copy a version of the store holds) instead "
                    "of the store's feedback now; `qdup reproduce` pins a version's own snapshot so")

    @field_validator("since")
    @classmethod
    def _iso(cls, v: str | None) -> str | None:
        if v is not None:
            import datetime as dt

            try:
                dt.datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(f"expected an ISO date or time, e.g. 2026-12-01 or 2026-12-01T08:00:00Z, got {v!r}") from None
        return v
