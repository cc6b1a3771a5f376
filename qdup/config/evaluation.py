"""Configuration of what follows training: evaluation, the pair reranker, search, and publishing with its gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from qdup.config.base import NgramRange, Section


class EvalConfig(Section):
    reference_threshold: float = Field(default=0.7, ge=-1, le=1)
    sweep_step: float = Field(default=0.05, gt=0, le=0.5)
    bootstrap_resamples: int = Field(default=1000, ge=0, le=100_000, description="test resamples for the intervals; 0: none")
    bootstrap_level: float = Field(default=0.95, gt=0, lt=1, description="coverage of the bootstrap intervals")
    baseline_ngram_range: NgramRange = Field(default=(2, 5), description="character n-gram sizes of the lexical baseline")
    baseline_min_df: int = Field(default=1, ge=1, description="n-grams in fewer training questions are dropped")


class RerankConfig(Section):
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


class PublishConfig(Section):
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


class SearchConfig(Section):
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
    rerank_fit: Literal["candidates", "pair"] = Field(
        default="candidates",
        description="what orders `reranked` search (with rerank.enabled): 'candidates', a search reranker fitted on the "
        "selection queries' hybrid top 20 labelled by duplicate cluster (its selection figures out-of-fold), or 'pair', "
        "the pair reranker fitted on calibration pairs",
    )
