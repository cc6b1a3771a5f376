"""The server's encoding cache: question text -> unit vector, per model version, LRU within a byte bound."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

# What one entry costs beyond its text and vector: the cache's own dict and order links, the key tuple.
ENTRY_OVERHEAD = 200


@dataclass(frozen=True)
class CacheStats:
    """Lookups of distinct questions (hits, misses), entries held and their bytes, the bound."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int

    def as_dict(self) -> dict[str, int | float | None]:
        lookups = self.hits + self.misses
        return {
            "enabled": self.max_bytes > 0,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / lookups, 4) if lookups else None,
            "evictions": self.evictions,
            "entries": self.entries,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
        }


class _Entries(LRUCache):
    """cachetools' LRU bounded by getsizeof, counting what it evicts."""

    evicted = 0

    def popitem(self):
        self.evicted += 1
        return super().popitem()


def _entry_size(value: tuple[np.ndarray, int]) -> int:
    vector, text_bytes = value
    return vector.nbytes + text_bytes + ENTRY_OVERHEAD


class EncodingCache:
    """Unit encodings of questions, keyed by (model version, text): a version never gets another's vectors.

    Bounded by `max_bytes` (vector, text and bookkeeping of each entry), least recently used out
    first; entries of a version no longer served are never looked up again and age out the same way.
    `max_bytes` 0 disables it (every lookup is a miss and nothing is kept). Safe to share between threads.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries = _Entries(maxsize=max(self.max_bytes, 1), getsizeof=_entry_size)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def encode(self, version: str, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Encodings (n, d) float32 of `texts` (distinct), from the cache where held, else from `encode(missing)`.

        `encode` must be the served `version`'s encoder; its rows are kept for the next lookups.
        """
        texts = list(texts)
        found: dict[int, np.ndarray] = {}
        with self._lock:
            if self.enabled:
                for i, text in enumerate(texts):
                    entry = self._entries.get((version, text))
                    if entry is not None:
                        found[i] = entry[0]
            self._hits += len(found)
            self._misses += len(texts) - len(found)
        missing = [i for i in range(len(texts)) if i not in found]
        computed = encode([texts[i] for i in missing]) if missing else None
        if computed is not None and computed.shape[0] != len(missing):
            raise ValueError(f"the encoder returned {computed.shape[0]} rows for {len(missing)} questions")
        if found:
            width = next(iter(found.values())).shape[0]
        else:
            assert computed is not None
            width = computed.shape[1]
        out = np.empty((len(texts), width), dtype=np.float32)
        for i, vector in found.items():
            out[i] = vector
        if computed is not None:
            out[missing] = computed
            if self.enabled:
                with self._lock:
                    for row, i in enumerate(missing):
                        # A copy: a row view would keep the whole batch's array alive beyond the byte bound.
                        value = (np.array(computed[row], dtype=np.float32, copy=True), sys.getsizeof(texts[i]))
                        if _entry_size(value) <= self.max_bytes:
                            self._entries[(version, texts[i])] = value
        return out

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._entries.evicted, len(self._entries),
                              int(self._entries.currsize) if self.enabled else 0, self.max_bytes)


def cached_cosines(
    cache: EncodingCache, version: str, encode: Callable[[list[str]], np.ndarray], q1: Sequence[str], q2: Sequence[str]
) -> np.ndarray:
    """Cosine similarity (float32, in [-1, 1]) of each pair, each distinct question encoded once (or found in the cache)."""
    if len(q1) != len(q2):
        raise ValueError(f"question lists differ in length: {len(q1)} question1 vs {len(q2)} question2")
    slot: dict[str, int] = {}
    i1 = np.fromiter((slot.setdefault(q, len(slot)) for q in q1), dtype=np.int64, count=len(q1))
    i2 = np.fromiter((slot.setdefault(q, len(slot)) for q in q2), dtype=np.int64, count=len(q2))
    enc = cache.encode(version, list(slot), encode)
    # Unit vectors in float32 can give a dot product a rounding step past 1; a cosine cannot.
    return np.clip(np.einsum("ij,ij->i", enc[i1], enc[i2]), -1.0, 1.0).astype(np.float32)
