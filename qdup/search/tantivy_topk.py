"""The top-k documents of a BM25 query from tantivy (block-max WAND), for qdup.search.bm25.BM25Index.

Why tantivy: a lexical query must not read every posting of its common words ("how", "i", "the": a third of the corpus
each); tantivy's block-max WAND skips the blocks of postings that cannot reach the current k-th best score, in Rust.
The index holds each question's word stems as one whitespace-separated string (qdup's own tokens, so tantivy's terms
are BM25Index's), with term frequencies and lengths (no positions, nothing stored). BM25Index rescores the documents
found with its exact scores, so the scores served are the ones of its pair scoring.

Documents are numbered by corpus position: the index is written as one segment (one writer thread, a memory budget no
corpus of short questions reaches), which `open` checks.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdup.errors import QdupError

TANTIVY_DIR = "lexical_tantivy"
FIELD = "stems"
# tantivy's BM25 (fixed in the library): BM25Index uses the same k1 and b, so both rank alike.
TANTIVY_K1, TANTIVY_B = 1.2, 0.75
# The writer's memory budget: a segment is flushed when it is reached, and positions need one segment. Memory is
# taken as the index grows, not at once.
WRITER_HEAP_BYTES = 2_000_000_000


def _schema():
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field(FIELD, tokenizer_name="whitespace", index_option="freq")
    return builder.build()


class TantivyTopK:
    """A tantivy index of the corpus's stems, opened read-only for searching."""

    def __init__(self, index: Any, directory: Path, owned: bool):
        import tantivy

        self._tantivy = tantivy
        self.directory = directory
        self.index = index
        self.schema = index.schema
        self.searcher = index.searcher()
        if owned:  # a folder of its own (a build's): removed with this object
            weakref.finalize(self, shutil.rmtree, str(directory), True)

    @classmethod
    def build(cls, stems: Iterable[list[str]]) -> TantivyTopK:
        """Index each document's stems (in corpus order) in a temporary folder, removed when the index is."""
        import tantivy

        directory = Path(tempfile.mkdtemp(prefix="qdup-tantivy-"))
        try:
            index = tantivy.Index(_schema(), path=str(directory))
            writer = index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
            for words in stems:
                writer.add_document(tantivy.Document(**{FIELD: " ".join(words)}))
            writer.commit()
            writer.wait_merging_threads()
            index.reload()
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(index, directory, owned=True)

    @classmethod
    def open(cls, directory: Path, count: int) -> TantivyTopK:
        """Open a saved index of `count` documents."""
        import tantivy

        found = cls(tantivy.Index.open(str(directory)), Path(directory), owned=False)
        found.check(count)
        return found

    def check(self, count: int) -> None:
        if self.searcher.num_segments != 1 or self.searcher.num_docs != count:
            raise QdupError(f"{self.directory}: tantivy index of {self.searcher.num_docs} documents in "
                            f"{self.searcher.num_segments} segments, expected {count} in one; rebuild the index")

    def save(self, directory: Path) -> list[str]:
        """Copy the index's files (not tantivy's lock files) into `directory`/TANTIVY_DIR; their paths under `directory`."""
        target = Path(directory) / TANTIVY_DIR
        target.mkdir()
        names = []
        for path in sorted(self.directory.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                shutil.copyfile(path, target / path.name)
                names.append(f"{TANTIVY_DIR}/{path.name}")
        return names

    def top(self, terms: Sequence[str], k: int) -> np.ndarray:
        """Positions of the k best documents for the terms (BM25, block-max WAND), best first; fewer if fewer match."""
        if not len(terms) or k < 1:
            return np.empty(0, dtype=np.int64)
        t = self._tantivy
        query = t.Query.boolean_query([(t.Occur.Should, t.Query.term_query(self.schema, FIELD, term)) for term in terms])
        hits = self.searcher.search(query, k, count=False).hits
        return np.fromiter((address.doc for _, address in hits), dtype=np.int64, count=len(hits))

    @staticmethod
    def library() -> str:
        from importlib.metadata import version

        return f"tantivy {version('tantivy')}"
