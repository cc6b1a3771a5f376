"""Questions as users give them (a list, a TSV of pairs), checked before any model loads: a light module
(pandas only) so that `qdup predict` answers a bad file or an empty question in a moment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qdup.errors import QdupError

PAIR_COLUMNS = ("question1", "question2")


def first_invalid(values: Sequence[Any]) -> tuple[int, Any, str] | None:
    """(index, value, reason) of the first entry that is not a non-blank string, else None."""
    for i, v in enumerate(values):
        if not isinstance(v, str):
            return i, v, f"is not a string ({type(v).__name__})"
        if not v.strip():
            return i, v, "is empty or whitespace-only"
    return None


def check_questions(values: Sequence[Any], name: str) -> list[str]:
    """Validate a batch of questions; QdupError names the offending index and value."""
    if isinstance(values, (str, bytes)):
        raise QdupError(f"{name} must be a sequence of strings, not a single {type(values).__name__}: {values[:60]!r}")
    items = list(values)
    bad = first_invalid(items)
    if bad is not None:
        i, v, reason = bad
        raise QdupError(f"{name}[{i}] {reason}: {v!r}")
    return items


def _check_columns(pairs_tsv: Path, columns: list[str]) -> None:
    for col in PAIR_COLUMNS:
        if col not in columns:
            raise QdupError(f"{pairs_tsv} has no {col!r} column (its columns: {', '.join(columns)}); "
                            "its first line must name question1 and question2, tab-separated")


def _check_pairs_header(pairs_tsv: Path) -> None:
    """The header's columns, read with the standard library: a file without question2 answers before pandas loads."""
    import csv

    with open(pairs_tsv, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f, delimiter="\t"), None)
    if header:
        _check_columns(pairs_tsv, header)


def read_pairs(pairs_tsv: Path):
    """A TSV of pairs (columns question1, question2, optional id) as a DataFrame, every row checked; QdupError names
    the file and its missing column, or the row and line of its first empty question."""
    pairs_tsv = Path(pairs_tsv)
    if not pairs_tsv.is_file():
        raise QdupError(f"pairs file not found: {pairs_tsv}")
    _check_pairs_header(pairs_tsv)
    import pandas as pd

    # Questions stay text as written: no NA inference ("NA", "null" are questions too); an empty
    # cell reads as "" and is then rejected by name.
    try:
        df = pd.read_csv(pairs_tsv, sep="\t", dtype={c: str for c in PAIR_COLUMNS}, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise QdupError(f"{pairs_tsv} is not a readable TSV: {e}") from e
    except pd.errors.EmptyDataError:
        raise QdupError(f"{pairs_tsv} is empty (no header line)") from None
    _check_columns(pairs_tsv, [str(c) for c in df.columns])
    for col in PAIR_COLUMNS:
        bad = first_invalid(df[col].tolist())
        if bad is not None:
            i, v, reason = bad
            raise QdupError(f"{pairs_tsv}: {col} of data row {i} (file line {i + 2}) {reason}: {v!r}")
    return df
