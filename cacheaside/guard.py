"""The policy between decorated calls and a remote store: breaker, retries, incidents, evictions owed.

A ``Guard`` belongs to one store (``RedisStore.guard``) and is shared by every call site on
it. It decides, with no I/O of its own:

- whether a call may use the store (``admit``): the circuit breaker's verdict, and whether
  evictions that failed earlier must be applied first;
- what one decorated call's store work amounted to (``ok`` / ``failed``): one report per
  call; only store faults count against the breaker; an incident is logged when the store
  starts failing and when it answers again (every incident, however it recovers); a store
  that refuses the commands for its setup (permissions, version) says so once;
- whether a failed operation is worth another try (``retry_after``), within the call's
  budget, so that a retry never doubles a caller's wait;
- what an eviction sends (``plan``), and what it means when the store takes it (``taken``)
  or not (``not_taken``): evictions the store did not take are owed, bounded, argument
  values never logged, and collapsed into a wholesale purge of the store's prefix when the
  record overflows; owed ones go out with the next eviction, and the background replay
  offers them (``due`` / ``replayed``) until the store takes them or is closed.

``evictions`` carries out the I/O (blocking or awaited) and the background replay.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .exceptions import warn
from .resilience import CircuitBreaker, Retry

__all__ = ["ADMIT", "BYPASS", "GUARDS", "REPLAY", "Eviction", "Guard", "guard_of"]

logger = logging.getLogger("cacheaside")

#: Every live guard (one per store, one per shard of a cluster), for ``cacheaside.metrics``.
GUARDS: weakref.WeakSet[Guard] = weakref.WeakSet()

#: ``admit`` verdicts.
ADMIT, BYPASS, REPLAY = 0, 1, 2

#: How often owed evictions are retried in the background (the contract says at least once a second).
REPLAY_INTERVAL = 0.5

#: An incident that began with a failed write also ends with a read that works once no write has
#: failed for this long (a store that keeps refusing writes fails one at least this often when used).
QUIET = 1.0


@dataclass(slots=True)
class Eviction:
    """What one eviction sends to the store, and what it pays of what was owed."""

    keys: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    purge: bool = False
    #: The breaker is open: nothing is sent, the caller's keys and tags are now owed.
    bypassed: bool = False
    #: What the caller asked for (owed if the store does not take it).
    asked: tuple[Collection[str], Collection[str]] = ((), ())
    #: What was owed before and goes out with it (paid if the store takes it).
    paying: tuple[list[str], list[str]] = ([], [])


def _no_diagnosis(exc: BaseException) -> str | None:
    return None


class Guard:
    """Breaker, retry policy, incident log and owed evictions of one store."""

    def __init__(
        self,
        *,
        name: str,
        breaker: CircuitBreaker | None,
        retry: Retry | None,
        is_fault: Callable[[BaseException], bool],
        is_transient: Callable[[BaseException], bool],
        budget: float,
        diagnose: Callable[[BaseException], str | None] = _no_diagnosis,
        max_owed: int = 10_000,
    ) -> None:
        self.name = name
        self.breaker = breaker
        self.retry = retry
        self.is_fault = is_fault
        self.is_transient = is_transient
        self.diagnose = diagnose
        #: Seconds one store operation may take, retries included.
        self.budget = budget
        self.max_owed = max_owed
        self._lock = threading.Lock()
        self._keys: dict[str, None] = {}
        self._tags: dict[str, None] = {}
        #: The record overflowed: everything under the store's prefix must go.
        self._purge = False
        #: A background replay is running (a thread, or a task on some event loop).
        self.replaying = False
        #: Set when the store is closed: the replay stops, and its waits end at once.
        self.closed = threading.Event()
        #: An incident is under way: the call site where it began (None: the store answers),
        #: and whether what failed was a write (then only a write ends it).
        self.failing: str | None = None
        self._failed_writing = False
        self._last_failure = 0.0
        self._diagnosed: set[str] = set()
        #: Nothing to do for a call: the breaker is closed with no failure counted, no incident
        #: is open and nothing is owed. The hit path reads only this; it changes under the lock.
        self.clear = True
        #: Told when ``clear`` may have changed (``Shards``, for a guard of one shard of a cluster).
        self.on_change: Callable[[], None] | None = None
        GUARDS.add(self)

    def of(self, key: str) -> Guard:
        """The guard of ``key``'s shard: this one (a store on one server has one guard)."""
        return self

    def __repr__(self) -> str:
        return f"Guard({self.name}, owed={len(self._keys) + len(self._tags)}, purge={self._purge})"

    # -- admission and reports -----------------------------------------------------

    def admit(self) -> int:
        """``ADMIT``, ``BYPASS`` (breaker open: don't touch the store) or ``REPLAY`` (pay owed evictions first)."""
        if self.clear:
            return ADMIT
        if self.breaker is not None and not self.breaker.allow():
            return BYPASS
        return REPLAY if self.owes else ADMIT

    def ok(self, wrote: bool = False) -> None:
        """A decorated call (or eviction) whose store work all succeeded; ``wrote``: it wrote too.

        An incident ends when the kind of work that failed succeeds again: a hit (a read) does
        not end one that began with a failed write, so a store that serves reads but refuses
        writes (full memory, missing permissions) is one incident, not one per call.
        """
        if self.clear:
            return
        if self.breaker is not None:
            self._log(self.breaker.success())
        if self.failing is not None and (
            wrote or not self._failed_writing or time.monotonic() - self._last_failure >= QUIET
        ):
            self._end_incident()
        self._settle()

    def _end_incident(self) -> None:
        began, self.failing = self.failing, None
        if began is not None:
            logger.info("%s: the store answers again (the incident began in %s)", self.name, began)

    def failed(self, exc: BaseException, where: str = "an eviction", writing: bool = True) -> None:
        """A decorated call (or eviction, at ``where``) whose store work failed; only store faults count.

        ``writing``: the operation that failed writes (anything but a lookup).
        """
        fault = self.is_fault(exc)
        changed = self.breaker.failure(exc) if self.breaker is not None and fault else None
        with self._lock:
            self.clear = False
            self._last_failure = time.monotonic()
            starting = self.failing is None
            if starting:
                self.failing = where
                self._failed_writing = writing
        self._changed()
        if starting:
            # The type only: messages can carry hosts and passwords.
            logger.warning("%s: store failed in %s (%s); calls go to the function until it answers",
                           self.name, where, type(exc).__name__)
        self._log(changed)
        if not fault:
            problem = self.diagnose(exc)
            if problem is not None and type(exc).__name__ not in self._diagnosed:
                self._diagnosed.add(type(exc).__name__)
                warn(f"{self.name}: {problem}")

    def _settle(self) -> None:
        with self._lock:
            calm = self.breaker is None or self.breaker.calm
            self.clear = calm and self.failing is None and not self.owes
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _log(self, changed: str | None) -> None:
        if changed == "open":
            assert self.breaker is not None
            snap = self.breaker.snapshot()
            logger.warning(
                "%s: circuit open after %s; calls skip the store for %.3g s",
                self.name, snap.last_error_type, self.breaker.reset_timeout,
            )
        elif changed == "closed":
            logger.info("%s: circuit closed; the store answers again", self.name)

    # -- retries -------------------------------------------------------------------

    def retry_after(self, exc: BaseException, attempt: int, started: float) -> float | None:
        """Seconds to wait before try ``attempt + 1``, or None for no retry.

        Only transient faults are retried, never unless the breaker is closed (a half-open
        probe must be quick), and never past the operation's budget from its first try.
        """
        retry = self.retry
        if retry is None or attempt >= retry.attempts or not self.is_transient(exc):
            return None
        if self.breaker is not None and self.breaker.state != "closed":
            return None
        delay = retry.delay(attempt)
        if time.monotonic() - started + delay >= self.budget:
            return None
        return delay

    # -- owed evictions ----------------------------------------------------------------

    @property
    def owes(self) -> bool:
        return bool(self._keys or self._tags or self._purge)

    def plan(self, keys: Collection[str], tags: Collection[str], verdict: int | None = None) -> Eviction:
        """What to send to evict ``keys`` and ``tags``, given the ``admit`` verdict (asked for when None)."""
        if verdict is None:
            verdict = self.admit()
        if verdict == BYPASS:
            self.owe(keys, tags)
            return Eviction(bypassed=True)
        if verdict != REPLAY:
            return Eviction(list(keys), list(tags), asked=(keys, tags))
        owed_keys, owed_tags, purge = self.owed()
        return Eviction(
            [*owed_keys, *keys], [*owed_tags, *tags], purge, asked=(keys, tags), paying=(owed_keys, owed_tags)
        )

    def taken(self, eviction: Eviction) -> None:
        """The store took ``eviction``: what it paid is no longer owed, and the call succeeded."""
        self.paid(*eviction.paying, eviction.purge)
        self.ok(wrote=True)

    def not_taken(self, eviction: Eviction, exc: BaseException, where: str = "an eviction") -> bool:
        """The store failed ``eviction``; True when that made its keys and tags owed (a store fault)."""
        self.failed(exc, where)
        if not self.is_fault(exc):
            return False
        self.owe(*eviction.asked)
        return True

    def due(self) -> Eviction:
        """Everything owed, for the background replay."""
        keys, tags, purge = self.owed()
        return Eviction(keys, tags, purge, paying=(keys, tags))

    def replayed(self, eviction: Eviction, waited: bool) -> bool:
        """The background replay's ``eviction`` was taken; True when nothing more is owed (it may stop).

        ``waited``: the store refused it at first. Only then is it worth a line in the log: an
        eviction owed while the breaker is open and taken at once is no news.
        """
        self._end_incident()  # the store took a write
        self.paid(*eviction.paying, eviction.purge)
        if self.stop_replay():
            logger.log(logging.INFO if waited else logging.DEBUG, "%s: owed evictions applied", self.name)
            return True
        return False

    def owe(self, keys: Collection[str], tags: Collection[str]) -> None:
        """Record evictions the store did not take; beyond ``max_owed``, owe a purge of the prefix instead."""
        if not keys and not tags:
            return
        with self._lock:
            self.clear = False
            if self._purge:
                return
            self._keys.update(dict.fromkeys(keys))
            self._tags.update(dict.fromkeys(tags))
            if len(self._keys) + len(self._tags) > self.max_owed:
                self._keys.clear()
                self._tags.clear()
                self._purge = True
                logger.warning("%s: too many evictions owed; every entry under the prefix will be purged", self.name)
        self._changed()

    def owed(self) -> tuple[list[str], list[str], bool]:
        """What is owed now: (keys, tags, purge)."""
        with self._lock:
            return list(self._keys), list(self._tags), self._purge

    def paid(self, keys: Collection[str], tags: Collection[str], purge: bool) -> None:
        """The store took these (evictions owed since stay owed)."""
        with self._lock:
            for k in keys:
                self._keys.pop(k, None)
            for t in tags:
                self._tags.pop(t, None)
            if purge:
                self._purge = False
        self._settle()

    def start_replay(self) -> bool:
        """Claim the background replay; False when one is already running (or the store is closed)."""
        with self._lock:
            if self.replaying or self.closed.is_set():
                return False
            self.replaying = True
            return True

    def stop_replay(self) -> bool:
        """Give the background replay up unless more became owed meanwhile (then keep going)."""
        with self._lock:
            if self.owes and not self.closed.is_set():
                return False
            self.replaying = False
            return True

    def close(self) -> None:
        """The store is closed: stop the background replay (what is still owed is left to the TTL)."""
        self.closed.set()
        if self.owes:
            logger.warning("%s: closed with evictions owed; they are left to the entries' TTL", self.name)


def guard_of(store: Any, key: str) -> Guard | None:
    """The guard of ``key`` on ``store``, if it has one (remote stores do; ``MemoryStore`` needs none):
    the store's own, or on a cluster its shard's."""
    guard = getattr(store, "guard", None)
    return None if guard is None else guard.of(key)
