"""The read and refresh flows: what a cached call does after its lookup, with no I/O.

A flow is a generator. It yields operations and receives their results; the sync
driver (``drivers.run``) and the async one (``drivers.arun``) carry them out with
blocking calls or awaits, so the logic exists once. The verdict on an entry is the
read policy's (``policy.ReadPolicy.decide``); problems are reported to the call site
(``_site.CallSite``), which counts and logs them.

Operations::

    (STORE, name, args)   call store.<name>(*args) (or a<name> on async stores);
                          receive its result, or a ``Failure`` if it raised
    (CALL, fkey)          run the wrapped function (as the leader of flight ``fkey``, or
                          None); receive an ``Outcome``
    (JOIN, flight)        wait for another caller's computation; receive its ``Outcome``

A fresh hit never enters a flow: the drivers' hit paths serve it, and a stale or early one
too, starting the background ``refresh`` flow when no refresh of its key runs (``_refreshes``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from typing import Any

from ._flights import JOIN as JOINED
from ._flights import LEAD as LEAD_ROLE
from ._flights import REENTER, Flight, Outcome, flights
from ._site import CallSite
from ._types import CORRUPT, ArgumentsChanged, Entry, Lease
from .policy import EARLY, FALLBACK, HIT

__all__ = ["CALL", "JOIN", "STORE", "Failure", "Flow", "Outcome", "read", "refresh"]

STORE, CALL, JOIN = range(3)

Op = tuple[Any, ...]
Flow = Generator[Op, Any, Outcome]
Tags = Callable[[], tuple[str, ...]]


class Failure:
    """A store operation that raised."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read(site: CallSite, store: Any, key: str, entry: Entry | None, verdict: str, tags: Tags, loop: Any) -> Flow:
    """A call whose lookup gave a miss (or a value only for an error): join a computation, or compute."""
    counters = site.counters
    if entry is CORRUPT:
        site.corrupt()
        entry = None
    fallback = entry if verdict is FALLBACK else None
    names = tags()
    force = False
    for _attempt in range(3):
        lease = yield (STORE, "acquire", (key, names, force))
        if isinstance(lease, Failure):
            site.store_failed(lease.exc)
            counters.misses += 1
            return (yield from _compute(site, store, key, None, names, fallback))
        if lease.entry is not None:
            if site.policy.decide(lease.entry, store.clock()) in (HIT, EARLY):
                counters.hits += 1  # filled by someone between the lookup and the acquire
                return Outcome(lease.entry.value)
            force = True  # the store's clock found it fresh, this call's does not: take the lease
            continue
        fkey = (store, key, lease.token, loop)
        flight, role = flights.lead_or_join(fkey, loop)
        if role is REENTER:
            # Called from within its own computation of this key: compute, don't wait for itself.
            counters.misses += 1
            return (yield from _compute(site, store, key, None, names, fallback))
        if role is JOINED:
            outcome: Outcome = yield (JOIN, flight)
            if outcome.abandoned:
                continue
            if outcome.exc is not None and fallback is not None and isinstance(outcome.exc, Exception):
                counters.stale += 1  # stale-if-error, for single-flight waiters too
                return Outcome(fallback.value)
            counters.misses += 1
            return outcome
        counters.misses += 1
        assert flight is not None
        return (yield from _lead(site, store, key, lease, names, fallback, fkey, flight, loop))
    # Leaders kept abandoning their computations: compute without the cache.
    counters.misses += 1
    return (yield from _compute(site, store, key, None, names, fallback))


def _lead(
    site: CallSite,
    store: Any,
    key: str,
    lease: Lease,
    tags: tuple[str, ...],
    fallback: Entry | None,
    fkey: Hashable,
    flight: Flight,
    loop: Any,
    unchanged: Callable[[], bool] | None = None,
) -> Flow:
    """Compute as the flight's leader; whatever happens, finish the flight."""
    outcome = Outcome(abandoned=True)
    try:
        if not lease.owner:
            # Another process holds the lease: wait (bounded) for its value, then take over.
            found = yield (STORE, "watch", (key, lease, store.lease_timeout))
            if isinstance(found, Failure):
                site.store_failed(found.exc)
            elif found is not None:
                outcome = Outcome(found.value)
                return outcome
            retry = yield (STORE, "acquire", (key, tags, False, True))
            if isinstance(retry, Failure):
                site.store_failed(retry.exc)  # compute under the lease not owned: nothing is stored
            elif retry.entry is None:
                lease = retry
                # Taken over: a call arriving meanwhile gets this new token, and must join this flight.
                flights.adopt((store, key, lease.token, loop), flight)
            elif site.policy.decide(retry.entry, store.clock()) in (HIT, EARLY):
                outcome = Outcome(retry.entry.value)
                return outcome
        outcome = yield from _compute(site, store, key, lease, tags, fallback, fkey, unchanged)
        return outcome
    finally:
        flights.finish(flight, outcome)


