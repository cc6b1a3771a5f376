"""A question index: ids, texts and unit encodings of a corpus, searched exactly or with a faiss IVF index."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qdup.config import SearchConfig
from qdup.errors import QdupError
from qdup.fileio import atomic_dir, atomic_write_json, sha256_file
from qdup.search.locations import MANIFEST
from qdup.search.topk import top_k_rows

FORMAT = "qdup-question-index/1"
EMBEDDINGS = "embeddings.npy"
QUESTIONS = "questions.parquet"
GRAPH = "ivf.faiss"
BACKENDS = ("exact", "ivf")
# A unit vector's float32 norm may differ from 1 by rounding; anything further off was not normalised.
_NORM_TOLERANCE = 1e-3
log = logging.getLogger("qdup.search")


def _check_vectors(vectors: np.ndarray, what: str, dims: int | None = None) -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise QdupError(f"{what}: expected a (n, d) matrix, got shape {arr.shape}")
    if dims is not None and arr.shape[1] != dims:
        raise QdupError(f"{what}: vectors have {arr.shape[1]} dimensions, the index has {dims}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise QdupError(f"{what}: row {row} holds a NaN or infinite value")
    return arr


def query_block_rows(corpus_size: int, block_elements: int) -> int:
    """How many queries one exact-search block scores at once: at most `block_elements` scores in memory."""
    return max(1, block_elements // max(1, corpus_size))


def exact_search(
    corpus: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    block_elements: int = SearchConfig().block_elements,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine for unit vectors): positions (n, k) int64 and scores (n, k) float32.

    Queries are scored in blocks of `query_block_rows` rows, so the full n x N score matrix never exists.
    `exclude[i]` (a corpus position, or -1) is left out of query i's results: a question is not its own neighbour.
    When fewer than k candidates exist, the missing columns hold position -1 and score -inf.
    """
    if k < 1:
        raise QdupError(f"k must be >= 1, got {k}")
    n, size = len(queries), len(corpus)
    idx_out = np.full((n, k), -1, dtype=np.int64)
    score_out = np.full((n, k), -np.inf, dtype=np.float32)
    rows = query_block_rows(size, block_elements)
    for start in range(0, n, rows):
        block = queries[start : start + rows] @ corpus.T
        if exclude is not None:
            ex = exclude[start : start + rows]
            hit = np.flatnonzero(ex >= 0)
            block[hit, ex[hit]] = -np.inf
        idx, top = top_k_rows(block, k)
        gone = ~np.isfinite(top)
        idx[gone] = -1
        # Unit vectors in float32 can give a dot product a rounding step past 1; a cosine cannot.
        top = np.where(gone, -np.inf, np.clip(top, -1.0, 1.0))
        idx_out[start : start + len(block), : idx.shape[1]] = idx
        score_out[start : start + len(block), : idx.shape[1]] = top
    return idx_out, score_out


def _faiss(threads: int):
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    return faiss


# Vectors assigned to IVF cells per call: 8,192 x 2,934 cells' distances are 96 MB.
IVF_ADD_BLOCK = 8192


