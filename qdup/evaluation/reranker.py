"""The pair reranker: gradient-boosted trees over encoder cosine, character TF-IDF, word overlap, BM25 and length features.

A `PairFeaturizer` holds the statistics fitted on the `train` split's questions only (the lexical
baseline's character n-gram TF-IDF, word document frequencies for BM25); `fit_reranker` fits a
seeded scikit-learn HistGradientBoostingClassifier on labelled pairs the encoder neither trained nor
early-stopped on (the calibration split); `out_of_fold_scores` gives each calibration pair a score
from a model that did not see its group, for choosing the decision threshold honestly.

Saved without pickling code: the trees with skops (loaded with an explicit trusted-types list), the
TF-IDF vocabulary and BM25 statistics as JSON and .npy; `reranker.json` records the sha256 of every
other file and `load_reranker` refuses a file that differs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedGroupKFold
from threadpoolctl import threadpool_limits

from qdup.errors import QdupError
from qdup.evaluation.baseline import fit_char_tfidf, tfidf_pair_cosines
from qdup.evaluation.metrics import choose_threshold
from qdup.fileio import atomic_write_bytes, atomic_write_json, read_json, sha256_file
from qdup.text import standardize

FEATURE_NAMES = (
    "encoder_cosine",
    "char_tfidf_cosine",
    "word_jaccard",
    "idf_weighted_jaccard",
    "shared_tokens",
    "shared_share_of_shorter",
    "bm25_max",
    "bm25_min",
    "bm25_max_normalised",
    "tokens_min",
    "tokens_max",
    "tokens_abs_diff",
    "tokens_ratio",
    "chars_abs_diff",
    "chars_ratio",
    "digit_tokens_differ",
    "same_first_word",
)
# Okapi BM25 constants (Robertson & Zaragoza's usual choice, also rank_bm25's and Lucene's defaults).
BM25_K1 = 1.2
BM25_B = 0.75
# Files of a saved reranker, all beside each other in one folder (a version's `model/`).
META_FILE = "reranker.json"
MODEL_FILE = "reranker.skops"
TFIDF_VOCAB_FILE = "reranker_tfidf_vocabulary.json"
TFIDF_IDF_FILE = "reranker_tfidf_idf.npy"
BM25_FILE = "reranker_bm25.json"
DATA_FILES = (MODEL_FILE, TFIDF_VOCAB_FILE, TFIDF_IDF_FILE, BM25_FILE)
FILES = (META_FILE, *DATA_FILES)
# The only types the skops file may hold beyond skops's own defaults (numpy, builtins, scikit-learn estimators
# it trusts): the fitted trees of a HistGradientBoostingClassifier.
TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)
FORMAT = "qdup-reranker/1"
# Features along which more similarity may never lower the score (BoostingParams.monotonic).
INCREASING = ("encoder_cosine", "char_tfidf_cosine", "word_jaccard", "idf_weighted_jaccard", "shared_share_of_shorter",
              "bm25_max_normalised")

def standard_tokens(text: str) -> list[str]:
    """The question's words as the vocabulary sees them (`qdup.text.standardize`, plain Python: features are
    computed for tens of thousands of pairs per query batch, without TensorFlow)."""
    return standardize(text)


@dataclass(frozen=True)
class BoostingParams:
    """HistGradientBoostingClassifier settings (the fields of qdup.config.RerankConfig that shape the trees)."""

    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 20
    l2_regularization: float = 1.0
    monotonic: bool = False

    def model(self, seed: int) -> HistGradientBoostingClassifier:
        # No early stopping: its internal validation split would take pairs away from a small calibration split.
        cst = [1 if name in INCREASING else 0 for name in FEATURE_NAMES] if self.monotonic else None
        return HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization, early_stopping=False,
            random_state=int(seed), monotonic_cst=cst,
        )


# The trees are fitted on a few thousand pairs and score a few hundred per query: OpenMP threads cost more than they
# save there (18x slower fits measured on 2 busy cores), and the results do not depend on the thread count.
def _one_thread():
    return threadpool_limits(limits=1, user_api="openmp")


@dataclass
class PairFeaturizer:
    """Lexical statistics of the training questions, and the features of any question pair."""

    tfidf: TfidfVectorizer
    bm25_idf: dict[str, float]
    bm25_unseen_idf: float
    bm25_avgdl: float
    documents: int
    _tokens: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def tokens(self, text: str) -> list[str]:
        got = self._tokens.get(text)
        if got is None:
            if len(self._tokens) > 200_000:  # bounded: a server scores unbounded streams of new questions
                self._tokens.clear()
            got = self._tokens[text] = standard_tokens(text)
        return got

    def idf(self, token: str) -> float:
        return self.bm25_idf.get(token, self.bm25_unseen_idf)

    def bm25(self, query: list[str], doc: list[str]) -> float:
        """Okapi BM25 of `doc` for `query` (every query occurrence counts), IDF and mean length from training.

        Hand-written: rank_bm25 and bm25s score a query against the corpus they indexed, not one
        question against another with a training corpus's statistics.
        """
        if not doc:
            return 0.0
        tf = Counter(doc)
        norm = BM25_K1 * (1 - BM25_B + BM25_B * len(doc) / self.bm25_avgdl)
        return float(sum(self.idf(t) * tf[t] * (BM25_K1 + 1) / (tf[t] + norm) for t in query if t in tf))

    def features(self, q1: Sequence[str], q2: Sequence[str], cosine: Sequence[float] | np.ndarray) -> np.ndarray:
        """(n, len(FEATURE_NAMES)) float64 features; symmetric in the two questions."""
        cos = np.asarray(cosine, dtype=np.float64)
        if not (len(q1) == len(q2) == len(cos)):
            raise QdupError(f"reranker features: {len(q1)} question1, {len(q2)} question2 and {len(cos)} cosines")
        out = np.zeros((len(q1), len(FEATURE_NAMES)), dtype=np.float64)
        if not len(q1):
            return out
        out[:, 0] = cos
        out[:, 1] = tfidf_pair_cosines(self.tfidf, list(q1), list(q2))
        for i, (a, b) in enumerate(zip(q1, q2, strict=True)):
            ta, tb = self.tokens(a), self.tokens(b)
            sa, sb = set(ta), set(tb)
            shared, union = sa & sb, sa | sb
            out[i, 2] = len(shared) / len(union) if union else 0.0
            # math.fsum: exact, so the sum over a set does not depend on its (hash-seeded) order and the feature is
            # the same for (a, b) and (b, a) in every process.
            idf_union = math.fsum(self.idf(t) for t in union)
            out[i, 3] = math.fsum(self.idf(t) for t in shared) / idf_union if idf_union > 0 else 0.0
            out[i, 4] = len(shared)
            out[i, 5] = len(shared) / min(len(sa), len(sb)) if sa and sb else 0.0
            ab, ba = self.bm25(ta, tb), self.bm25(tb, ta)
            out[i, 6], out[i, 7] = max(ab, ba), min(ab, ba)
            # Normalised by each question's score against itself, so long questions do not dominate.
            selfs = max(self.bm25(ta, ta), self.bm25(tb, tb))
            out[i, 8] = max(ab, ba) / selfs if selfs > 0 else 0.0
            la, lb = len(ta), len(tb)
            out[i, 9], out[i, 10] = min(la, lb), max(la, lb)
            out[i, 11] = abs(la - lb)
            out[i, 12] = min(la, lb) / max(la, lb) if max(la, lb) else 1.0
            ca, cb = len(a), len(b)
            out[i, 13] = abs(ca - cb)
            out[i, 14] = min(ca, cb) / max(ca, cb) if max(ca, cb) else 1.0
            da = {t for t in sa if any(c.isdigit() for c in t)}
            db = {t for t in sb if any(c.isdigit() for c in t)}
            out[i, 15] = float(da != db)
            out[i, 16] = float(bool(ta) and bool(tb) and ta[0] == tb[0])
        return out


def fit_featurizer(train_df: pd.DataFrame, *, ngram_range: tuple[int, int] = (2, 5), min_df: int = 1) -> PairFeaturizer:
    """Statistics of the train split's distinct questions: the lexical baseline's TF-IDF and BM25 document frequencies."""
    tfidf = fit_char_tfidf(train_df, ngram_range=ngram_range, min_df=min_df)
    docs = list(dict.fromkeys(train_df["question1"].astype(str).tolist() + train_df["question2"].astype(str).tolist()))
    df: Counter[str] = Counter()
    total = 0
    for q in docs:
        toks = standard_tokens(q)
        total += len(toks)
        df.update(set(toks))
    n = len(docs)
    # Lucene's non-negative BM25 IDF; a word never seen in training counts as seen in no document.
    idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
    return PairFeaturizer(tfidf, idf, math.log(1 + (n + 0.5) / 0.5), max(total / max(n, 1), 1e-9), n)


def pair_groups(q1: Sequence[str], q2: Sequence[str]) -> np.ndarray:
    """Group label of each pair: pairs that share a question, directly or through others, share a group.

    Connected components of the question graph over every pair (either label): a question's pairs never
    fall on both sides of a fold, and duplicate clusters (transitive closure of duplicates) stay whole.
    """
    codes, _ = pd.factorize(np.concatenate([np.asarray(q1, dtype=object), np.asarray(q2, dtype=object)]), sort=False)
    n_pairs = len(q1)
    a, b = codes[:n_pairs], codes[n_pairs:]
    n = int(codes.max()) + 1 if len(codes) else 0
    graph = coo_matrix((np.ones(n_pairs, dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels[a].astype(np.int64)


def check_labelled(y: np.ndarray, where: str, folds: int) -> None:
    """QdupError unless `y` has enough pairs of both classes for `folds` grouped folds."""
    pos = int(np.sum(y == 1))
    neg = int(np.sum(y == 0))
    if pos < folds or neg < folds:
        raise QdupError(
            f"rerank.enabled: the reranker is fitted on labelled {where} pairs and needs at least rerank.folds={folds} "
            f"duplicates and non-duplicates; {where} has {pos} and {neg}"
        )


def out_of_fold_scores(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, params: BoostingParams, folds: int, seed: int
) -> np.ndarray:
    """Each pair's duplicate probability from a model fitted on the other folds (grouped by `groups`, stratified)."""
    check_labelled(y, "calibration", folds)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=int(seed))
    scores = np.full(len(y), np.nan, dtype=np.float64)
    for k, (fit_idx, held_idx) in enumerate(splitter.split(x, y, groups)):
        if len(np.unique(y[fit_idx])) < 2:
            raise QdupError(f"rerank: fold {k} of calibration leaves one class to fit on; lower rerank.folds")
        with _one_thread():
            model = params.model(seed).fit(x[fit_idx], y[fit_idx])
            scores[held_idx] = model.predict_proba(x[held_idx])[:, 1]
    return scores


