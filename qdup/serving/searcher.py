"""The protocol the server's /v1/search speaks to a version's question index, and its loader."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypedDict


class Hit(TypedDict):
    """One indexed question found for a query."""

    id: str
    question: str
    similarity: float


class Searcher(Protocol):
    """A version's question index: the k most similar indexed questions for each query, best first."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]: ...


def load_searcher(version_dir: Path) -> Searcher | None:
    """The question index published with the version in `version_dir`, or None when it has none.

    No version carries an index yet (`qdup.search` builds them); until it is wired in here, every
    version answers /v1/search with 501 and says how to build one.
    """
    return None
