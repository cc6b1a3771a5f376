"""A fitted reranker's files: saved without pickling code, each hash-checked when loaded.

The trees as an ONNX model (`qdup.evaluation.reranker_trees`), the TF-IDF vocabulary and BM25 statistics as JSON and
.npy; `reranker.json` records the sha256 of every other file and `load_reranker` refuses a file that differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer

from qdup.errors import QdupError
from qdup.evaluation.pair_features import BM25_B, BM25_K1, FEATURE_NAMES, PairFeaturizer
from qdup.evaluation.reranker import Reranker
from qdup.evaluation.reranker_trees import TreeScorer
from qdup.fileio import atomic_write_bytes, atomic_write_json, read_json, sha256_file

# Files of a saved reranker, all beside each other in one folder (a version's `model/`).
META_FILE = "reranker.json"
# The fitted trees as an ONNX model (qdup.evaluation.reranker_trees): data that ONNX Runtime scores, no code.
MODEL_FILE = "reranker_trees.onnx"
TFIDF_VOCAB_FILE = "reranker_tfidf_vocabulary.json"
TFIDF_IDF_FILE = "reranker_tfidf_idf.npy"
BM25_FILE = "reranker_bm25.json"
DATA_FILES = (MODEL_FILE, TFIDF_VOCAB_FILE, TFIDF_IDF_FILE, BM25_FILE)
FILES = (META_FILE, *DATA_FILES)
FORMAT = "qdup-reranker/3"
# Older formats, whose fitted model is a skops file (/2 has an .npz beside it, no longer read). They still load, so
# that published versions keep serving: the skops file, hash-checked and read with one trusted type beyond skops's
# defaults (the fitted trees of a HistGradientBoostingClassifier), is converted to the ONNX trees as a fitted model is.
OLD_MODEL_FILE = "reranker.skops"
OLD_FORMATS = {
    "qdup-reranker/1": (OLD_MODEL_FILE, TFIDF_VOCAB_FILE, TFIDF_IDF_FILE, BM25_FILE),
    "qdup-reranker/2": (OLD_MODEL_FILE, TFIDF_VOCAB_FILE, TFIDF_IDF_FILE, BM25_FILE, "reranker_trees.npz"),
}
OLD_TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)


def save_reranker(reranker: Reranker, out_dir: Path) -> dict[str, str]:
    """Write the reranker's files into `out_dir` (existing folder); returns file name -> sha256, META_FILE included."""
    out_dir = Path(out_dir)
    f = reranker.featurizer
    atomic_write_bytes(out_dir / MODEL_FILE, reranker.trees.data)
    vocab = {str(term): int(i) for term, i in f.tfidf.vocabulary_.items()}
    atomic_write_json(out_dir / TFIDF_VOCAB_FILE, {
        "analyzer": f.tfidf.analyzer, "ngram_range": list(f.tfidf.ngram_range), "lowercase": f.tfidf.lowercase,
        "sublinear_tf": f.tfidf.sublinear_tf, "vocabulary": vocab,
    })
    tmp = out_dir / (TFIDF_IDF_FILE + ".tmp.npy")
    np.save(tmp, np.asarray(f.tfidf.idf_, dtype=np.float64), allow_pickle=False)
    tmp.replace(out_dir / TFIDF_IDF_FILE)
    atomic_write_json(out_dir / BM25_FILE, {
        "k1": BM25_K1, "b": BM25_B, "documents": f.documents, "avgdl": f.bm25_avgdl, "unseen_idf": f.bm25_unseen_idf,
        "idf": f.bm25_idf,
    })
    digests = {name: sha256_file(out_dir / name) for name in DATA_FILES}
    atomic_write_json(out_dir / META_FILE, {
        "format": FORMAT, "threshold": reranker.threshold, "features": list(FEATURE_NAMES),
        "score": "duplicate probability in [0, 1]; duplicate iff score >= threshold", "sha256": digests,
        **{k: v for k, v in reranker.info.items() if k not in ("threshold", "format", "trusted_types")},
        "threshold_choice": reranker.info.get("threshold"),
    })
    return {**digests, META_FILE: sha256_file(out_dir / META_FILE)}


def verify_files(folder: Path, meta: dict, names: tuple[str, ...], meta_file: str = META_FILE) -> None:
    """QdupError unless each file of `names` is in `folder` with the sha256 `meta["sha256"]` records for it."""
    for name in names:
        p = Path(folder) / name
        if not p.is_file():
            raise QdupError(f"{folder}: reranker file {name} is missing")
        want = (meta.get("sha256") or {}).get(name)
        got = sha256_file(p)
        if got != want:
            raise QdupError(f"{p}: sha256 {got[:12]}… differs from the {str(want)[:12]}… recorded in {meta_file}; refusing to load it")


def has_reranker(folder: Path) -> bool:
    return (Path(folder) / META_FILE).is_file()


def load_reranker(folder: Path) -> Reranker:
    """Load the files `save_reranker` wrote; QdupError when one is missing or differs from the sha256 recorded with it.

    Scoring reads the ONNX trees with ONNX Runtime; a reranker of an older format (OLD_FORMATS) is read from its
    skops file and converted.
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise QdupError(f"{folder}: no reranker ({META_FILE} is missing)")
    meta = read_json(meta_path)
    fmt = meta.get("format")
    if (fmt != FORMAT and fmt not in OLD_FORMATS) or list(meta.get("features") or []) != list(FEATURE_NAMES):
        raise QdupError(f"{meta_path}: format {fmt!r} is not a reranker this qdup reads ({FORMAT} or "
                        f"{', '.join(OLD_FORMATS)}) with its features; rerun the rerank stage to rebuild it")
    verify_files(folder, meta, DATA_FILES if fmt == FORMAT else OLD_FORMATS[fmt])
    model, trees = None, None
    if fmt == FORMAT:
        trees = TreeScorer((folder / MODEL_FILE).read_bytes(), len(FEATURE_NAMES), folder / MODEL_FILE)
    else:
        import skops.io as sio

        model = sio.load(folder / OLD_MODEL_FILE, trusted=list(OLD_TRUSTED_TYPES))
        if not isinstance(model, HistGradientBoostingClassifier):
            raise QdupError(f"{folder / OLD_MODEL_FILE}: holds a {type(model).__name__}, not a HistGradientBoostingClassifier")
    tf_meta = read_json(folder / TFIDF_VOCAB_FILE)
    tfidf = TfidfVectorizer(
        analyzer=tf_meta["analyzer"], ngram_range=tuple(tf_meta["ngram_range"]), lowercase=tf_meta["lowercase"],
        sublinear_tf=tf_meta["sublinear_tf"], vocabulary=tf_meta["vocabulary"], dtype=np.float64,
    )
    tfidf.idf_ = np.load(folder / TFIDF_IDF_FILE, allow_pickle=False)
    bm = read_json(folder / BM25_FILE)
    if (bm["k1"], bm["b"]) != (BM25_K1, BM25_B):
        raise QdupError(f"{folder / BM25_FILE}: BM25 k1={bm['k1']} b={bm['b']}, this qdup computes k1={BM25_K1} b={BM25_B}")
    featurizer = PairFeaturizer(tfidf, {str(k): float(v) for k, v in bm["idf"].items()}, float(bm["unseen_idf"]),
                                float(bm["avgdl"]), int(bm["documents"]))
    info = {k: v for k, v in meta.items() if k not in ("sha256", "threshold")}

    return Reranker(featurizer, model, float(meta["threshold"]), info, trees)
