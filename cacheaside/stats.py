"""Per-call-site counters and their read-only snapshot, ``CacheStats``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CacheStats", "Counters"]


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


class Counters:
    """The live counters behind ``f.stats()``.

    Plain ints: an increment is one bytecode sequence with no call in it, which
    the GIL does not interrupt on CPython 3.10 to 3.13 (on a free-threaded build counts
    may come out slightly low under contention).
    """

    __slots__ = ("bypassed", "errors", "hits", "misses", "refresh_errors", "stale")

    def __init__(self) -> None:
        self.hits = self.misses = self.stale = self.errors = self.bypassed = self.refresh_errors = 0

    def snapshot(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self.stale, self.errors, self.bypassed, self.refresh_errors)
