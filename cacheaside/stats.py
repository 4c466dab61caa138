"""Per-call-site counters and their read-only snapshot, ``CacheStats``."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

__all__ = ["LOAD_BUCKETS", "CacheStats", "Counters"]


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What one decorated function saw in this process.

    Attributes:
        hits: fresh values served from the store.
        misses: calls that found no usable value and ran (or joined) the function.
        stale: stale values served (stale-while-revalidate, stale-if-error).
        errors: store failures survived (the call carried on without the cache).
        bypassed: calls that skipped the store because its circuit breaker was open.
        refresh_errors: background refreshes (stale-while-revalidate, early refresh) whose
            function raised; the value they were to replace stays in place.
    """

    hits: int = 0
    misses: int = 0
    stale: int = 0
    errors: int = 0
    bypassed: int = 0
    refresh_errors: int = 0


#: Upper bounds (seconds) of the computation-time histogram's buckets (Prometheus' defaults), then +Inf.
LOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class Counters:
    """The live counters behind ``f.stats()`` and the metrics (``cacheaside.metrics``), read when asked.

    Plain ints: an increment is one bytecode sequence with no call in it, which
    the GIL does not interrupt on CPython 3.10 to 3.13 (on a free-threaded build counts
    may come out slightly low under contention). Beyond ``CacheStats``: lookups that failed
    (``get_errors``, also counted in ``misses`` and ``errors``), values stored (``fills``), key
    evictions asked of this function's entries (``evictions``: ``invalidate``, writers' targets),
    ``clears``, and computations (``loads``, ``load_failures``, their seconds and histogram).
    """

    __slots__ = ("bypassed", "clears", "errors", "evictions", "fills", "get_errors", "hits", "load_buckets",
                 "load_failures", "load_seconds", "loads", "misses", "refresh_errors", "stale")

    def __init__(self) -> None:
        self.hits = self.misses = self.stale = self.errors = self.bypassed = self.refresh_errors = 0
        self.get_errors = self.fills = self.evictions = self.clears = self.loads = self.load_failures = 0
        self.load_seconds = 0.0
        self.load_buckets = [0] * (len(LOAD_BUCKETS) + 1)  # per bucket (not cumulative), the last +Inf

    def add(self, other: Counters) -> None:
        """Add ``other``'s counts to these (a dropped call site's, kept for the metrics)."""
        for name in self.__slots__:
            if name == "load_buckets":
                self.load_buckets = [a + b for a, b in zip(self.load_buckets, other.load_buckets, strict=True)]
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def loaded(self, seconds: float, failed: bool) -> None:
        """A computation of the function ran for ``seconds`` (and raised, if ``failed``)."""
        self.loads += 1
        if failed:
            self.load_failures += 1
        self.load_seconds += seconds
        self.load_buckets[bisect.bisect_left(LOAD_BUCKETS, seconds)] += 1

    def snapshot(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self.stale, self.errors, self.bypassed, self.refresh_errors)
