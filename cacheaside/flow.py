"""The read and refresh flows: every policy decision of a cached call, with no I/O.

A flow is a generator. It yields operations and receives their results; the
sync driver (``drivers.run``) and the async one (``drivers.arun``) carry them
out with blocking calls or awaits. Only the drivers are written twice.

Operations::

    (STORE, name, args)   call store.<name>(*args) (or a<name> on async stores);
                          receive its result, or a ``Failure`` if it raised
    (CALL,)               run the wrapped function; receive an ``Outcome``
    (JOIN, flight)        wait for another caller's computation; receive its ``Outcome``
    (SPAWN, make_flow)    run ``make_flow()`` in the background (a thread or a task)

A fresh hit never enters a flow: the drivers serve it inline (see ``fresh``).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import warnings
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any

from ._settings import settings
from ._types import CORRUPT, Entry, Lease, to_seconds
from .exceptions import CacheWarning, SerializationError
from .keys import KeyBuilder
from .stats import Counters

__all__ = ["CALL", "JOIN", "SPAWN", "STORE", "CallSite", "Failure", "Flight", "Outcome", "read", "refresh"]

logger = logging.getLogger("cacheaside")

STORE, CALL, JOIN, SPAWN = range(4)

Op = tuple[Any, ...]
Flow = Generator[Op, Any, "Outcome"]


class Outcome:
    """What a computation gave: a value, or the exception it raised."""

    __slots__ = ("abandoned", "exc", "value")

    def __init__(self, value: Any = None, exc: BaseException | None = None, abandoned: bool = False) -> None:
        self.value = value
        self.exc = exc
        #: The leader stopped without a result (cancelled, interrupted): joiners compute themselves.
        self.abandoned = abandoned

    def unwrap(self) -> Any:
        if self.exc is not None:
            raise self.exc
        return self.value


class Failure:
    """A store operation that raised."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Flight:
    """One computation that concurrent misses of a key (same lease token) share.

    Sync flights signal a ``threading.Event``, made when the first joiner arrives
    (most flights have none); async flights resolve an ``asyncio.Future`` of the
    leader's event loop.
    """

    __slots__ = ("event", "future", "outcome")

    def __init__(self, loop: Any = None) -> None:
        self.outcome: Outcome | None = None
        self.event: threading.Event | None = None
        self.future = None if loop is None else loop.create_future()

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if self.future is not None:
            if not self.future.done():
                self.future.set_result(outcome)
        elif self.event is not None:
            self.event.set()