def _compute(
    site: CallSite,
    store: Any,
    key: str,
    lease: Lease | None,
    tags: tuple[str, ...],
    fallback: Entry | None,
    fkey: Hashable | None = None,
    unchanged: Callable[[], bool] | None = None,
) -> Flow:
    """Run the function (as the leader of flight ``fkey``, if any) and store its result under
    ``lease`` (None or not owned: don't store). ``unchanged``: whether the call's arguments still
    make its key (a background refresh runs after its call returned: the caller may have mutated them)."""
    outcome: Outcome = yield (CALL, fkey)
    site.loaded(outcome.elapsed, outcome.exc is not None)
    if unchanged is not None and outcome.exc is None and not unchanged():
        outcome = Outcome(exc=ArgumentsChanged(), abandoned=True)  # a caller that joined computes for itself
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
    if not owned:
        return outcome
    value = outcome.value
    policy = site.policy
    try:
        ttl = policy.keep_for(value)
    except Exception as exc:  # a ttl callable (or unless) that failed: the value is still returned
        site.bad_ttl(exc)
        ttl = 0.0
    if ttl <= 0:
        yield from _release(site, store, key, lease)
        return outcome
    entry = Entry(value, store.clock(), ttl, policy.grace, outcome.elapsed, tags)
    stored = yield (STORE, "set", (key, entry, lease))
    if stored is True:
        site.counters.fills += 1
    elif isinstance(stored, Failure):
        site.store_failed(stored.exc)
        yield from _release(site, store, key, lease)
    return outcome


def _release(site: CallSite, store: Any, key: str, lease: Lease | None) -> Generator[Op, Any, None]:
    released = yield (STORE, "release", (key, lease))
    if isinstance(released, Failure):
        site.store_failed(released.exc)


def refresh(site: CallSite, store: Any, key: str, tags: Tags, loop: Any, *, background: bool,
            seen: float | None = None, unchanged: Callable[[], bool] | None = None) -> Flow:
    """Recompute and store.

    In the foreground (``f.refresh()``) the caller asked for its value to be stored: take the lease
    with a new epoch, revoking every fill under way (here or in another process: they computed from
    older data), so that only an eviction can refuse this one. In the background (a stale or early
    hit; ``seen`` is the ``stored_at`` of the entry it replaces) skip when another entry was stored
    meanwhile, or when a computation of the key runs already, here or (the lease says) in another
    process. ``unchanged``: whether the call's arguments still make ``key`` (checked before and
    after the computation).
    """
    if unchanged is not None and not unchanged():
        site.refresh_failed(ArgumentsChanged())
        return Outcome()
    names = tags()
    if background:
        lease = yield (STORE, "acquire", (key, names, True, False, seen))
    else:
        lease = yield (STORE, "acquire", (key, names, True, True))
    if isinstance(lease, Failure):
        site.store_failed(lease.exc)
        if background:
            return Outcome()
        return (yield from _compute(site, store, key, None, names, None))
    if not background:
        return (yield from _compute(site, store, key, lease, names, None))
    if lease.entry is not None or not lease.owner:
        return Outcome()  # refreshed meanwhile, or being refreshed by another process
    fkey = (store, key, lease.token, loop)
    flight, role = flights.lead_or_join(fkey, loop)
    if role is not LEAD_ROLE or flight is None:
        return Outcome()
    outcome = yield from _lead(site, store, key, lease, names, None, fkey, flight, loop, unchanged)
    if outcome.exc is not None and isinstance(outcome.exc, Exception):
        site.refresh_failed(outcome.exc)
        return Outcome()
    site.refresh_ok()
    return outcome
