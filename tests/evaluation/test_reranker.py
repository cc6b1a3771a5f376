"""The pair reranker: features by hand and against their per-pair definitions, grouped folds, save/load round trip and
refusal, the rerank stage on generated data."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from qdup.config import EvalConfig, ModelConfig, RerankConfig, SplitConfig, ValidateConfig, VocabConfig
from qdup.data.demo import generate_pairs
from qdup.errors import QdupError
from qdup.evaluation import pair_features
from qdup.evaluation.baseline import tfidf_pair_cosines
from qdup.evaluation.pair_features import BM25_B, BM25_K1, FEATURE_NAMES, PairFeaturizer, fit_featurizer, standard_tokens
from qdup.evaluation.reranker import BoostingParams, fit_reranker, out_of_fold_scores, pair_groups
from qdup.evaluation.reranker_io import FILES, MODEL_FILE, OLD_MODEL_FILE, load_reranker, save_reranker

TRAIN = pd.DataFrame({
    "question1": ["How do I learn Python?", "What is the capital of France?"],
    "question2": ["How can I learn Python fast?", "Which city is the capital of France?"],
})


def feature(x: np.ndarray, name: str) -> np.ndarray:
    return x[:, FEATURE_NAMES.index(name)]


def test_tokens_follow_the_vocabulary_standardisation():
    assert standard_tokens("What's  the C++ deal, Mr. O'Neil?\tYes") == ["whats", "the", "c", "deal", "mr", "oneil", "yes"]


def test_features_by_hand():
    f = fit_featurizer(TRAIN)
    # 4 distinct training questions; "learn" is in 2 of them, "python" in 2, "capital" in 2, "fast" in 1.
    assert f.documents == 4
    assert f.bm25_idf["learn"] == pytest.approx(math.log(1 + (4 - 2 + 0.5) / (2 + 0.5)))
    assert f.bm25_idf["fast"] == pytest.approx(math.log(1 + (4 - 1 + 0.5) / (1 + 0.5)))
    assert f.bm25_unseen_idf == pytest.approx(math.log(1 + 4.5 / 0.5))
    q1, q2 = ["learn python fast", "zebra 2019 one"], ["python learn", "zebra 2020 one two"]
    x = f.features(q1, q2, [0.5, -0.25])
    assert x.shape == (2, len(FEATURE_NAMES))
    assert feature(x, "encoder_cosine").tolist() == [0.5, -0.25]
    assert feature(x, "word_jaccard") == pytest.approx([2 / 3, 2 / 5])
    assert feature(x, "shared_tokens").tolist() == [2, 2]
    assert feature(x, "shared_share_of_shorter") == pytest.approx([1.0, 2 / 3])
    assert feature(x, "tokens_min").tolist() == [2, 3] and feature(x, "tokens_max").tolist() == [3, 4]
    assert feature(x, "tokens_abs_diff").tolist() == [1, 1]
    assert feature(x, "tokens_ratio") == pytest.approx([2 / 3, 3 / 4])
    assert feature(x, "chars_abs_diff").tolist() == [len(q1[0]) - len(q2[0]), len(q2[1]) - len(q1[1])]
    assert feature(x, "digit_tokens_differ").tolist() == [0.0, 1.0]
    assert feature(x, "same_first_word").tolist() == [0.0, 1.0]
    # BM25 of "python learn" (doc, 2 tokens) for the query "learn python fast": two matching terms, tf 1 each; the other
    # way round the document is 3 tokens long, so the same two terms weigh less.
    def norm(length):
        return BM25_K1 * (1 - BM25_B + BM25_B * length / f.bm25_avgdl)

    idf = f.bm25_idf
    doc_is_q2 = (idf["learn"] + idf["python"]) * (BM25_K1 + 1) / (1 + norm(2))
    doc_is_q1 = (idf["learn"] + idf["python"]) * (BM25_K1 + 1) / (1 + norm(3))
    assert feature(x, "bm25_max")[0] == pytest.approx(doc_is_q2) and feature(x, "bm25_min")[0] == pytest.approx(doc_is_q1)
    own = max((idf["learn"] + idf["python"] + idf["fast"]) * (BM25_K1 + 1) / (1 + norm(3)), doc_is_q2)
    assert feature(x, "bm25_max_normalised")[0] == pytest.approx(doc_is_q2 / own)
    # "zebra 2019 one" / "zebra 2020 one two": unseen words weigh the unseen IDF.
    assert feature(x, "bm25_min")[1] == pytest.approx(2 * f.bm25_unseen_idf * (BM25_K1 + 1) / (1 + norm(4)))
    # Identical questions: TF-IDF cosine 1, every overlap feature at its maximum.
    same = f.features(["How do I learn Python?"], ["How do I learn Python?"], [1.0])
    assert feature(same, "char_tfidf_cosine")[0] == pytest.approx(1.0)
    assert feature(same, "word_jaccard")[0] == feature(same, "idf_weighted_jaccard")[0] == 1.0
    assert feature(same, "bm25_max_normalised")[0] == pytest.approx(1.0)


def test_features_are_symmetric():
    f = fit_featurizer(TRAIN)
    a, b = ["How do I learn Python 3?", "capital of France"], ["Best way to learn python?", "Which is the capital city of Spain?"]
    assert np.array_equal(f.features(a, b, [0.1, 0.2]), f.features(b, a, [0.1, 0.2]))


def reference_features(f: PairFeaturizer, q1: list[str], q2: list[str], cos) -> tuple[np.ndarray, np.ndarray]:
    """The features (and the reranker's same-question rule) by their per-pair definitions, one pair at a time: what
    the batch computation must reproduce to the last bit (a saved reranker's trees split on training features).

    The char TF-IDF cosine comes from the lexical baseline's function (scikit-learn's own transform). BM25 adds one
    term per query token occurrence, in query order; the IDF-weighted Jaccard sums with math.fsum (exact).
    """
    def idf(t):
        return f.bm25_idf.get(t, f.bm25_unseen_idf)

    def bm25(query, doc):
        if not doc:
            return 0.0
        tf = Counter(doc)
        norm = BM25_K1 * (1 - BM25_B + BM25_B * len(doc) / f.bm25_avgdl)
        total = 0.0
        for t in query:
            if t in tf:
                total += idf(t) * tf[t] * (BM25_K1 + 1) / (tf[t] + norm)
        return total

    out = np.zeros((len(q1), len(FEATURE_NAMES)))
    out[:, 0] = cos
    out[:, 1] = tfidf_pair_cosines(f.tfidf, q1, q2)
    same = np.zeros(len(q1), dtype=bool)
    for i, (a, b) in enumerate(zip(q1, q2, strict=True)):
        ta, tb = standard_tokens(a), standard_tokens(b)
        sa, sb = set(ta), set(tb)
        shared, union = sa & sb, sa | sb
        out[i, 2] = len(shared) / len(union) if union else 0.0
        idf_union = math.fsum(idf(t) for t in union)
        out[i, 3] = math.fsum(idf(t) for t in shared) / idf_union if idf_union > 0 else 0.0
        out[i, 4] = len(shared)
        out[i, 5] = len(shared) / min(len(sa), len(sb)) if sa and sb else 0.0
        ab, ba = bm25(ta, tb), bm25(tb, ta)
        out[i, 6], out[i, 7] = max(ab, ba), min(ab, ba)
        selfs = max(bm25(ta, ta), bm25(tb, tb))
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
        same[i] = bool(ta) and ta == tb
    return out, same


# Hand-made edge cases: nothing left after standardisation, repeated words, unseen words, digits of other scripts,
# case and accents, whitespace that splits words for one tokeniser and not the other, a question paired with itself.
EDGE = [
    ("???", "!!! ... ---"),
    ("", "What is it?"),
    ("?!", "How do I learn Python?"),
    ("the the the cat", "the cat cat"),
    ("python python python python", "python"),
    ("zzqx vrrb 42", "zzqx 42 vrrb"),
    ("Best laptop under $1,000 in 2017?", "best laptop under 1000 in 2018"),
    ("Was ist der Unterschied? Ça va. ÉCOLE", "was ist der unterschied ça va école"),
    ("ΟΔΟΣ ΣΟΦΙΑΣ İstanbul", "οδος σοφιας istanbul"),
    ("x² + y² = z²", "x2 y2 z2"),
    ("٣ apples and ٤ pears", "3 apples and 4 pears"),
    ("emoji 😀 and 中文 questions", "中文 emoji 😀"),
    ("non\u00a0breaking\u2003space\u3000here", "non breaking space here"),
    ("tab\tnew\nline\x0bvertical\x1cfile separator", "tab new line vertical file separator"),
    ("e\u0301 combining  accent", "é combining accent"),
    ("How do I learn Python?", "How do I learn Python?"),
    ("How do I learn Python?", "how do i learn python"),
    ("a b", "b a"),
    ("C++ or C#?", "c or c"),
    ("What's the U.S.A.'s GDP?", "whats the usas gdp"),
]


def _generated_pairs(seed: int) -> tuple[pd.DataFrame, list[str], list[str]]:
    """A training frame and pairs from generated data: real pairs, shuffled (non-duplicate) pairs, the edge cases."""
    df = generate_pairs(500, seed=seed)
    train, rest = df.iloc[:250], df.iloc[250:]
    rng = np.random.default_rng(seed)
    q1 = rest.question1.tolist() + rest.question1.tolist() + [a for a, _ in EDGE]
    q2 = rest.question2.tolist() + list(rng.permutation(rest.question2.tolist())) + [b for _, b in EDGE]
    return train, q1 + q2[:40], q2 + q1[:40]


def test_batch_features_equal_the_per_pair_definitions_on_generated_text(monkeypatch):
    train, q1, q2 = _generated_pairs(seed=5)
    f = fit_featurizer(train)
    cos = np.random.default_rng(0).uniform(-1, 1, len(q1))
    want, want_same = reference_features(f, q1, q2, cos)
    got, same = f.features_and_same(q1, q2, cos)
    assert np.array_equal(got, want) and np.array_equal(same, want_same)
    assert same.sum() >= 2 and (feature(want, "tokens_min") == 0).sum() >= 3  # the edge cases are there
    # The TF-IDF rows are scikit-learn's, bit for bit.
    texts = list(dict.fromkeys(q1 + q2))
    rows, sk = f.tfidf_rows(texts), f.tfidf.transform(texts).tocsr()
    assert all(np.array_equal(getattr(rows, k), getattr(sk, k)) for k in ("data", "indices", "indptr"))
    # Batches of any size (each edge case alone, among them pairs with no token at all), with warm caches, with caches
    # emptied along the way: the same features.
    for k in range(len(q1) - len(EDGE) - 40, len(q1) - 40):
        alone, alone_same = f.features_and_same([q1[k]], [q2[k]], cos[k:k + 1])
        assert np.array_equal(alone[0], want[k]) and alone_same[0] == want_same[k]
    assert np.array_equal(np.concatenate([f.features(q1[s:s + 7], q2[s:s + 7], cos[s:s + 7]) for s in range(0, len(q1), 7)]), want)
    # One call over the block size computes block by block: the same features.
    monkeypatch.setattr(pair_features, "FEATURE_BLOCK", 11)
    blocked, blocked_same = f.features_and_same(q1, q2, cos)
    assert np.array_equal(blocked, want) and np.array_equal(blocked_same, want_same)
    monkeypatch.setattr(pair_features, "CACHE_LIMIT", 5)
    fresh = fit_featurizer(train)
    assert np.array_equal(np.concatenate([fresh.features(q1[s:s + 50], q2[s:s + 50], cos[s:s + 50])
                                          for s in range(0, len(q1), 50)]), want)
    assert len(fresh._tokens) <= 5 + 100 and len(fresh._word_ngrams) <= 5 + 2000


def test_batch_features_equal_the_per_pair_definitions_on_real_text(shared_sample):
    df = pd.read_csv(shared_sample, sep="\t", keep_default_na=False, dtype=str)
    f = fit_featurizer(df.iloc[:3000])
    rest = df.iloc[3000:4500]
    q1 = rest.question1.tolist() * 2
    q2 = rest.question2.tolist() + list(np.random.default_rng(1).permutation(rest.question2.tolist()))
    cos = np.random.default_rng(2).uniform(-1, 1, len(q1))
    want, want_same = reference_features(f, q1, q2, cos)
    got, same = f.features_and_same(q1, q2, cos)
    assert np.array_equal(got, want) and np.array_equal(same, want_same)


def test_a_vectoriser_the_batch_path_does_not_reproduce_is_refused():
    f = fit_featurizer(TRAIN)
    f.tfidf.set_params(strip_accents="unicode")
    with pytest.raises(QdupError, match="strip_accents='unicode'"):
        PairFeaturizer(f.tfidf, f.bm25_idf, f.bm25_unseen_idf, f.bm25_avgdl, f.documents)


def test_pair_groups_join_pairs_that_share_a_question():
    groups = pair_groups(["a", "c", "b", "x", "e"], ["b", "d", "z", "y", "d"])
    # a-b, b-z together; c-d, e-d together; x-y alone.
    assert groups[0] == groups[2] and groups[1] == groups[4]
    assert len({groups[0], groups[1], groups[3]}) == 3


def _synthetic(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    words = ["learn", "python", "paris", "france", "money", "online", "best", "way", "city", "river"]
    q1, q2 = [], []
    for i in range(n):
        base = list(rng.choice(words, size=4, replace=False))
        other = base[:3] + ["fast"] if y[i] else list(rng.choice(words, size=4, replace=False))
        q1.append(f"what {' '.join(base)} {i}")
        q2.append(f"how {' '.join(other)} {i + n}")
    cos = np.clip(0.3 * y + rng.normal(0.4, 0.2, n), -1, 1)
    return q1, q2, cos, y


def test_out_of_fold_scores_cover_every_pair_and_beat_chance():
    q1, q2, cos, y = _synthetic()
    f = fit_featurizer(TRAIN)
    x = f.features(q1, q2, cos)
    oof = out_of_fold_scores(x, y, pair_groups(q1, q2), BoostingParams(max_iter=30), folds=4, seed=1)
    assert oof.shape == y.shape and np.isfinite(oof).all() and ((oof >= 0) & (oof <= 1)).all()
    assert np.mean(oof[y == 1]) > np.mean(oof[y == 0]) + 0.2
    again = out_of_fold_scores(x, y, pair_groups(q1, q2), BoostingParams(max_iter=30), folds=4, seed=1)
    assert np.array_equal(oof, again)  # seeded


def test_one_class_calibration_is_refused_by_field():
    x = np.zeros((10, len(FEATURE_NAMES)))
    with pytest.raises(QdupError, match=r"rerank\.enabled.*calibration has 0 and 10"):
        out_of_fold_scores(x, np.zeros(10, dtype=np.int64), np.arange(10), BoostingParams(), folds=2, seed=0)


def test_save_load_round_trip_and_refusal_of_an_altered_file(tmp_path):
    q1, q2, cos, y = _synthetic(200)
    f = fit_featurizer(TRAIN)
    x = f.features(q1, q2, cos)
    params = BoostingParams(max_iter=20)
    oof = out_of_fold_scores(x, y, pair_groups(q1, q2), params, folds=3, seed=3)
    reranker = fit_reranker(f, x, y, oof, params, seed=3)
    digests = save_reranker(reranker, tmp_path)
    assert set(digests) == set(FILES) and all(len(d) == 64 for d in digests.values())
    loaded = load_reranker(tmp_path)
    new = ["How do I learn Python quickly?", "zzz unseen words 42"]
    old = ["Best way to learn python", "capital of France"]
    assert np.array_equal(loaded.score(new, old, [0.7, 0.1]), reranker.score(new, old, [0.7, 0.1]))
    assert np.array_equal(loaded.score(q1, q2, cos), reranker.score(q1, q2, cos))
    assert loaded.threshold == reranker.threshold and 0 <= loaded.threshold <= 1
    meta = json.loads((tmp_path / "reranker.json").read_text())
    assert meta["features"] == list(FEATURE_NAMES) and meta["threshold_choice"]["chosen_on"].startswith("calibration")

    data = bytearray((tmp_path / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(QdupError, match=r"reranker_trees\.onnx: sha256 .* differs .* refusing to load"):
        load_reranker(tmp_path)
    (tmp_path / MODEL_FILE).unlink()
    with pytest.raises(QdupError, match="reranker file reranker_trees.onnx is missing"):
        load_reranker(tmp_path)


def test_a_saved_reranker_scores_with_onnx_runtime_alone(tmp_path):
    q1, q2, cos, y = _synthetic(200)
    f = fit_featurizer(TRAIN)
    x = f.features(q1, q2, cos)
    params = BoostingParams(max_iter=20)
    reranker = fit_reranker(f, x, y, out_of_fold_scores(x, y, pair_groups(q1, q2), params, folds=3, seed=3), params, seed=3)
    save_reranker(reranker, tmp_path / "new")
    # A fresh process: loading and scoring a saved reranker imports neither skops nor treelite.
    code = ("import json, sys\nfrom qdup.evaluation.reranker_io import load_reranker\n"
            "r = load_reranker(sys.argv[1])\n"
            "print(json.dumps({'skops': 'skops' in sys.modules, 'treelite': 'treelite' in sys.modules, "
            "'model': r.model is not None, "
            "'scores': r.score(json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])).tolist()}))")
    ran = subprocess.run([sys.executable, "-c", code, str(tmp_path / "new"), json.dumps(q1), json.dumps(q2), json.dumps(list(cos))],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    assert got["skops"] is False and got["treelite"] is False and got["model"] is False
    assert np.array_equal(np.asarray(got["scores"]), reranker.score(q1, q2, cos))
    # A trees file whose hash was recorded but that is not an ONNX model is refused by ONNX Runtime, in one line.
    (tmp_path / "new" / MODEL_FILE).write_bytes(b"not an onnx model")
    meta = json.loads((tmp_path / "new" / "reranker.json").read_text())
    meta["sha256"][MODEL_FILE] = hashlib.sha256(b"not an onnx model").hexdigest()
    (tmp_path / "new" / "reranker.json").write_text(json.dumps(meta))
    with pytest.raises(QdupError, match=r"reranker_trees\.onnx: ONNX Runtime refused the trees"):
        load_reranker(tmp_path / "new")


@pytest.mark.parametrize("fmt", ["qdup-reranker/1", "qdup-reranker/2"])
def test_a_reranker_of_an_older_format_still_loads_from_its_skops_file(tmp_path, fmt):
    import skops.io as sio

    q1, q2, cos, y = _synthetic(120)
    f = fit_featurizer(TRAIN)
    x = f.features(q1, q2, cos)
    params = BoostingParams(max_iter=10)
    reranker = fit_reranker(f, x, y, out_of_fold_scores(x, y, pair_groups(q1, q2), params, folds=3, seed=1), params, seed=1)
    save_reranker(reranker, tmp_path)
    # As the older formats were saved: the fitted model as a skops file (and, for /2, an .npz of its trees).
    (tmp_path / MODEL_FILE).unlink()
    (tmp_path / OLD_MODEL_FILE).write_bytes(sio.dumps(reranker.model))
    meta = json.loads((tmp_path / "reranker.json").read_text())
    meta["format"] = fmt
    del meta["sha256"][MODEL_FILE]
    meta["sha256"][OLD_MODEL_FILE] = hashlib.sha256((tmp_path / OLD_MODEL_FILE).read_bytes()).hexdigest()
    if fmt.endswith("/2"):
        (tmp_path / "reranker_trees.npz").write_bytes(b"trees")
        meta["sha256"]["reranker_trees.npz"] = hashlib.sha256(b"trees").hexdigest()
    (tmp_path / "reranker.json").write_text(json.dumps(meta))
    old = load_reranker(tmp_path)
    assert old.model is not None and np.array_equal(old.score(q1, q2, cos), reranker.score(q1, q2, cos))
    (tmp_path / OLD_MODEL_FILE).write_bytes(b"altered")
    with pytest.raises(QdupError, match=r"reranker\.skops: sha256 .* differs"):
        load_reranker(tmp_path)
    meta["format"] = "qdup-reranker/0"
    (tmp_path / "reranker.json").write_text(json.dumps(meta))
    with pytest.raises(QdupError, match=r"format 'qdup-reranker/0' is not a reranker this qdup reads .* rerun the rerank stage"):
        load_reranker(tmp_path)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, demo_tsv):
    """Real validate, splits and vocabulary stages on generated data; an untrained tiny encoder."""
    import keras

    from qdup.model.network import build_encoder
    from qdup.model.vocab import load_vectorizer
    from qdup.stages.splits import build_splits
    from qdup.stages.validate import build_validate
    from qdup.stages.vocab import build_vocab

    root = tmp_path_factory.mktemp("rerank")
    build_validate(demo_tsv, ValidateConfig(), root / "validate")
    build_splits(root / "validate" / "validated.parquet", SplitConfig(n_train=0.7, n_test=0.3), ValidateConfig(), root / "splits")
    build_vocab(root / "splits", VocabConfig(), root / "vocab")
    cfg = ModelConfig(embedding_dim=8, lstm_units=8, max_length=16)
    keras.utils.set_random_seed(0)
    build_encoder(load_vectorizer(root / "vocab" / "vocabulary.txt").vocabulary_size(), cfg).save(root / "encoder.keras")
    return root, cfg


def test_the_stage_fits_on_calibration_and_reports_all_three_on_test(small_run, tmp_path):
    from qdup.evaluation.reranker_io import load_reranker
    from qdup.stages.rerank import METRICS_FILE, build_rerank

    root, cfg = small_run
    out = tmp_path / "rerank"
    out.mkdir()
    manifest = build_rerank(root / "splits", root / "vocab" / "vocabulary.txt", root / "encoder.keras", 0.5, cfg,
                            EvalConfig(bootstrap_resamples=200), RerankConfig(max_iter=40, folds=3), 5, out)
    metrics = json.loads((out / METRICS_FILE).read_text())
    rr, enc, base = metrics["reranker"], metrics["encoder"], metrics["baseline"]
    assert rr["fitted_on"] == "calibration" and rr["threshold"]["chosen_on"] == "calibration (out-of-fold)"
    assert rr["calibration_pairs"] == len(pd.read_parquet(root / "splits" / "calibration.parquet"))
    # The lexical features carry the generated paraphrases; an untrained encoder carries little.
    assert rr["test"]["ranking"]["roc_auc"] > enc["test"]["ranking"]["roc_auc"] + 0.05
    assert rr["test"]["ranking"]["roc_auc"] > 0.65 and base["test"]["ranking"]["roc_auc"] > 0.6
    assert metrics["test"]["rows"] == len(pd.read_parquet(root / "splits" / "test.parquet"))
    for name in ("reranker", "encoder", "baseline"):
        iv = metrics[name]["intervals"]["metrics"]["roc_auc"]
        assert iv["low"] <= metrics[name]["test"]["ranking"]["roc_auc"] <= iv["high"]
    diff = metrics["differences"]["reranker_minus_encoder"]
    assert diff["metric"] == "roc_auc" and diff["difference"] == pytest.approx(
        rr["test"]["ranking"]["roc_auc"] - enc["test"]["ranking"]["roc_auc"])
    assert set(metrics["differences"]) == {"reranker_minus_encoder", "reranker_minus_baseline"}
    scores = pd.read_parquet(out / manifest["scores_file"])
    loaded = load_reranker(out / manifest["reranker_dir"])
    test = pd.read_parquet(root / "splits" / "test.parquet")
    again = loaded.score(test.question1.tolist()[:20], test.question2.tolist()[:20], scores.encoder.to_numpy()[:20])
    assert np.allclose(again, scores.reranker.to_numpy()[:20], atol=1e-12)
    assert manifest["metrics"]["reranker"]["roc_auc"] == rr["test"]["ranking"]["roc_auc"]


def test_a_question_and_itself_score_one_and_monotonic_trees_never_fall_with_similarity():
    q1, q2, cos, y = _synthetic(300, seed=4)
    f = fit_featurizer(TRAIN)
    x = f.features(q1, q2, cos)
    params = BoostingParams(max_iter=40, monotonic=True)
    reranker = fit_reranker(f, x, y, out_of_fold_scores(x, y, pair_groups(q1, q2), params, 3, 0), params, 0)
    assert reranker.score(["How do I learn Python?", "a b"], ["how do I learn python", "b a"], [-1.0, -1.0])[0] == 1.0
    assert reranker.score(["a b"], ["b a"], [-1.0])[0] < 1.0
    for name in ("encoder_cosine", "char_tfidf_cosine", "word_jaccard"):
        higher = x.copy()
        higher[:, FEATURE_NAMES.index(name)] += 0.3
        assert (reranker.score_features(higher) >= reranker.score_features(x) - 1e-12).all()


def _onnx_splits(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(feature, threshold) of every split node of the trees' ONNX model, read with onnx's public API."""
    import onnx
    from onnx import numpy_helper

    (node,) = [n for n in onnx.load_from_string(data).graph.node if n.op_type == "TreeEnsemble"]
    attrs = {a.name: a for a in node.attribute}
    return np.asarray(attrs["nodes_featureids"].ints), numpy_helper.to_array(attrs["nodes_splits"].t)


def test_the_onnx_trees_score_like_scikit_learn_at_any_batch_size():
    q1, q2, cos, y = _synthetic(300, seed=6)
    f = fit_featurizer(TRAIN)
    x = f.features(q1, q2, cos)
    for params in (BoostingParams(max_iter=40), BoostingParams(max_iter=25, max_leaf_nodes=31, monotonic=True)):
        reranker = fit_reranker(f, x, y, out_of_fold_scores(x, y, pair_groups(q1, q2), params, 3, 0), params, 0)
        features, thresholds = _onnx_splits(reranker.trees.data)
        keep = np.isfinite(thresholds)
        features, thresholds = features[keep], thresholds[keep]
        assert len(thresholds) > 50
        # Rows at the split thresholds themselves (<= goes left), just above them, missing values, the fitted rows:
        # a row sent the wrong way at any split would move its score by a leaf value, far more than 1e-12.
        rng = np.random.default_rng(0)
        at = x[np.arange(len(thresholds)) % len(x)].copy()
        at[np.arange(len(thresholds)), features] = thresholds
        above = np.nextafter(at, np.inf)
        missing = x[:40].copy()
        missing[rng.random(missing.shape) < 0.3] = np.nan
        for rows in (at, above, missing, x):
            np.testing.assert_allclose(reranker.trees.decision_function(rows), reranker.model.decision_function(rows),
                                       rtol=0, atol=1e-12)
            np.testing.assert_allclose(reranker.score_features(rows), reranker.model.predict_proba(rows)[:, 1],
                                       rtol=0, atol=1e-12)
        # One row at a time gives the batch's scores exactly.
        one_by_one = np.concatenate([reranker.score_features(x[i : i + 1]) for i in range(20)])
        assert np.array_equal(one_by_one, reranker.score_features(x[:20]))
