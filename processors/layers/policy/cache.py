"""A bounded, least-recently-used map of decisions, with hit and miss counts.

One per compiled bundle (:class:`~processors.layers.policy.engine.PolicyEngine`): a new
bundle is a new engine and so an empty cache. Its keys come from :mod:`.projection`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

__all__ = ["DecisionCache", "CacheStats"]

V = TypeVar("V")
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    maxsize: int

    @property
    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


class DecisionCache(Generic[V]):
    """At most ``maxsize`` entries; the least recently used goes first. Safe to share
    between threads (one lock around each lookup or insertion)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"a decision cache holds at least 1 entry, not {maxsize}")
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._entries.get(key, _MISSING)
            if value is _MISSING:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return value  # type: ignore[return-value]  # not _MISSING: a stored V

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._entries), self.maxsize)

    def __len__(self) -> int:
        return len(self._entries)
