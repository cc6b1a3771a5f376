"""The encoding cache: per-version keys, counts, the byte bound, and answers equal to the uncached model's."""

from __future__ import annotations

import numpy as np
import pytest

from qdup.serving.cache import ENTRY_OVERHEAD, EncodingCache, cached_cosines
from qdup.serving.predictor import load_inference
from tests.serving.conftest import TEXTS

DIM = 4


class CountingEncoder:
    """A deterministic unit encoding of each text, counting the texts it was asked for."""

    def __init__(self, salt: int = 0):
        self.salt, self.asked = salt, []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.asked.extend(texts)
        rows = [np.random.default_rng([self.salt, *map(ord, t)]).normal(size=DIM) for t in texts]
        out = np.asarray(rows, dtype=np.float32).reshape(len(texts), DIM)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_hits_and_misses_count_distinct_questions_and_only_misses_are_encoded():
    cache, enc = EncodingCache(1 << 20), CountingEncoder()
    first = cache.encode("v1", ["a", "b"], enc)
    assert enc.asked == ["a", "b"] and cache.stats().hits == 0 and cache.stats().misses == 2
    again = cache.encode("v1", ["b", "c", "a"], enc)
    assert enc.asked == ["a", "b", "c"]  # only "c" was encoded
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 3, 3)
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_array_equal(again[2], first[0])
    assert stats.as_dict()["hit_rate"] == pytest.approx(0.4)


def test_a_version_never_gets_another_versions_vectors():
    cache, enc1, enc2 = EncodingCache(1 << 20), CountingEncoder(1), CountingEncoder(2)
    v1 = cache.encode("v1", ["a"], enc1)
    v2 = cache.encode("v2", ["a"], enc2)
    assert enc2.asked == ["a"] and cache.stats().misses == 2 and cache.stats().hits == 0
    assert not np.allclose(v1, v2)
    np.testing.assert_array_equal(cache.encode("v1", ["a"], enc1), v1)
    np.testing.assert_array_equal(cache.encode("v2", ["a"], enc2), v2)
    assert cache.stats().hits == 2


def test_the_byte_bound_is_kept_least_recently_used_out_first():
    texts = [f"question {i:02d}" for i in range(10)]
    one = DIM * 4 + len(texts[0]) + 49 + ENTRY_OVERHEAD  # vector + str object (ASCII: 49 + length) + bookkeeping
    cache, enc = EncodingCache(4 * one), CountingEncoder()
    cache.encode("v1", texts[:4], enc)
    assert cache.stats().entries == 4 and cache.stats().bytes == 4 * one
    cache.encode("v1", [texts[0]], enc)  # texts[0] is now the most recently used
    cache.encode("v1", texts[4:6], enc)  # two more: the two least recently used (1, 2) leave
    stats = cache.stats()
    assert stats.entries == 4 and stats.bytes <= 4 * one and stats.evictions == 2
    enc.asked.clear()
    cache.encode("v1", [texts[0], texts[3], texts[1]], enc)
    assert enc.asked == [texts[1]]
    assert cache.stats().bytes <= cache.max_bytes


def test_zero_bytes_disables_it():
    cache, enc = EncodingCache(0), CountingEncoder()
    cache.encode("v1", ["a"], enc)
    cache.encode("v1", ["a"], enc)
    assert enc.asked == ["a", "a"] and cache.stats().entries == 0 and not cache.enabled
    assert cache.stats().as_dict()["enabled"] is False


def test_cached_cosines_equal_the_predictors_similarity(tiny_exports):
    predictor = load_inference(tiny_exports["v1"])
    q1 = [TEXTS[0], TEXTS[2], TEXTS[4], "zzz unknown words", TEXTS[0]]
    q2 = [TEXTS[1], TEXTS[3], TEXTS[0], TEXTS[1], TEXTS[0]]
    want = predictor.similarity(q1, q2)
    cache = EncodingCache(1 << 20)
    asked: list[str] = []

    def encode(texts):
        asked.extend(texts)
        return predictor.encode(texts)

    cold = cached_cosines(cache, "v1", encode, q1, q2)
    assert cold.dtype == np.float32 and np.all(np.abs(cold) <= 1.0)
    np.testing.assert_allclose(cold, want, atol=1e-6)
    assert sorted(asked) == sorted(set(q1 + q2))  # each distinct question encoded once
    warm = cached_cosines(cache, "v1", encode, q1, q2)
    np.testing.assert_array_equal(warm, cold)
    assert len(asked) == len(set(q1 + q2)) and cache.stats().hits == len(set(q1 + q2))