class _Flights:
    """The process's in-flight computations, keyed by (store, key, lease token, event loop).

    Keying by the lease token is what keeps a call that starts after an eviction
    from joining a computation that started before it: the eviction revoked the
    token, so the new call gets a new one and starts its own flight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Flight] = {}

    def lead_or_join(self, fkey: Hashable, loop: Any) -> tuple[Flight, bool]:
        with self._lock:
            flight = self._flights.get(fkey)
            if flight is not None:
                if flight.future is None and flight.event is None:
                    # Under the lock the leader unregisters with before finishing: it will see this.
                    flight.event = threading.Event()
                return flight, False
            flight = self._flights[fkey] = Flight(loop)
            return flight, True

    def finish(self, fkey: Hashable, flight: Flight, outcome: Outcome) -> None:
        # Unregister first: a caller arriving now must not join a finished flight.
        with self._lock:
            if self._flights.get(fkey) is flight:
                del self._flights[fkey]
        flight.finish(outcome)


flights = _Flights()


@dataclass(eq=False)
class CallSite:
    """The policy of one decorated read function, and its counters."""

    name: str
    keys: KeyBuilder
    ttl: float | Callable[[Any], float] | None
    cache_none: bool = True
    unless: Callable[[Any], bool] | None = None
    tags: tuple[str, ...] = ()
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    early_refresh: float | None = None
    counters: Counters = field(default_factory=Counters)
    #: A store error was logged and no success has followed yet (log state changes, not calls).
    failing: bool = False
    _warned: bool = False
    _corrupt_seen: bool = False

    @property
    def grace(self) -> float:
        return max(self.stale_while_revalidate, self.stale_if_error)

    def ttl_for(self, value: Any) -> float:
        ttl = self.ttl
        if isinstance(ttl, float):
            return ttl
        if ttl is None:
            return settings.ttl
        if callable(ttl):
            return to_seconds(ttl(value), owner=self.name, param="ttl(result)")
        return ttl

    def cacheable(self, value: Any) -> bool:
        if value is None and not self.cache_none:
            return False
        return self.unless is None or not self.unless(value)

    def refresh_early(self, entry: Entry, now: float) -> bool:
        """XFetch (Vattani et al., VLDB 2015): recompute before expiry with a rising probability."""
        beta = self.early_refresh
        if beta is None or entry.delta <= 0:
            return False
        # -log(U) for U uniform on (0, 1] is Exp(1).
        return now - entry.delta * beta * math.log(1.0 - random.random()) >= entry.stored_at + entry.ttl

    # -- store trouble: a counter always, a log line on state changes only ------

    def store_failed(self, failure: Failure, what: str) -> None:
        self.counters.errors += 1
        exc = failure.exc
        if isinstance(exc, SerializationError):
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{self.name}: a value could not be cached ({exc}); the call returned it uncached. "
                    "Return supported types, or pass unless= to skip such values.",
                    CacheWarning,
                    stacklevel=2,
                )
            return
        if not self.failing:
            self.failing = True
            # The type only: messages can carry hosts and passwords.
            logger.warning("%s: store %s failed (%s); calls go to the function", self.name, what, type(exc).__name__)

    def store_corrupt(self) -> None:
        """The store held bytes it could not read under the key: a miss, counted as an error."""
        self.counters.errors += 1
        if not self._corrupt_seen:
            self._corrupt_seen = True
            logger.warning("%s: an unreadable entry was found in the store; it is recomputed and overwritten",
                           self.name)

    def replay_failed(self, failure: Failure) -> None:
        """Evictions owed to the store could not be paid before this call's read."""
        self.store_failed(failure, "eviction replay")

    def store_ok(self) -> None:
        if self.failing:
            self.failing = False
            logger.info("%s: store answers again", self.name)


def fresh(entry: Entry | None, now: float) -> bool:
    """True when ``entry`` can be served as a hit."""
    return entry is not None and now < entry.stored_at + entry.ttl


def read(
    site: CallSite,
    store: Any,
    key: str,
    entry: Entry | None,
    now: float,
    tags: Callable[[], tuple[str, ...]],
    loop: Any,
) -> Flow:
    """A call whose lookup gave no fresh value: serve stale, join a computation, or compute."""
    stats = site.counters
    fallback = None
    if entry is CORRUPT:
        site.store_corrupt()
        entry = None
    if entry is not None:
        late = now - (entry.stored_at + entry.ttl)
        if late < site.stale_while_revalidate:
            stats.stale += 1
            yield (SPAWN, lambda: refresh(site, store, key, tags, loop, background=True))
            return Outcome(entry.value)
        if late <= site.stale_if_error:
            fallback = entry

    for _attempt in range(3):
        lease = yield (STORE, "acquire", (key, tags()))
        if isinstance(lease, Failure):
            site.store_failed(lease, "acquire")
            stats.misses += 1
            return (yield from _compute(site, store, key, None, tags, fallback))
        if lease.entry is not None:
            stats.hits += 1
            return Outcome(lease.entry.value)
        fkey = (store, key, lease.token, loop)
        flight, leader = flights.lead_or_join(fkey, loop)
        if not leader:
            outcome = yield (JOIN, flight)
            if outcome.abandoned:
                continue
            if outcome.exc is not None and fallback is not None and isinstance(outcome.exc, Exception):
                stats.stale += 1  # stale-if-error, for single-flight waiters too
                return Outcome(fallback.value)
            stats.misses += 1
            return outcome  # type: ignore[no-any-return]
        stats.misses += 1
        return (yield from _lead(site, store, key, lease, tags, fallback, fkey, flight))
    # Leaders kept abandoning their computations: compute without the cache.
    stats.misses += 1
    return (yield from _compute(site, store, key, None, tags, fallback))