@dataclass
class Reranker:
    """A fitted reranker: pair features -> duplicate probability; `threshold` chosen on out-of-fold calibration scores."""

    featurizer: PairFeaturizer
    model: HistGradientBoostingClassifier
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)

    def score_features(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        with _one_thread():
            return self.model.predict_proba(x)[:, 1].astype(np.float64)

    def score(self, q1: Sequence[str], q2: Sequence[str], cosine: Sequence[float] | np.ndarray) -> np.ndarray:
        """Duplicate probability of each pair, given the encoder's cosine of it; 1 for a question and itself.

        Labelled pairs never hold one question twice, so the trees have not seen that case and may score it
        anywhere; the same words in the same order (after standardisation) ask the same thing by definition.
        """
        scores = self.score_features(self.featurizer.features(q1, q2, cosine))
        same = [bool(ta) and ta == self.featurizer.tokens(b) for ta, b in zip(map(self.featurizer.tokens, q1), q2, strict=True)]
        scores[np.asarray(same, dtype=bool)] = 1.0
        return scores

    def decide(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= self.threshold


def fit_reranker(
    featurizer: PairFeaturizer, x: np.ndarray, y: np.ndarray, oof_scores: np.ndarray, params: BoostingParams, seed: int,
    info: dict[str, Any] | None = None,
) -> Reranker:
    """The final model on all of `x` (calibration); its threshold maximises accuracy on the out-of-fold scores."""
    check_labelled(y, "calibration", 2)
    with _one_thread():
        model = params.model(seed).fit(x, y)
    choice = choose_threshold(y, oof_scores)
    meta = {
        **(info or {}),
        "threshold": {"value": choice["accuracy_threshold"], "objective": "accuracy", "chosen_on": "calibration (out-of-fold)",
                      "calibration_accuracy": choice["accuracy"], "f1_threshold": choice["f1_threshold"]},
    }
    return Reranker(featurizer, model, choice["accuracy_threshold"], meta)


def save_reranker(reranker: Reranker, out_dir: Path) -> dict[str, str]:
    """Write the reranker's files into `out_dir` (existing folder); returns file name -> sha256, META_FILE included."""
    import skops.io as sio

    out_dir = Path(out_dir)
    f = reranker.featurizer
    atomic_write_bytes(out_dir / MODEL_FILE, sio.dumps(reranker.model))
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
        "trusted_types": list(TRUSTED_TYPES), **{k: v for k, v in reranker.info.items() if k != "threshold"},
        "threshold_choice": reranker.info.get("threshold"),
    })
    return {**digests, META_FILE: sha256_file(out_dir / META_FILE)}


