"""Paraphrase mining: chunked equals unchunked equals brute force, each pair once, bounded chunks, atomic Parquet."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from qdup.config import SearchConfig
from qdup.errors import QdupError
from qdup.search.index import build_index
from qdup.search.mine import chunk_bounds, merge_mined, mine, mine_chunk


def corpus(n: int = 120, d: int = 8, seed: int = 4, cfg: SearchConfig | None = None, ann: str = "exact"):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return build_index(np.arange(n) * 10, [f"q{i}?" for i in range(n)], x, model_version="v", corpus={}, ann=ann, seed=0,
                       cfg=cfg)


def brute_pairs(index, k, threshold):
    s = index.embeddings @ index.embeddings.T
    np.fill_diagonal(s, -np.inf)
    pairs = set()
    for i in range(len(s)):
        cols = np.lexsort((np.arange(len(s)), -s[i]))[:k] if k else np.arange(len(s))
        for j in cols:
            if threshold is None or s[i, j] >= threshold:
                pairs.add((min(i, j) * 10, max(i, j) * 10))
    return pairs


def as_pairs(table):
    return list(zip(table.column("id1").to_pylist(), table.column("id2").to_pylist(), strict=True))


@pytest.mark.parametrize(("k", "threshold"), [(5, None), (3, 0.3), (None, 0.5)])
def test_chunked_equals_unchunked_equals_brute_force(k, threshold):
    index = corpus(cfg=SearchConfig(block_elements=500))
    want = brute_pairs(index, k, threshold)
    assert want
    results = [mine(index, k=k, threshold=threshold, chunk_size=size) for size in (7, 50, 1000)]
    for table in results:
        got = as_pairs(table)
        assert len(got) == len(set(got))  # each pair once
        assert all(a < b for a, b in got)  # as (i < j)
        assert set(got) == want
        # Matrix products blocked differently may round the last float32 bit differently.
        assert as_pairs(table) == as_pairs(results[0])
        np.testing.assert_allclose(table.column("similarity").to_numpy(), results[0].column("similarity").to_numpy(), atol=1e-6)
    sims = results[0].column("similarity").to_numpy()
    assert (np.diff(sims) <= 0).all()
    q1 = results[0].column("question1").to_pylist()
    assert q1[0] == f"q{results[0].column('id1')[0].as_py() // 10}?"


def test_chunks_cover_the_corpus_and_stay_within_their_size():
    bounds = chunk_bounds(1001, 100)
    assert bounds[0] == (0, 100) and bounds[-1] == (1000, 1001) and len(bounds) == 11
    assert all(stop - start <= 100 for start, stop in bounds)
    index = corpus()
    t = mine_chunk(index, 10, 20, 4, None)
    assert t.num_rows == 10 * 4  # k per question of this chunk, nothing from elsewhere
    assert set(t.column("i").to_pylist()) | set(t.column("j").to_pylist()) >= set(range(10, 20))


def test_merge_drops_pairs_found_from_both_sides():
    index = corpus(n=10)
    both = [mine_chunk(index, 0, 10, 9, None)]
    assert both[0].num_rows == 90
    assert merge_mined(both, index).num_rows == 45


def test_ivf_mining_finds_the_exact_pairs():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 16)).astype(np.float32)
    x = centres[rng.integers(0, 40, 3000)] + 0.3 * rng.standard_normal((3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = build_index(np.arange(3000) * 10, [f"q{i}?" for i in range(3000)], x, model_version="v", corpus={}, ann="ivf",
                        seed=0, cfg=SearchConfig(threads=1))
    approx = set(as_pairs(mine(index, k=5)))
    exact = brute_pairs(index, 5, None)
    assert len(approx & exact) / len(exact) >= 0.95


def test_written_atomically(tmp_path):
    out = tmp_path / "m" / "pairs.parquet"
    table = mine(corpus(), k=2, out=out)
    assert pq.read_table(out).equals(table)
    assert pq.read_schema(out).names == ["id1", "id2", "question1", "question2", "similarity"]
    assert [p.name for p in out.parent.iterdir()] == ["pairs.parquet"]


def test_bad_requests_are_refused():
    index = corpus(n=5)
    with pytest.raises(QdupError, match="needs k"):
        mine(index, k=None, threshold=None)
    with pytest.raises(QdupError, match="outside"):
        mine_chunk(index, 3, 9, 2, None)
    with pytest.raises(QdupError, match="threshold must be"):
        mine(index, k=2, threshold=1.5)
