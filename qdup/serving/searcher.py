"""The protocol the server's /v1/search speaks to a version's question index, and its loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypedDict


class Hit(TypedDict):
    """One indexed question found for a query: `score` ranked it (`score_kind` says what it is), `similarity` is the
    encoder cosine, `duplicate` the version's decision."""

    id: str
    question: str
    score: float
    score_kind: str
    similarity: float
    duplicate: bool


class Searcher(Protocol):
    """A version's question index: the k most similar indexed questions for each query, best first."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]: ...

    def describe(self) -> dict[str, Any]:
        """method, score_kind, duplicate_by and duplicate_threshold of the answers `search` gives."""

    def warm(self) -> None:
        """Answer a probe with every method offered, so the first request is served at full speed."""


def load_searcher(version_dir: Path) -> Searcher | None:
    """The question index of the version in `version_dir` (ranked by its best method), warmed, or None when it has none."""
    from qdup.search.service import load_version_searcher

    searcher = load_version_searcher(version_dir)
    if searcher is not None:
        # Before the version is served (and /readyz answers 200): the first search must not pay for fitting.
        searcher.warm()
    return searcher