def _lead(
    site: CallSite,
    store: Any,
    key: str,
    lease: Lease,
    tags: Callable[[], tuple[str, ...]],
    fallback: Entry | None,
    fkey: Hashable,
    flight: Flight,
) -> Flow:
    """Compute as the flight's leader; whatever happens, finish the flight."""
    outcome = Outcome(abandoned=True)
    try:
        if not lease.owner:
            # Another process holds the lease: wait (bounded) for its value.
            found = yield (STORE, "watch", (key, lease, getattr(store, "lease_timeout", 5.0)))
            if isinstance(found, Failure):
                site.store_failed(found, "watch")
            elif found is not None:
                outcome = Outcome(found.value)
                return outcome
            retry = yield (STORE, "acquire", (key, tags()))
            if isinstance(retry, Failure):
                site.store_failed(retry, "acquire")
                lease = Lease(lease.token, owner=False)
            elif retry.entry is not None:
                outcome = Outcome(retry.entry.value)
                return outcome
            else:
                lease = retry
        outcome = yield from _compute(site, store, key, lease, tags, fallback)
        return outcome
    finally:
        flights.finish(fkey, flight, outcome)


def _compute(
    site: CallSite,
    store: Any,
    key: str,
    lease: Lease | None,
    tags: Callable[[], tuple[str, ...]],
    fallback: Entry | None,
) -> Flow:
    """Run the function and store its result under ``lease`` (None or not owned: don't store)."""
    started = time.monotonic()
    outcome: Outcome = yield (CALL,)
    delta = time.monotonic() - started
    owned = lease is not None and lease.owner
    if outcome.exc is not None:
        if owned:
            yield from _release(site, store, key, lease)
        if fallback is not None and isinstance(outcome.exc, Exception):
            site.counters.stale += 1
            return Outcome(fallback.value)
        if not isinstance(outcome.exc, Exception):
            outcome.abandoned = True  # cancelled or interrupted: let joiners try again
        return outcome
    value = outcome.value
    if not owned:
        return outcome
    if not site.cacheable(value):
        yield from _release(site, store, key, lease)
        return outcome
    try:
        entry = Entry(value, store.clock(), site.ttl_for(value), site.grace, delta, tags())
    except Exception:
        yield from _release(site, store, key, lease)
        raise
    stored = yield (STORE, "set", (key, entry, lease))
    if isinstance(stored, Failure):
        site.store_failed(stored, "set")
        yield from _release(site, store, key, lease)
    else:
        site.store_ok()
    return outcome


def _release(site: CallSite, store: Any, key: str, lease: Lease | None) -> Generator[Op, Any, None]:
    released = yield (STORE, "release", (key, lease))
    if isinstance(released, Failure):
        site.store_failed(released, "release")


def refresh(
    site: CallSite,
    store: Any,
    key: str,
    tags: Callable[[], tuple[str, ...]],
    loop: Any,
    *,
    background: bool,
) -> Flow:
    """Recompute and store. In the background, skip when a computation of the key is already running."""
    lease = yield (STORE, "acquire", (key, tags(), True))
    if isinstance(lease, Failure):
        site.store_failed(lease, "acquire")
        if background:
            return Outcome()
        return (yield from _compute(site, store, key, None, tags, None))
    if not lease.owner and background:
        return Outcome()  # another process is filling it
    lease = Lease(lease.token, lease.owner)
    if background:
        fkey = (store, key, lease.token, loop)
        flight, leader = flights.lead_or_join(fkey, loop)
        if not leader:
            return Outcome()
        return (yield from _lead(site, store, key, lease, tags, None, fkey, flight))
    return (yield from _compute(site, store, key, lease, tags, None))
