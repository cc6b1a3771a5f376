"""Typed configuration: the retrain flow (one pydantic model, a section per stage), mining and batch search runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qdup.errors import ConfigError

CANONICAL_URL = "http://qim.fs.quoracdn.net/quora_duplicate_questions.tsv"
# As published by torchtext's QQP loader (404,290 rows).
CANONICAL_MD5 = "b6d5672bd9dc1e66ab2bb020ebeafb8d"

# Everywhere in qdup: labels, similarities and decisions mean this.
LABEL_CONVENTION = (
    "is_duplicate 1 = same intent; similarity = cosine of the L2-normalised encodings in [-1, 1]; "
    "predicted duplicate iff similarity >= threshold"
)

Stage = Literal[
    "fetch", "validate", "drift", "splits", "vocab", "pretrain", "silver", "train", "evaluate", "rerank", "retrieval", "export", "index", "gate", "publish",
]
STAGES: tuple[str, ...] = (
    "fetch", "validate", "drift", "splits", "vocab", "pretrain", "silver", "train", "evaluate", "rerank", "retrieval", "export", "index", "gate", "publish",
)


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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FetchConfig(_Section):
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


class DriftTolerances(_Section):
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


class ValidateConfig(_Section):
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


class SplitConfig(_Section):
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


class VocabConfig(_Section):
    max_tokens: int | None = Field(default=None, gt=2, description="None: unlimited, as the reference course")


class ModelConfig(_Section):
    """Encoder architecture: Embedding -> (Bi)LSTM -> masked mean pool -> L2 normalise.

    The defaults were chosen by calibration ROC-AUC over seeds (bench/TUNING.md); sub-words (with the softmax loss
    at learning rate 0.002) by calibration ROC-AUC and selection-part retrieval MRR@10 (`python -m bench.quality`).
    The reference course's encoder is bidirectional=False, dropout=0, token_dropout=0,
    mask_padding=False, subwords=False.
    """

    embedding_dim: int = Field(default=128, gt=0)
    lstm_units: int = Field(default=128, gt=0)
    bidirectional: bool = True
    dropout: float = Field(default=0.5, ge=0, lt=1, description="dropout of single embedding values")
    spatial_dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout of whole embedding channels (SpatialDropout1D)")
    token_dropout: float = Field(default=0.2, ge=0, lt=1, description="training only: share of word ids replaced by the OOV id")
    output_dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout of the LSTM outputs before pooling")
    l2: float = Field(default=0.0, ge=0, description="L2 penalty on the embedding and LSTM kernels")
    max_length: int = Field(default=64, gt=0, description="questions are truncated to this many tokens")
    mask_padding: bool = True
    subwords: bool = Field(
        default=True,
        description="add hashed character n-gram embeddings (fastText style) to each word's embedding, computed from the raw "
        "text inside the exported model: rare, misspelled and out-of-vocabulary words get vectors",
    )
    subword_buckets: int = Field(default=32_768, gt=0, description="hash buckets of the character n-grams (embedding rows)")
    subword_ngrams: tuple[int, int] = Field(default=(3, 5), description="n-gram sizes, on the word wrapped in '<' and '>'")
    subword_max_per_word: int = Field(default=16, gt=0, description="a word keeps its first this many n-grams")

    @field_validator("subword_ngrams")
    @classmethod
    def _subword_ngrams(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1] <= 10:
            raise ValueError("must be (low, high) with 1 <= low <= high <= 10")
        return v


class TrainConfig(_Section):
    """Optimisation. The reference course: loss="triplet", epochs=10, learning_rate=0.01, lr_schedule="constant".

    The softmax loss and its learning rate are chosen by calibration ROC-AUC and selection-part retrieval MRR@10
    (`python -m bench.quality`), never by test figures.
    """

    epochs: int = Field(default=50, gt=0, description="at most; early stopping usually ends training sooner")
    batch_size: int = Field(default=256, gt=1)
    learning_rate: float = Field(default=0.002, gt=0)
    loss: Literal["triplet", "softmax"] = Field(
        default="softmax",
        description="triplet: the reference course's hard + mean negative triplet loss; softmax: symmetric in-batch "
        "multiple-negatives ranking loss (InfoNCE). Both mask in-batch false negatives (same duplicate cluster)",
    )
    margin: float = Field(default=0.25, ge=0, description="triplet loss margin")
    scale: float = Field(default=20.0, gt=0, description="softmax loss: cosines are multiplied by this before the softmax")
    hard_negatives: float = Field(
        default=0.0, ge=0, le=4,
        description="labelled non-duplicates of the `negatives` split added to each batch, per duplicate pair (0: none); "
        "they are candidates of every anchor and enter a CoSENT ranking term against the batch's duplicates",
    )
    negatives_weight: float = Field(default=1.0, gt=0, description="weight of the CoSENT ranking term when hard_negatives > 0")
    search_negatives: int = Field(
        default=0, ge=0, le=16,
        description="search-shaped hard negatives per duplicate pair and batch (0: none): drawn each epoch from the `silver` "
        "stage's BM25 neighbours of the pair's two questions that lie outside their duplicate cluster; they are candidates "
        "of every anchor of the batch (same-cluster candidates stay masked)",
    )
    search_negatives_depth: int = Field(
        default=10, ge=1, le=100,
        description="BM25 neighbours outside its duplicate cluster kept per training question by the `silver` stage",
    )
    silver_positive_score: float | None = Field(
        default=None, gt=0.5, le=1,
        description="teacher-labelled silver pairs (Augmented SBERT): a `silver` neighbour the cross-fitted teacher (the "
        "reranker's trees on lexical features, fitted on the training region's labelled pairs) scores at least this "
        "joins training as a duplicate pair; None: no silver duplicates",
    )
    silver_negative_score: float | None = Field(
        default=None, ge=0, lt=1,
        description="search negatives keep only the neighbours the teacher scores at most this; None: every neighbour "
        "(no teacher unless silver_positive_score is set)",
    )
    early_stopping_patience: int = Field(default=6, ge=1)
    lr_schedule: Literal["constant", "plateau", "cosine"] = Field(
        default="plateau",
        description="plateau: multiply the rate by lr_decay_factor after lr_decay_patience epochs without a lower "
        "val_loss; cosine: cosine decay to 0 over `epochs`",
    )
    lr_decay_factor: float = Field(default=0.5, gt=0, lt=1)
    lr_decay_patience: int = Field(default=2, ge=1)
    clipnorm: float | None = Field(default=None, gt=0, description="clip each gradient to this L2 norm")
    deterministic: bool = Field(
        default=False, description="TensorFlow op determinism: bit-identical reruns on the same machine, slower training"
    )

    @property
    def uses_silver(self) -> bool:
        """Whether training reads the `silver` stage's split (search negatives or silver duplicates)."""
        return self.search_negatives > 0 or self.silver_positive_score is not None

    @property
    def uses_teacher(self) -> bool:
        """Whether the `silver` stage labels its pairs with the teacher."""
        return self.silver_positive_score is not None or self.silver_negative_score is not None


