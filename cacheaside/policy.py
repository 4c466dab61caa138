"""The read policy of one call site: what a lookup's entry means, and what a result is stored for.

Pure: no I/O, no clock of its own, no logging. This is the only place that decides
whether an entry is served as a hit, served stale while it is refreshed, kept as a
fallback for an error, or missed, and where the freshness rule is written (``late``):
the stores judge "fresh or not" with ``fresh``, and ``RedisStore``'s scripts with the
same rule on the server's clock (``stores.redis_scripts``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

from ._settings import settings
from ._types import MAX_SECONDS, Entry

__all__ = ["EARLY", "FALLBACK", "HIT", "MISS", "STALE", "ReadPolicy", "fresh", "late"]

#: ``decide`` verdicts (compared by identity).
#: Serve the value.
HIT: Final = "hit"
#: Serve the value and recompute it early, in the background (XFetch).
EARLY: Final = "early"
#: Serve the stale value and refresh it in the background (stale-while-revalidate).
STALE: Final = "stale"
#: Compute; serve the stale value instead if the computation raises (stale-if-error).
FALLBACK: Final = "fallback"
#: Compute.
MISS: Final = "miss"


def late(entry: Entry, now: float) -> float:
    """Seconds ``entry`` is past its freshness at ``now``; negative while it is fresh. The rule."""
    return now - entry.stored_at - entry.ttl


def fresh(entry: Entry, now: float) -> bool:
    """Whether ``entry`` can be served as a hit at ``now``."""
    return late(entry, now) < 0


class ReadPolicy:
    """Freshness windows, early refresh and what gets stored, for one decorated function.

    Args:
        ttl: seconds, a ``ttl(result) -> seconds`` callable, or None for the configured default.
        cache_none: store ``None`` results.
        unless: ``unless(result) -> True`` keeps that result out of the store.
        stale_while_revalidate: seconds past ttl an entry is served stale while it is refreshed.
        stale_if_error: seconds past ttl an entry replaces an exception of the function.
        early_refresh: XFetch's beta, or None.
        jitter: each stored ttl is shortened by a random share of up to this fraction.
        random: a uniform [0, 1) source (injectable for tests).
    """

    __slots__ = ("cache_none", "early_refresh", "grace", "jitter", "random", "stale_if_error",
                 "stale_while_revalidate", "ttl", "unless")

    def __init__(
        self,
        *,
        ttl: float | Callable[[Any], Any] | None,
        cache_none: bool = True,
        unless: Callable[[Any], bool] | None = None,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        early_refresh: float | None = None,
        jitter: float = 0.0,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.ttl = ttl
        self.cache_none = cache_none
        self.unless = unless
        self.stale_while_revalidate = stale_while_revalidate
        self.stale_if_error = stale_if_error
        self.early_refresh = early_refresh
        self.jitter = jitter
        self.random = random
        #: Seconds past ttl an entry is kept in the store, for stale serving.
        self.grace = max(stale_while_revalidate, stale_if_error)

    def decide(self, entry: Entry | None, now: float) -> str:
        """What to do with ``entry`` (what a lookup found, or None) at ``now``: a verdict above."""
        if entry is None:
            return MISS
        late = now - entry.stored_at - entry.ttl  # late(entry, now), spelt out: one frame less per hit
        if late < 0:
            beta = self.early_refresh
            # XFetch (Vattani et al., VLDB 2015): -log(U) for U uniform on (0, 1] is Exp(1).
            if beta is not None and entry.delta > 0 and -entry.delta * beta * math.log(1.0 - self.random()) >= -late:
                return EARLY
            return HIT
        if late < self.stale_while_revalidate:
            return STALE
        if late <= self.stale_if_error:
            return FALLBACK
        return MISS

    def keep_for(self, value: Any) -> float:
        """Seconds to store ``value`` as fresh, jitter applied; 0 stores nothing (``cache_none``, ``unless``,
        ``ttl(result) <= 0``).

        Raises:
            TypeError, ValueError: a ``ttl`` callable returned no number of seconds (or
                ``unless``/``ttl`` raised): the caller stores nothing and reports it.
        """
        if value is None and not self.cache_none:
            return 0.0
        if self.unless is not None and self.unless(value):
            return 0.0
        seconds = self._seconds(value)
        if self.jitter and seconds > 0:
            seconds -= seconds * self.jitter * self.random()  # entries written together expire apart
        return seconds

    def _seconds(self, value: Any) -> float:
        ttl = self.ttl
        if type(ttl) is float:
            return ttl
        if ttl is None:
            return settings.ttl
        assert callable(ttl)
        seconds = ttl(value)
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"ttl(result) must return seconds (int, float or timedelta), got {type(seconds).__name__}")
        if math.isnan(seconds):
            raise ValueError("ttl(result) must return a number of seconds, got nan")
        if seconds <= 0:
            return 0.0
        if seconds > MAX_SECONDS:
            raise ValueError(f"ttl(result) must return a finite number of seconds up to {MAX_SECONDS:.0e}")
        return float(seconds)
