"""The retrain flow's configuration: one model with a section per stage, and reading it from a JSON file."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from qdup.config.base import Section
from qdup.config.data import FeedbackConfig, FetchConfig, SplitConfig, ValidateConfig
from qdup.config.evaluation import EvalConfig, PublishConfig, RerankConfig, SearchConfig
from qdup.config.model import ModelConfig, PretrainConfig, TrainConfig, VocabConfig
from qdup.errors import ConfigError

Stage = Literal[
    "fetch", "validate", "drift", "splits", "vocab", "pretrain", "silver", "train", "evaluate", "rerank", "retrieval", "export", "index", "gate", "publish",
]
# The stages in run order.
STAGES: tuple[str, ...] = typing.get_args(Stage)


class RetrainConfig(Section):
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
