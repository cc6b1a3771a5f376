"""`qdup run --source`: a local file checked before Prefect, a server or TensorFlow starts (exists, readable, and its
header names the release's columns), so that these mistakes answer at once and name the user's file."""

from __future__ import annotations

import os
from pathlib import Path

from qdup.errors import QdupError


def check_source(source: str) -> None:
    """A local source (path or file:// URL) exists and is a readable file: checked before any server or TensorFlow starts."""
    from urllib.parse import unquote, urlparse

    if "://" in source and not source.startswith("file://"):
        return  # a URL: the fetch stage reaches it (with retries) and names what went wrong
    path = Path(unquote(urlparse(source).path)) if source.startswith("file://") else Path(source)
    if not path.exists():
        raise QdupError(f"--source {source}: no such file; make a demo one with `qdup demo-data demo.tsv --rows 20000`, "
                        "or give an http(s) URL")
    if not path.is_file():
        raise QdupError(f"--source {source}: not a file (a TSV in the Quora release's format is expected)")
    if not os.access(path, os.R_OK):
        raise QdupError(f"--source {source}: not readable by this user; check its permissions")
    check_header(path)


def check_header(path: Path) -> None:
    """The first line of a local TSV names every column of the release: a file without `is_duplicate` answers at once,
    naming the file, not its copy in the cache. Anything that is not plain text is left to the validate stage's
    contract, which names what it is (binary data, an HTML page, an empty file)."""
    from qdup.data.columns import COLUMNS

    with open(path, "rb") as f:
        head = f.readline(64 * 1024)
    try:
        header = head.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return
    if not header or "\x00" in header or header.lstrip().startswith("<"):
        return
    missing = [c for c in COLUMNS if c not in header.split("\t")]
    if missing:
        what = f"column {missing[0]!r}" if len(missing) == 1 else "columns " + ", ".join(repr(c) for c in missing)
        shown = ", ".join(header.split("\t"))
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        raise QdupError(f"--source {path}: no {what} (its first line names: {shown}); a training TSV has the tab-separated "
                        f"columns {' '.join(COLUMNS)}: fix it, then: qdup run --source {path}")