def has_reranker(folder: Path) -> bool:
    return (Path(folder) / META_FILE).is_file()


def load_reranker(folder: Path) -> Reranker:
    """Load the files `save_reranker` wrote; QdupError when one is missing or differs from the sha256 recorded with it."""
    import skops.io as sio

    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise QdupError(f"{folder}: no reranker ({META_FILE} is missing)")
    meta = read_json(meta_path)
    if meta.get("format") != FORMAT or list(meta.get("features") or []) != list(FEATURE_NAMES):
        raise QdupError(f"{meta_path}: not a {FORMAT} reranker with this qdup's features")
    for name in DATA_FILES:
        p = folder / name
        if not p.is_file():
            raise QdupError(f"{folder}: reranker file {name} is missing")
        want = (meta.get("sha256") or {}).get(name)
        got = sha256_file(p)
        if got != want:
            raise QdupError(f"{p}: sha256 {got[:12]}… differs from the {str(want)[:12]}… recorded in {META_FILE}; refusing to load it")
    model = sio.load(folder / MODEL_FILE, trusted=list(TRUSTED_TYPES))
    if not isinstance(model, HistGradientBoostingClassifier):
        raise QdupError(f"{folder / MODEL_FILE}: holds a {type(model).__name__}, not a HistGradientBoostingClassifier")
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
    return Reranker(featurizer, model, float(meta["threshold"]), info)