class PretrainConfig(_Section):
    """Optional self-supervised pre-training of the encoder (SimCSE style) before `train`.

    Every distinct question of the train region (the `train` and `negatives` splits: questions of labelled
    non-duplicates too) is paired with itself; the two dropout views of a question are positives, the batch's
    other questions negatives (in-batch softmax loss). Early stopping on the `val` duplicates' loss. `train`
    then starts from these weights.
    """

    enabled: bool = False
    epochs: int = Field(default=5, gt=0, description="at most; early stopping on the val duplicates usually ends sooner")
    batch_size: int = Field(default=256, gt=1)
    learning_rate: float = Field(default=0.005, gt=0)
    scale: float = Field(default=20.0, gt=0, description="in-batch softmax scale")
    early_stopping_patience: int = Field(default=2, ge=1)
    max_questions: int = Field(default=200_000, gt=1, description="a seeded sample of at most this many questions")


class EvalConfig(_Section):
    reference_threshold: float = Field(default=0.7, ge=-1, le=1)
    sweep_step: float = Field(default=0.05, gt=0, le=0.5)
    bootstrap_resamples: int = Field(default=1000, ge=0, le=100_000, description="test resamples for the intervals; 0: none")
    bootstrap_level: float = Field(default=0.95, gt=0, lt=1, description="coverage of the bootstrap intervals")
    baseline_ngram_range: tuple[int, int] = Field(default=(2, 5), description="character n-gram sizes of the lexical baseline")
    baseline_min_df: int = Field(default=1, ge=1, description="n-grams in fewer training questions are dropped")

    @field_validator("baseline_ngram_range")
    @classmethod
    def _ngram_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1] <= 10:
            raise ValueError("must be (low, high) with 1 <= low <= high <= 10")
        return v


