"""In-process single-flight: concurrent misses of one key share one computation.

The flows ask ``flights.lead_or_join``; this module is where threads and event loops
are known (the flows are I/O-free generators). A flight is keyed by (store, key, lease
token, event loop): keying by the lease token is what keeps a call that starts after an
eviction from joining a computation that started before it (the eviction revoked the
token, so the new call gets a new one and starts its own flight).

A computation runs with its flight's key in a context variable (``computing``), which
the tasks and ``asyncio.to_thread`` calls it starts inherit: a call made from within it
on the same key (recursion, nested functions sharing a key) is re-entrant and computes
instead of waiting for itself. Joiners wait for their leader's outcome, as long as it takes
(the contract: concurrent misses in one process run the function once); a leader is
bounded only where it waits for another process (``lease_timeout``). A leader that takes
another process's lease over gets a new token, and registers its flight under it too, so
that calls arriving meanwhile join it.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Hashable
from typing import Any, Final

__all__ = ["JOIN", "LEAD", "REENTER", "Flight", "Outcome", "computed", "computing", "flights"]

#: ``lead_or_join`` roles: compute for everyone, wait for the leader, or compute alone
#: because the call is made from within the computation of that very flight (it must not wait for itself).
LEAD: Final = "lead"
JOIN: Final = "join"
REENTER: Final = "reenter"


class Outcome:
    """What a computation gave: a value, or the exception it raised, and how long it took."""

    __slots__ = ("abandoned", "elapsed", "exc", "value")

    def __init__(
        self, value: Any = None, exc: BaseException | None = None, abandoned: bool = False, elapsed: float = 0.0
    ) -> None:
        self.value = value
        self.exc = exc
        #: The leader stopped without a result (cancelled, interrupted): joiners compute themselves.
        self.abandoned = abandoned
        #: Seconds the computation took (what XFetch scales early refresh by).
        self.elapsed = elapsed

    def unwrap(self) -> Any:
        if self.exc is not None:
            raise self.exc
        return self.value


class Flight:
    """One computation that concurrent misses of a key share.

    Sync flights signal a ``threading.Event``, made when the first joiner arrives (most
    flights have none); async flights resolve an ``asyncio.Future`` of the leader's loop.
    """

    __slots__ = ("event", "future", "keys", "outcome")

    def __init__(self, loop: Any, fkey: Hashable) -> None:
        self.outcome: Outcome | None = None
        self.event: threading.Event | None = None
        self.future: asyncio.Future[Outcome] | None = None if loop is None else loop.create_future()
        #: The keys it is registered under (its first lease token, and one taken over since).
        self.keys = [fkey]

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if self.future is not None:
            if not self.future.done():
                self.future.set_result(outcome)
        elif self.event is not None:
            self.event.set()

    def wait(self) -> Outcome:
        """A sync joiner: the leader's outcome."""
        assert self.event is not None  # made by lead_or_join for the first joiner
        self.event.wait()
        assert self.outcome is not None
        return self.outcome

    async def await_outcome(self) -> Outcome:
        """An async joiner: the leader's outcome.

        Shielded: a cancelled joiner must not cancel the leader's result for the others.
        """
        assert self.future is not None
        return await asyncio.shield(self.future)


#: The flights the current context is computing (inherited by the tasks and threads it starts).
_computing: contextvars.ContextVar[frozenset[Hashable]] = contextvars.ContextVar(
    "cacheaside_computing", default=frozenset()
)


def computing(fkey: Hashable) -> contextvars.Token[frozenset[Hashable]]:
    """The leader's computation of flight ``fkey`` starts; pass what this returns to ``computed``.

    (Plain calls, not a context manager: a generator-based one costs a microsecond per miss.)
    """
    return _computing.set(_computing.get() | {fkey})


def computed(token: contextvars.Token[frozenset[Hashable]]) -> None:
    """The computation ``computing`` marked is over."""
    _computing.reset(token)


class _Flights:
    """The process's in-flight computations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Flight] = {}

    def lead_or_join(self, fkey: Hashable, loop: Any) -> tuple[Flight | None, str]:
        """The flight of ``fkey`` and this caller's role in it (``LEAD``, ``JOIN``, or ``REENTER``
        with no flight)."""
        if fkey in _computing.get():
            return None, REENTER
        with self._lock:
            flight = self._flights.get(fkey)
            if flight is not None:
                if flight.future is None and flight.event is None:
                    # Under the lock the leader unregisters with before finishing: it will see this.
                    flight.event = threading.Event()
                return flight, JOIN
            flight = self._flights[fkey] = Flight(loop, fkey)
            return flight, LEAD

    def adopt(self, fkey: Hashable, flight: Flight) -> None:
        """Register ``flight`` under another key too (its leader took another process's lease over)."""
        with self._lock:
            if fkey not in self._flights:
                self._flights[fkey] = flight
                flight.keys.append(fkey)

    def finish(self, flight: Flight, outcome: Outcome) -> None:
        # Unregister first: a caller arriving now must not join a finished flight.
        with self._lock:
            for fkey in flight.keys:
                if self._flights.get(fkey) is flight:
                    del self._flights[fkey]
        flight.finish(outcome)


flights = _Flights()


def _after_fork() -> None:
    """A forked child has none of the parent's threads: their flights would never finish there."""
    flights._lock = threading.Lock()
    flights._flights = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
