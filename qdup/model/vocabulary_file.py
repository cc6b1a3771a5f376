"""The vocabulary file format (line i = token id i), readable without loading TensorFlow."""

from __future__ import annotations

from pathlib import Path

from qdup.errors import QdupError

PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = ""
OOV_TOKEN = "[UNK]"


def read_vocabulary(path: Path) -> list[str]:
    """The token list written by `write_vocabulary`, special tokens included."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QdupError(f"vocabulary file not found: {path}") from None
    if not text.endswith("\n"):
        raise QdupError(f"vocabulary file {path} is truncated (no final newline)")
    # split("\n"), not splitlines(): tokens may contain other Unicode line-break characters.
    tokens = text[:-1].split("\n")
    if tokens[:2] != [PAD_TOKEN, OOV_TOKEN]:
        raise QdupError(f"vocabulary file {path} does not start with the padding and {OOV_TOKEN} lines: {tokens[:2]!r}")
    if len(tokens) <= 2:
        raise QdupError(f"vocabulary file {path} holds no words")
    return tokens
