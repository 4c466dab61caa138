"""In-process single-flight: concurrent misses of one key share one computation.

The flows ask ``flights.lead_or_join``; this module is where threads and event loops
are known (the flows are I/O-free generators). A flight is keyed by (store, key, lease
token, event loop): keying by the lease token is what keeps a call that starts after an
eviction from joining a computation that started before it (the eviction revoked the
token, so the new call gets a new one and starts its own flight).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import Any, Final

__all__ = ["JOIN", "LEAD", "REENTER", "Flight", "Outcome", "flights"]

#: ``lead_or_join`` roles: compute for everyone, wait for the leader, or compute alone
#: because the leader is this very thread or task (a re-entrant call must not wait for itself).
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
    ``leader`` is the thread (sync) or task (async) computing, so that a call it makes on
    the same key is recognised as re-entrant.
    """

    __slots__ = ("event", "future", "leader", "outcome")

    def __init__(self, loop: Any, leader: Hashable) -> None:
        self.outcome: Outcome | None = None
        self.event: threading.Event | None = None
        self.future: asyncio.Future[Outcome] | None = None if loop is None else loop.create_future()
        self.leader = leader

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if self.future is not None:
            if not self.future.done():
                self.future.set_result(outcome)
        elif self.event is not None:
            self.event.set()

    def wait(self, timeout: float) -> Outcome | None:
        """A sync joiner: the leader's outcome, or None if it took longer than ``timeout``."""
        assert self.event is not None  # made by lead_or_join for the first joiner
        return self.outcome if self.event.wait(timeout) else None

    async def await_outcome(self, timeout: float) -> Outcome | None:
        """An async joiner: the leader's outcome, or None after ``timeout``.

        Shielded: a cancelled joiner must not cancel the leader's result for the others.
        """
        assert self.future is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self.future), timeout)
        except asyncio.TimeoutError:
            return None


def _current(loop: Any) -> Hashable:
    """Who is computing: the task on an event loop, else the thread."""
    if loop is not None:
        task = asyncio.current_task()
        if task is not None:
            return task
    return threading.get_ident()


class _Flights:
    """The process's in-flight computations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Flight] = {}

    def lead_or_join(self, fkey: Hashable, loop: Any) -> tuple[Flight, str]:
        """The flight of ``fkey`` and this caller's role in it (``LEAD``, ``JOIN`` or ``REENTER``)."""
        me = _current(loop)
        with self._lock:
            flight = self._flights.get(fkey)
            if flight is not None:
                if flight.leader == me:
                    return flight, REENTER
                if flight.future is None and flight.event is None:
                    # Under the lock the leader unregisters with before finishing: it will see this.
                    flight.event = threading.Event()
                return flight, JOIN
            flight = self._flights[fkey] = Flight(loop, me)
            return flight, LEAD

    def finish(self, fkey: Hashable, flight: Flight, outcome: Outcome) -> None:
        # Unregister first: a caller arriving now must not join a finished flight.
        with self._lock:
            if self._flights.get(fkey) is flight:
                del self._flights[fkey]
        flight.finish(outcome)


flights = _Flights()
