"""The configuration of the mining and batch-search flows: one model per run, each over a built question index."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from qdup.config.base import Section

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


class MineConfig(Section):
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


class BatchSearchConfig(Section):
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