class RerankConfig(_Section):
    """The pair reranker (gradient-boosted trees over encoder, lexical, overlap, BM25 and length features).

    Fitted on the calibration split (pairs the encoder neither trained nor early-stopped on); its threshold is
    chosen on out-of-fold calibration scores; test is reported only. The seed is the run's `seed`. The tree
    settings were chosen by out-of-fold calibration ROC-AUC on the real sample (`python -m bench.rerank_tuning`,
    bench/results/rerank_tuning.md): small, regularised trees (calibration holds about a thousand pairs); of the two
    best, nearly equal, the one with smaller leaves, which still splits on small calibration splits.
    """

    enabled: bool = Field(default=True, description="fit a reranker; it makes the duplicate decision and re-ranks search")
    folds: int = Field(default=5, ge=2, le=20, description="grouped folds for the out-of-fold calibration scores")
    max_iter: int = Field(default=100, ge=1, le=5000, description="boosting iterations")
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    max_leaf_nodes: int = Field(default=7, ge=2, le=1024)
    min_samples_leaf: int = Field(default=10, ge=1)
    l2_regularization: float = Field(default=5.0, ge=0)
    serve_margin: float = Field(
        default=0.0, ge=0, le=1, description="the reranker decides only when its selection ROC-AUC beats the encoder's by "
        "more than this with a paired interval whose low end is above it; otherwise the encoder decides",
    )
    monotonic: bool = Field(
        default=False,
        description="the score never falls as a similarity feature (cosines, overlaps, normalised BM25) rises",
    )


class PublishConfig(_Section):
    """Where versions go and when `production` moves."""

    store_url: str | None = Field(default=None, description="fsspec URL; None: $QDUP_HOME/store")
    registry_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the registry of versions and aliases; None: $QDUP_REGISTRY_URL, else a SQLite file "
        "in a local store. A store shared by several hosts needs a server, e.g. postgresql+psycopg://user@host/qdup",
    )
    gate_metric: Literal[
        "roc_auc", "pr_auc", "accuracy", "f1",
        "retrieval_mrr@10", "retrieval_ndcg@10", "retrieval_recall@1", "retrieval_recall@10", "retrieval_recall@100",
        "retrieval_map@100",
    ] = Field(default="roc_auc", description="judged beside the gate's own metrics; a pair metric is the served decision's "
              "(reranker where it serves, else encoder), retrieval_*: the served default search method's, both on the gate split")
    tolerance: float = Field(default=0.0, ge=0, le=1, description="challenger may be this much worse than production "
                             "(any gate metric without its own entry in `tolerances`)")
    tolerances: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.0, "accuracy": 0.01, "retrieval_mrr@10": 0.0, "retrieval_recall@10": 0.01},
        description="the gate's metrics and how much worse than production each may be: the served pair decision's "
        "roc_auc, accuracy (at its threshold), and the served search's retrieval_mrr@10, retrieval_recall@10",
    )

    @field_validator("tolerances")
    @classmethod
    def _known_gate_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        known = {"roc_auc", "pr_auc", "accuracy", "f1"} | {
            f"retrieval_{m}" for m in ("mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100", "map@100")}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown gate metric(s) {unknown}; expected some of {sorted(known)}")
        if any(not 0 <= t <= 1 for t in v.values()):
            raise ValueError("each tolerance must be in [0, 1]")
        return v
    promote: bool = Field(default=True, description="False: publish only, never move production")
    min_lift_over_baseline: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="refuse promotion unless the model's gate metric beats the lexical baseline's by at least this; None: off",
    )


class SearchConfig(_Section):
    """Question index, nearest-neighbour search, mining and retrieval evaluation (bench/SEARCH.md)."""

    exact_max: int = Field(default=100_000, ge=0, description="ann='auto' searches exactly up to this many questions")
    block_elements: int = Field(
        default=16 * 1024 * 1024, gt=0, description="exact search: most query x corpus scores held at once (float32)"
    )
    nlist: int = Field(default=0, ge=0, description="IVF: inverted lists (k-means cells); 0: 4 * sqrt(questions)")
    nprobe: int = Field(default=16, ge=1, description="IVF: cells scanned per query (recall against speed)")
    train_per_list: int = Field(default=40, ge=1, description="IVF: k-means training vectors per cell (a seeded sample)")
    kmeans_iterations: int = Field(default=10, ge=1, description="IVF: k-means iterations (faiss's default 25 doubles build time)")
    threads: int = Field(default=0, ge=0, description="IVF build/search threads (OpenMP); 0: faiss's default (all cores)")
    mine_chunk_size: int = Field(default=8192, gt=0, description="questions per mining unit of work")
    retrieval_val_fraction: float = Field(default=0.5, gt=0, lt=1, description="share of duplicate clusters for validation")
    retrieval_k: int = Field(default=100, ge=10, description="ranked list length scored per query")
    rrf_k: int = Field(default=60, ge=1, description="reciprocal rank fusion constant (Cormack et al. 2009)")
    hybrid_weight_step: float = Field(default=0.1, gt=0, le=0.5, description="grid step of the dense weight in [0, 1]")


