"""Configuration of the encoder: vocabulary, architecture, optional pre-training and training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from qdup.config.base import NgramRange, Section


class VocabConfig(Section):
    max_tokens: int | None = Field(default=None, gt=2, description="None: unlimited, as the reference course")


class ModelConfig(Section):
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
    pooling: Literal["mean", "mean_max"] = Field(
        default="mean", description="the LSTM's steps to one vector: their masked mean, or the mean and the maximum concatenated"
    )
    mask_padding: bool = True
    subwords: bool = Field(
        default=True,
        description="add hashed character n-gram embeddings (fastText style) to each word's embedding, computed from the raw "
        "text inside the exported model: rare, misspelled and out-of-vocabulary words get vectors",
    )
    subword_buckets: int = Field(default=32_768, gt=0, description="hash buckets of the character n-grams (embedding rows)")
    subword_ngrams: NgramRange = Field(default=(3, 5), description="n-gram sizes, on the word wrapped in '<' and '>'")
    subword_max_per_word: int = Field(default=16, gt=0, description="a word keeps its first this many n-grams")


class TrainConfig(Section):
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
    distill_weight: float = Field(
        default=0.0, ge=0,
        description="weight of a MarginMSE distillation term (Hofstätter et al. 2020) over each duplicate pair's search "
        "negatives: the encoder's margin cos(q1, q2) - cos(q1, n) is drawn toward the teacher's 1 - teacher(q1, n). Needs "
        "loss='softmax' and search_negatives > 0; the teacher scores every neighbour. 0: off",
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
    embedding_init: Literal["random", "word2vec"] = Field(
        default="random",
        description="the word embedding's starting weights: Keras's random ones, or skip-gram word2vec (gensim) fitted on "
        "the training questions (qdup.model.word_vectors); ignored when training starts from a pretrained encoder",
    )
    word2vec_epochs: int = Field(default=10, gt=0, description="word2vec passes over the training questions")

    @property
    def uses_silver(self) -> bool:
        """Whether training reads the `silver` stage's split (search negatives or silver duplicates)."""
        return self.search_negatives > 0 or self.silver_positive_score is not None

    @property
    def uses_teacher(self) -> bool:
        """Whether the `silver` stage labels its pairs with the teacher."""
        return self.silver_positive_score is not None or self.silver_negative_score is not None or self.distills

    @property
    def distills(self) -> bool:
        """Whether training adds the MarginMSE term over the search negatives' teacher scores."""
        return self.distill_weight > 0

    @model_validator(mode="after")
    def _distillation_needs_search_negatives(self) -> TrainConfig:
        if self.distills and (self.loss != "softmax" or self.search_negatives == 0):
            raise ValueError("train.distill_weight > 0 needs train.loss='softmax' and train.search_negatives > 0: the term "
                             "compares each duplicate pair with its search negatives in the in-batch softmax's batch")
        return self


class PretrainConfig(Section):
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