def nlist_for(count: int, cfg: SearchConfig) -> int:
    """Number of IVF cells: cfg.nlist, or about 4 * sqrt(count) (faiss's guideline), never more than count / 39."""
    want = cfg.nlist or round(4 * count**0.5)
    # k-means needs some 39 training points per centroid (faiss warns below that).
    return max(1, min(want, count // 39))


def _build_ivf(vectors: np.ndarray, cfg: SearchConfig, seed: int):
    """IVF-Flat by inner product: k-means cells trained on a seeded sample, vectors stored unquantised."""
    faiss = _faiss(cfg.threads)
    nlist = nlist_for(len(vectors), cfg)
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.cp.niter = cfg.kmeans_iterations
    sample = min(len(vectors), nlist * cfg.train_per_list)
    ivf.cp.max_points_per_centroid = cfg.train_per_list
    pick = np.sort(np.random.default_rng(seed).choice(len(vectors), size=sample, replace=False))
    ivf.train(vectors[pick])
    # By blocks: faiss assigns a whole add call's vectors to cells at once, an (n, nlist) float32 distance table.
    for first in range(0, len(vectors), IVF_ADD_BLOCK):
        ivf.add(vectors[first : first + IVF_ADD_BLOCK])
    ivf.nprobe = min(cfg.nprobe, nlist)
    return ivf


@dataclass
class QuestionIndex:
    """The questions of one corpus encoded by one model version, with the structure that searches them."""

    ids: np.ndarray
    texts: list[str]
    embeddings: np.ndarray
    model_version: str
    corpus: dict[str, Any]
    backend: str
    seed: int
    cfg: SearchConfig = field(default_factory=SearchConfig)
    graph: Any = None
    recall: dict[str, Any] | None = None
    # How search ranks by default (method, hybrid form and weight), chosen by the retrieval evaluation.
    search_defaults: dict[str, Any] | None = None
    # The lexical side of lexical and hybrid search (qdup.search.lexical.BM25Index), built with the index and saved in
    # its folder; None for an index saved before it existed, fitted by `ensure_lexical` (with a log line).
    lexical: Any = None
    directory: Path | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def ensure_lexical(self) -> Any:
        """The lexical index: the one saved with this index, else (an index built before qdup saved one) fitted now."""
        if self.lexical is None:
            from qdup.search.bm25 import build_lexical

            where = self.directory or "this index"
            log.warning("%s: no lexical index saved with it (built before qdup saved one): fitting it in memory now "
                        "(%d questions); rebuild the index to load it ready-made", where, len(self))
            self.lexical = build_lexical(self.texts)
        return self.lexical

    @property
    def dims(self) -> int:
        return int(self.embeddings.shape[1])

    def search(self, query_vectors: np.ndarray, k: int, *, exact: bool = False, exclude: np.ndarray | None = None):
        """Nearest indexed questions of each query: positions (n, k) int64 (-1: none) and cosine scores (n, k) float32.

        Uses the IVF index when there is one (unless `exact`), else exact blocked search.
        `exclude[i]` is a position to leave out of query i's results (-1: none).
        """
        if k < 1:
            raise QdupError(f"k must be >= 1, got {k}")
        queries = _check_vectors(query_vectors, "query vectors", self.dims)
        if exact or self.graph is None:
            return exact_search(self.embeddings, queries, k, exclude=exclude, block_elements=self.cfg.block_elements)
        want = min(len(self), k + (1 if exclude is not None else 0))
        _faiss(self.cfg.threads)
        # IVF-Flat scores are exact float32 inner products of the vectors it finds; -1 marks too few found.
        scores, pos = self.graph.search(queries, want)
        pos = pos.astype(np.int64)
        valid = pos >= 0
        if exclude is not None:
            valid &= pos != np.asarray(exclude)[:, None]
        scores = np.where(valid, np.clip(scores, -1.0, 1.0), -np.inf).astype(np.float32)
        idx, top = top_k_rows(scores, min(k, scores.shape[1]))
        found = np.take_along_axis(pos, idx, axis=1)
        found[~np.isfinite(top)] = -1
        out_idx = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_idx[:, : found.shape[1]] = found
        out_scores[:, : top.shape[1]] = top
        return out_idx, out_scores

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the index to `directory` (created; must not exist) atomically; return the manifest."""
        directory = Path(directory)
        if directory.exists():
            raise QdupError(f"{directory}: already exists; an index is never overwritten in place")
        with atomic_dir(directory) as tmp:
            np.save(tmp / EMBEDDINGS, self.embeddings, allow_pickle=False)
            id_type = pa.int64() if self.ids.dtype.kind in "iu" else pa.string()
            table = pa.table({"id": pa.array(self.ids.tolist(), type=id_type), "question": pa.array(self.texts, pa.string())})
            pq.write_table(table, tmp / QUESTIONS, compression="zstd")
            if self.graph is not None:
                _faiss(self.cfg.threads).write_index(self.graph, str(tmp / GRAPH))
            if self.lexical is not None:
                self.lexical.save(tmp)
            files = _index_files(tmp)
            manifest = {
                "format": FORMAT,
                "model_version": self.model_version,
                "corpus": self.corpus,
                "count": len(self),
                "dims": self.dims,
                "backend": self.backend,
                "seed": self.seed,
                "settings": self.cfg.model_dump(),
                "recall_vs_exact": self.recall,
                "search_defaults": self.search_defaults,
                "lexical": None if self.lexical is None else self.lexical.describe(),
                "files": {name: sha256_file(tmp / name) for name in files},
            }
            atomic_write_json(tmp / MANIFEST, manifest)
        return manifest


def _index_files(directory: Path) -> list[str]:
    """The files of an index folder, as paths relative to it, without hidden files (lock files a reader's library may
    create in a folder it opens)."""
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def check_corpus(ids: Sequence, texts: Sequence[str], embeddings: np.ndarray) -> tuple[np.ndarray, list[str]]:
    texts = list(texts)
    if not texts:
        raise QdupError("corpus: no questions to index")
    ids_arr = np.asarray(ids)
    if ids_arr.dtype.kind not in "iuUO":
        raise QdupError(f"ids: expected integers or strings, got dtype {ids_arr.dtype}")
    ids_arr = ids_arr.astype(np.int64) if ids_arr.dtype.kind in "iu" else ids_arr.astype(str).astype(object)
    if not (len(ids_arr) == len(texts) == len(embeddings)):
        raise QdupError(f"corpus: {len(ids_arr)} ids, {len(texts)} questions and {len(embeddings)} vectors; they must match")
    seen: dict[str, int] = {}
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise QdupError(f"corpus row {row} (id {ids_arr[row]}): empty question {text!r}")
        first = seen.setdefault(text, row)
        if first != row:
            raise QdupError(f"corpus row {row} (id {ids_arr[row]}): question duplicates row {first}: {text[:80]!r}")
    uniq, counts = np.unique(ids_arr, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        rows = np.flatnonzero(ids_arr == dup)[:2].tolist()
        raise QdupError(f"corpus rows {rows}: id {dup} is used twice")
    return ids_arr, texts


def build_index(
    ids: Sequence,
    texts: Sequence[str],
    embeddings: np.ndarray,
    *,
    model_version: str,
    corpus: dict[str, Any],
    ann: str = "auto",
    seed: int,
    cfg: SearchConfig | None = None,
    lexical: bool = True,
) -> QuestionIndex:
    """Index `texts` (distinct, non-empty) with their unit `embeddings` from `model_version`'s encoder.

    `ann`: "exact", "ivf", or "auto" (exact up to cfg.exact_max questions, IVF above; bench/SEARCH.md says why).
    `corpus` is the lineage of the questions (e.g. the dataset's sha256) recorded in the manifest.
    `lexical`: also build the lexical (BM25) index of lexical and hybrid search, saved with the index.
    """
    cfg = cfg or SearchConfig()
    if not model_version:
        raise QdupError("model_version: empty; an index must name the model that encoded it")
    ids_arr, texts = check_corpus(ids, texts, embeddings)
    vectors = _check_vectors(embeddings, "embeddings")
    norms = np.linalg.norm(vectors, axis=1)
    off = np.flatnonzero(np.abs(norms - 1.0) > _NORM_TOLERANCE)
    if off.size:
        raise QdupError(f"embeddings row {int(off[0])}: norm {norms[off[0]]:.4f}, expected unit vectors (as encode returns)")
    if ann not in ("auto", *BACKENDS):
        raise QdupError(f"ann: expected auto, exact or ivf, got {ann!r}")
    backend = ann if ann != "auto" else ("exact" if len(texts) <= cfg.exact_max else "ivf")
    lexical_index = None
    if lexical:
        from qdup.search.bm25 import build_lexical

        # Before the IVF: the BM25 build's temporaries and the IVF's copy of the vectors are never held at once.
        lexical_index = build_lexical(texts)
    graph = _build_ivf(vectors, cfg, seed) if backend == "ivf" else None
    return QuestionIndex(ids_arr, texts, vectors, model_version, dict(corpus), backend, seed, cfg, graph,
                         lexical=lexical_index)


def load_index(directory: Path, expected_model_version: str | None = None) -> QuestionIndex:
    """Read an index written by `QuestionIndex.save`, verifying every file's sha256 and the model that built it."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QdupError(f"{path}: no index manifest; build the index first") from None
    except json.JSONDecodeError as e:
        raise QdupError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if manifest.get("format") != FORMAT:
        raise QdupError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if expected_model_version is not None and manifest["model_version"] != expected_model_version:
        raise QdupError(
            f"{path}: the index was built by model {manifest['model_version']!r}, not {expected_model_version!r}; "
            "rebuild it with that model"
        )
    present = [name for name in _index_files(directory) if name != MANIFEST]
    if present != sorted(manifest["files"]):
        raise QdupError(f"{directory}: files {present} differ from the manifest's {sorted(manifest['files'])}")
    for name, digest in manifest["files"].items():
        if sha256_file(directory / name) != digest:
            raise QdupError(f"{directory / name}: sha256 differs from {MANIFEST}; the index was altered or damaged")
    embeddings = np.load(directory / EMBEDDINGS, allow_pickle=False)
    table = pq.read_table(directory / QUESTIONS)
    ids = table.column("id").to_numpy(zero_copy_only=False)
    if not pa.types.is_integer(table.schema.field("id").type):
        ids = ids.astype(object)
    texts = table.column("question").to_pylist()
    if embeddings.shape != (manifest["count"], manifest["dims"]) or len(texts) != manifest["count"]:
        raise QdupError(f"{directory}: {len(texts)} questions and vectors {embeddings.shape} disagree with the manifest")
    cfg = SearchConfig(**manifest["settings"])
    graph = None
    if manifest["backend"] == "ivf":
        graph = _faiss(cfg.threads).read_index(str(directory / GRAPH))
        graph.nprobe = min(cfg.nprobe, graph.nlist)
        if graph.ntotal != manifest["count"] or graph.d != manifest["dims"]:
            raise QdupError(f"{directory / GRAPH}: {graph.ntotal} vectors of {graph.d} dims, the manifest says "
                            f"{manifest['count']} of {manifest['dims']}")
    lexical = None
    if manifest.get("lexical") is not None:
        from qdup.search.bm25 import BM25_KIND, BM25Index

        if manifest["lexical"].get("kind") != BM25_KIND:
            raise QdupError(f"{path}: lexical index of kind {manifest['lexical'].get('kind')!r}, this qdup reads "
                            f"{BM25_KIND!r}; rebuild the index")
        lexical = BM25Index.load(directory, texts)
    return QuestionIndex(
        ids, texts, embeddings, manifest["model_version"], manifest["corpus"], manifest["backend"], manifest["seed"], cfg, graph,
        manifest.get("recall_vs_exact"), manifest.get("search_defaults"), lexical, directory,
    )


# Indexes loaded by this process, by (folder, manifest sha256, expected model): a Dask worker runs many
# chunks of one index and should read and verify it once. Two entries: one index at a time, plus the next.
_LOADED: dict[tuple[str, str, str | None], QuestionIndex] = {}
_LOADED_MAX = 2
_LOADED_LOCK = threading.Lock()


def load_index_cached(directory: Path, expected_model_version: str | None = None) -> QuestionIndex:
    """`load_index`, once per process for each index folder and manifest content; callers must not modify it.

    The manifest holds every file's sha256, so its own hash names the content: an index rebuilt in the
    same folder is loaded again.
    """
    directory = Path(directory).resolve()
    try:
        digest = sha256_file(directory / MANIFEST)
    except FileNotFoundError:
        raise QdupError(f"{directory / MANIFEST}: no index manifest; build the index first") from None
    key = (str(directory), digest, expected_model_version)
    # One lock for all loads: two threads of a worker asking for the same index load it once.
    with _LOADED_LOCK:
        index = _LOADED.get(key)
        if index is None:
            index = load_index(directory, expected_model_version)
            while len(_LOADED) >= _LOADED_MAX:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[key] = index
        return index


def recall_against_exact(index: QuestionIndex, sample_queries: np.ndarray, k: int) -> dict[str, Any]:
    """Share of the exact top-k neighbours that `index.search` returns for `sample_queries`, recorded on the index.

    Ties at the k-th score make the exact set itself ambiguous; counting by score (an approximate neighbour
    scoring at least the exact k-th score is a hit) keeps a tie from counting as a miss.
    """
    queries = _check_vectors(sample_queries, "sample queries", index.dims)
    exact_idx, exact_scores = index.search(queries, k, exact=True)
    _, approx_scores = index.search(queries, k)
    kth = exact_scores[:, -1:]
    found = np.minimum((approx_scores >= kth - 1e-6).sum(axis=1), (exact_idx >= 0).sum(axis=1))
    expected = (exact_idx >= 0).sum(axis=1)
    recall = float(found.sum() / max(1, expected.sum()))
    result = {"k": k, "queries": len(queries), "recall": recall, "backend": index.backend}
    index.recall = result
    return result


def sample_queries(index: QuestionIndex, n: int, seed: int) -> np.ndarray:
    """`n` indexed vectors chosen with `seed` (without replacement), for recall measurement."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(index), size=min(n, len(index)), replace=False)
    return index.embeddings[np.sort(pick)]


__all__ = [
    "QuestionIndex", "build_index", "exact_search", "load_index", "load_index_cached", "query_block_rows", "recall_against_exact", "sample_queries",
]