# A Dask scheduler as `dask scheduler` prints it: tcp:// or tls://, a host (or [IPv6]) and a port.
_DASK_ADDRESS = re.compile(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):[0-9]{1,5}")


def _dask_address(value: str | None) -> str | None:
    if value is not None and not _DASK_ADDRESS.fullmatch(value):
        raise ValueError(f"expected a Dask scheduler address tcp://HOST:PORT, got {value!r}")
    return value


DaskAddress = Annotated[
    str | None,
    AfterValidator(_dask_address),
    Field(description="scheduler address tcp://HOST:PORT whose workers run the chunks; None: threads of this process"),
]


class MineConfig(_Section):
    """One mining run over an index folder (the `qdup-mine` flow and `qdup mine --dask`).

    Workers of a Dask cluster open `index_dir` themselves: it must be at the same path on every worker
    (shared storage).
    """

    index_dir: Path
    out: Path
    k: int | None = Field(default=10, ge=1, description="nearest neighbours per question")
    threshold: float | None = Field(default=None, ge=-1, le=1, description="keep pairs with similarity >= this")
    chunk_size: int | None = Field(default=None, gt=0, description="questions per task; None: the index's mine_chunk_size")
    model_version: str | None = Field(default=None, description="refuse an index built by another model version")
    dask: DaskAddress = None

    @model_validator(mode="after")
    def _needs_a_mode(self) -> MineConfig:
        if self.k is None and self.threshold is None:
            raise ValueError("give k (neighbours per question), a threshold (all pairs above it), or both")
        return self


class BatchSearchConfig(_Section):
    """One batch search: the k nearest indexed questions of every query in a TSV, to Parquet (`qdup-search` flow).

    Workers of a Dask cluster open `index_dir` and `model_dir` themselves (shared storage); the queries
    travel with the tasks.
    """

    index_dir: Path
    model_dir: Path = Field(description="export folder (a version's model/) whose encoder encodes the queries")
    queries: Path = Field(description="TSV with a 'question' column")
    out: Path
    k: int = Field(default=10, ge=1)
    chunk_size: int = Field(default=8192, gt=0, description="queries per task")
    model_version: str | None = Field(default=None, description="refuse an index built by another model version")
    method: Literal["dense", "lexical", "hybrid", "reranked"] | None = Field(
        default=None, description="ranking; None: the index's default (the version's choice on its retrieval validation part)")
    dask: DaskAddress = None


class FeedbackConfig(_Section):
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


class RetrainConfig(_Section):
    """Everything that determines what `qdup run` produces."""

    seed: int = 42
    until: Stage = "publish"
    fetch: FetchConfig = FetchConfig()
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    split: SplitConfig = SplitConfig()
    vocab: VocabConfig = VocabConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvalConfig = EvalConfig()
    rerank: RerankConfig = RerankConfig()
    publish: PublishConfig = PublishConfig()
    search: SearchConfig = SearchConfig()
    feedback: FeedbackConfig = FeedbackConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _pretraining_needs_two_views(self) -> RetrainConfig:
        if self.pretrain.enabled and self.model.dropout == 0 and self.model.token_dropout == 0 and self.model.spatial_dropout == 0:
            raise ValueError("pretrain.enabled needs model.dropout, model.spatial_dropout or model.token_dropout > 0: "
                             "the two views of a question differ only by dropout")
        return self

    def runs_through(self, stage: str) -> bool:
        """True when `stage` is at or before the stage the run stops after."""
        return STAGES.index(stage) <= STAGES.index(self.until)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The RetrainConfig fields in a JSON file, checked; QdupError naming the file and the problem otherwise."""
    name = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read it ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a JSON object of RetrainConfig fields, got {type(data).__name__}")
    try:
        RetrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown field '{where}'")
            else:
                problems.append(f"{where}: {err['msg']}")
        raise ConfigError(f"{name}: {'; '.join(problems)}") from None
    return data
