"""Typed configuration: the retrain flow (one pydantic model, a section per stage), mining and batch search runs.

The sections live by concern in the modules of this package (`base`, `data`, `model`, `evaluation`, `runs`,
`retrain`); every name is importable from `qdup.config` itself, as the flows, stages, tests and users import them.
"""

from qdup.config.base import LABEL_CONVENTION, Section
from qdup.config.data import (
    CANONICAL_MD5,
    CANONICAL_URL,
    CHOICE_SPLIT,
    JUDGE_SPLIT,
    SELECTION_SPLIT,
    SPLIT_NAMES,
    DriftTolerances,
    FeedbackConfig,
    FetchConfig,
    SplitConfig,
    ValidateConfig,
)
from qdup.config.evaluation import EvalConfig, PublishConfig, RerankConfig, SearchConfig
from qdup.config.model import ModelConfig, PretrainConfig, TrainConfig, VocabConfig
from qdup.config.retrain import STAGES, RetrainConfig, Stage, load_config_file
from qdup.config.runs import BatchSearchConfig, DaskAddress, MineConfig

__all__ = [
    "CANONICAL_MD5",
    "CANONICAL_URL",
    "CHOICE_SPLIT",
    "JUDGE_SPLIT",
    "LABEL_CONVENTION",
    "SELECTION_SPLIT",
    "SPLIT_NAMES",
    "STAGES",
    "BatchSearchConfig",
    "DaskAddress",
    "DriftTolerances",
    "EvalConfig",
    "FeedbackConfig",
    "FetchConfig",
    "MineConfig",
    "ModelConfig",
    "PretrainConfig",
    "PublishConfig",
    "RerankConfig",
    "RetrainConfig",
    "SearchConfig",
    "Section",
    "SplitConfig",
    "Stage",
    "TrainConfig",
    "ValidateConfig",
    "VocabConfig",
    "load_config_file",
]
