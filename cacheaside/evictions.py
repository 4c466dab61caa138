"""Evictions: ``evict`` / ``aevict``, evictions owed while a store is down, and their background replay.

An eviction the store does not take is owed (``guard``): it goes out with the next eviction
or read of this process on the store, and a background replay (a thread for sync stores, a
task on the client's event loop for async ones) offers it every ``REPLAY_INTERVAL`` until the
store takes it, the store is closed, or the store is dropped (the replay holds it weakly).
An eviction is never lost to a cancellation either: an awaited one that is cancelled in
flight is owed, as a failed one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Generator
from typing import Any

from ._calls import acall, call, keep_task
from .flow import Failure
from .guard import REPLAY_INTERVAL, Eviction, Guard, guard_of

__all__ = ["aevict", "evict", "owe"]

logger = logging.getLogger("cacheaside")

OnFailure = Callable[[Failure], None]


def evict(store: Any, keys: Collection[str], tags: Collection[str], on_failure: OnFailure,
          verdict: int | None = None, where: str = "an eviction") -> bool:
    """Evict ``keys`` and ``tags`` (with evictions owed from before), or owe them; never raises.

    With no keys and tags this pays what is owed: a read calls it before it may use the
    store again, passing the guard's ``verdict`` it already got (a half-open probe must
    not ask twice). Returns whether the store took everything.
    """
    guard = guard_of(store)
    eviction = _plan(store, guard, keys, tags, verdict)
    if eviction.bypassed:
        return False
    try:
        _send(store, guard, eviction)
    except Exception as exc:
        _not_taken(store, guard, eviction, exc, on_failure, where)
        return False
    if guard is not None:
        guard.taken(eviction)
    return True


async def aevict(store: Any, keys: Collection[str], tags: Collection[str], on_failure: OnFailure,
                 verdict: int | None = None, where: str = "an eviction") -> bool:
    """``evict`` with awaits; a store that serves sync code only is evicted from in a worker thread."""
    if not store.nonblocking and not store.serves_async:
        return await asyncio.to_thread(evict, store, keys, tags, on_failure, verdict, where)
    guard = guard_of(store)
    eviction = _plan(store, guard, keys, tags, verdict)
    if eviction.bypassed:
        return False
    try:
        await _asend(store, guard, eviction)
    except asyncio.CancelledError:
        # The caller went away (a timeout, a disconnect): the eviction may not have reached
        # the store, so it is owed, and whatever was being paid stays owed.
        owe(store, *eviction.asked)
        raise
    except Exception as exc:
        _not_taken(store, guard, eviction, exc, on_failure, where)
        return False
    if guard is not None:
        guard.taken(eviction)
    return True


def owe(store: Any, keys: Collection[str], tags: Collection[str]) -> None:
    """Record an eviction that could not be sent (a cancellation) as owed to ``store``."""
    guard = guard_of(store)
    if guard is None:
        if store.nonblocking:
            store.delete(keys, tags)
        else:
            logger.warning("%r: an eviction was cancelled and this store cannot owe it", store)
        return
    guard.owe(keys, tags)
    _replay_later(store, guard)


def _plan(store: Any, guard: Guard | None, keys: Collection[str], tags: Collection[str],
          verdict: int | None) -> Eviction:
    if guard is None:
        return Eviction(list(keys), list(tags))
    eviction = guard.plan(keys, tags, verdict)
    if eviction.bypassed:
        _replay_later(store, guard)
    return eviction


def _not_taken(store: Any, guard: Guard | None, eviction: Eviction, exc: Exception, on_failure: OnFailure,
               where: str) -> None:
    if guard is not None and guard.not_taken(eviction, exc, where):
        _replay_later(store, guard)
    on_failure(Failure(exc))


def _send(store: Any, guard: Guard | None, eviction: Eviction) -> None:
    if eviction.purge:
        call(store, guard, "purge", ())
    if eviction.keys or eviction.tags:
        call(store, guard, "delete", (eviction.keys, eviction.tags))


async def _asend(store: Any, guard: Guard | None, eviction: Eviction) -> None:
    if eviction.purge:
        await acall(store, guard, "purge", ())
    if eviction.keys or eviction.tags:
        await acall(store, guard, "delete", (eviction.keys, eviction.tags))


def _replay_later(store: Any, guard: Guard) -> None:
    """Make sure something keeps offering owed evictions to the store (one replay per guard)."""
    if not guard.owes or not guard.start_replay():
        return
    ref = weakref.ref(store)
    if store.serves_sync:
        threading.Thread(target=_replay, args=(ref, guard), daemon=True, name="cacheaside-replay").start()
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop to run on: reads pay what is owed before they use the store
        guard.stop_replay()
        return
    keep_task(loop.create_task(_areplay(ref, guard)))


def _replay_steps(ref: weakref.ref[Any], guard: Guard) -> Generator[Any, str | None, None]:
    """The background replay, as a flow: offer what is owed every REPLAY_INTERVAL, whatever the breaker
    says, until the store takes it, is closed or is dropped.

    Other processes read the store directly: they stop seeing evicted values only once the store
    takes these, so this does not wait for the breaker's reset_timeout. No retries and no breaker
    reports: this is not a caller's call. Yields ``(store, eviction)`` to send (receiving the error's
    type name, or None: never the error, whose traceback would keep the store alive), and ``None`` to
    sleep an interval.
    """
    waited = False
    while not guard.closed.is_set():
        store = ref()
        if store is None:
            return  # dropped: nothing can read it any more in this process
        eviction = guard.due()
        failed = yield (store, eviction)
        del store  # held only while sending: the replay must not keep the store alive
        if failed is None:
            if guard.replayed(eviction, waited):
                return
            continue
        logger.debug("%s: owed evictions not taken yet (%s)", guard.name, failed)
        waited = True
        yield None


def _replay(ref: weakref.ref[Any], guard: Guard) -> None:
    """``_replay_steps`` with blocking calls, in a thread of its own."""
    steps = _replay_steps(ref, guard)
    try:
        step = next(steps)
        while True:
            if step is None:
                guard.closed.wait(REPLAY_INTERVAL)
                step = next(steps)
                continue
            try:
                _send(step[0], None, step[1])
            except Exception as exc:
                step = steps.send(type(exc).__name__)
            else:
                step = steps.send(None)
    except StopIteration:
        pass
    finally:
        guard.replaying = False


async def _areplay(ref: weakref.ref[Any], guard: Guard) -> None:
    """``_replay_steps`` with awaits, on the event loop of the async store's client."""
    steps = _replay_steps(ref, guard)
    try:
        step = next(steps)
        while True:
            if step is None:
                await asyncio.sleep(REPLAY_INTERVAL)
                step = next(steps)
                continue
            try:
                await _asend(step[0], None, step[1])
            except Exception as exc:
                step = steps.send(type(exc).__name__)
            else:
                step = steps.send(None)
    except StopIteration:
        pass
    finally:
        guard.replaying = False  # taken, closed, dropped, or the loop is going away: reads pay what is owed
