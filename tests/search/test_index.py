"""Question index: exact search against brute force, IVF recall, save/load integrity, refused corpora."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qdup.config import SearchConfig
from qdup.errors import QdupError
from qdup.search.index import (
    MANIFEST,
    build_index,
    exact_search,
    load_index,
    query_block_rows,
    recall_against_exact,
    sample_queries,
)


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make(n: int = 300, d: int = 16, ann: str = "exact", cfg: SearchConfig | None = None, seed: int = 0):
    vecs = unit(n, d, seed)
    texts = [f"question number {i}?" for i in range(n)]
    return build_index(np.arange(100, 100 + n), texts, vecs, model_version="v1", corpus={"source": "test"}, ann=ann,
                       seed=seed, cfg=cfg)


def brute(corpus, queries, k):
    s = queries @ corpus.T
    order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s), axis=1)[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def test_exact_search_equals_brute_force_across_block_sizes():
    corpus, queries = unit(257, 8, 1), unit(41, 8, 2)
    want_idx, want_scores = brute(corpus, queries, 7)
    for block in (1, 257, 257 * 5 + 3, 10**9):
        idx, scores = exact_search(corpus, queries, 7, block_elements=block)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-6)


def test_exact_search_excludes_self_and_pads_short_corpora():
    corpus = unit(5, 4, 3)
    idx, scores = exact_search(corpus, corpus, 6, exclude=np.arange(5))
    assert idx.shape == (5, 6)
    assert not (idx[:, :4] == np.arange(5)[:, None]).any()
    assert (idx[:, 4:] == -1).all() and np.isneginf(scores[:, 4:]).all()


def test_block_rows_bound_the_scores_held_at_once():
    for size, budget in ((1000, 10_000), (537_933, 16 * 1024 * 1024), (10, 5)):
        rows = query_block_rows(size, budget)
        assert rows >= 1
        assert rows * size <= max(budget, size)


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 topics, as encodings of questions are (isotropic noise is IVF's worst case)."""
    rng = np.random.default_rng(seed)
    centres = unit(50, d, seed + 1)
    x = centres[rng.integers(0, 50, n)] + 0.15 * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_ivf_recall_at_10_is_at_least_0_95():
    vecs = clustered(4000, 32, 0)
    texts = [f"q{i}?" for i in range(len(vecs))]
    index = build_index(np.arange(len(vecs)), texts, vecs, model_version="v", corpus={}, ann="ivf", seed=0,
                        cfg=SearchConfig(threads=1))
    assert index.backend == "ivf" and index.graph.nlist == 4000 // 39
    result = recall_against_exact(index, sample_queries(index, 200, seed=1), 10)
    assert result["recall"] >= 0.95, result
    # The IVF path returns exact cosines for what it finds, best first.
    idx, scores = index.search(index.embeddings[:3], 5)
    np.testing.assert_allclose(scores, np.einsum("nkd,nd->nk", index.embeddings[idx], index.embeddings[:3]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    # Scanning every cell is exact search.
    full = build_index(np.arange(len(vecs)), texts, vecs, model_version="v", corpus={}, ann="ivf", seed=0,
                       cfg=SearchConfig(threads=1, nprobe=10_000))
    assert recall_against_exact(full, sample_queries(full, 100, seed=2), 10)["recall"] == 1.0


def test_auto_picks_exact_below_the_threshold_and_ivf_above():
    assert make(n=50, ann="auto", cfg=SearchConfig(exact_max=50)).backend == "exact"
    assert make(n=51, ann="auto", cfg=SearchConfig(exact_max=50, threads=1)).backend == "ivf"


@pytest.mark.parametrize("ann", ["exact", "ivf"])
def test_save_load_round_trip(tmp_path, ann):
    index = make(n=400, ann=ann, cfg=SearchConfig(threads=1))
    recall_against_exact(index, sample_queries(index, 20, seed=2), 5)
    manifest = index.save(tmp_path / "idx")
    lexical = {f"lexical_bm25.{part}" for part in ("data.npy", "indices.npy", "indptr.npy", "vocab.json", "params.json")}
    assert set(manifest["files"]) == ({"embeddings.npy", "questions.parquet"} | lexical
                                      | ({"ivf.faiss"} if ann == "ivf" else set()))
    back = load_index(tmp_path / "idx", expected_model_version="v1")
    for query in index.texts[:5]:
        np.testing.assert_array_equal(back.lexical.scores(query), index.lexical.scores(query))
    assert back.backend == ann and back.texts == index.texts and back.corpus == {"source": "test"}
    np.testing.assert_array_equal(back.ids, index.ids)
    np.testing.assert_array_equal(back.embeddings, index.embeddings)
    assert back.recall["k"] == 5
    q = unit(9, 16, 5)
    for a, b in zip(back.search(q, 5), index.search(q, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary directory left


def test_string_ids_round_trip(tmp_path):
    vecs = unit(3, 4, 0)
    index = build_index(["a", "b", "c"], ["x?", "y?", "z?"], vecs, model_version="v", corpus={}, seed=0)
    index.save(tmp_path / "i")
    assert load_index(tmp_path / "i").ids.tolist() == ["a", "b", "c"]


def test_tampered_file_is_refused(tmp_path):
    make(n=20).save(tmp_path / "idx")
    emb = np.load(tmp_path / "idx" / "embeddings.npy")
    emb[0, 0] += 0.5
    np.save(tmp_path / "idx" / "embeddings.npy", emb)
    with pytest.raises(QdupError, match="embeddings.npy: sha256 differs"):
        load_index(tmp_path / "idx")


def test_index_of_another_model_is_refused(tmp_path):
    make(n=20).save(tmp_path / "idx")
    with pytest.raises(QdupError, match="built by model 'v1', not 'v2'"):
        load_index(tmp_path / "idx", expected_model_version="v2")
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert manifest["model_version"] == "v1" and manifest["count"] == 20 and manifest["dims"] == 16


def test_existing_directory_is_not_overwritten(tmp_path):
    (tmp_path / "idx").mkdir()
    with pytest.raises(QdupError, match="already exists"):
        make(n=5).save(tmp_path / "idx")


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["a?", "  ", "c?"], "corpus row 1 \\(id 11\\): empty question"),
        (["a?", "b?", "a?"], "corpus row 2 \\(id 12\\): question duplicates row 0"),
    ],
)
def test_empty_or_duplicated_questions_are_refused(texts, message):
    with pytest.raises(QdupError, match=message):
        build_index([10, 11, 12], texts, unit(3, 4, 0), model_version="v", corpus={}, seed=0)


def test_other_bad_corpora_are_refused():
    with pytest.raises(QdupError, match="no questions"):
        build_index([], [], np.zeros((0, 4), np.float32), model_version="v", corpus={}, seed=0)
    with pytest.raises(QdupError, match="id 1 is used twice"):
        build_index([1, 1], ["a?", "b?"], unit(2, 4, 0), model_version="v", corpus={}, seed=0)
    with pytest.raises(QdupError, match="expected unit vectors"):
        build_index([1, 2], ["a?", "b?"], 2 * unit(2, 4, 0), model_version="v", corpus={}, seed=0)
    with pytest.raises(QdupError, match="4 dimensions, the index has 16"):
        make(n=5).search(unit(1, 4, 0), 3)
