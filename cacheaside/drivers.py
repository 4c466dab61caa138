"""The two drivers of the flows: blocking calls and threads, or awaits and tasks.

This is the only module where sync and async code exist twice; every decision
is made in ``flow`` (what a read does) and ``guard`` (breaker, retries, owed
evictions). Here: store operations with retries, one breaker report per call,
evictions that are owed when the store does not take them, and the background
replay of owed evictions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from .flow import CALL, JOIN, SPAWN, STORE, Failure, Flow, Outcome
from .guard import REPLAY_INTERVAL, Eviction, Guard, guard_of

__all__ = ["acall_again", "aevict", "arun", "call_again", "evict", "run"]

logger = logging.getLogger("cacheaside")

# Background tasks (refreshes, replays), kept referenced until done (the loop holds only weak references).
_tasks: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


# -- store operations with retries ----------------------------------------------------


def _call(store: Any, guard: Guard | None, name: str, args: tuple[Any, ...]) -> Any:
    if guard is None:
        return getattr(store, name)(*args)
    started = time.monotonic()
    try:
        return getattr(store, name)(*args)
    except Exception as exc:
        return call_again(store, guard, name, args, exc, started)


def call_again(store: Any, guard: Guard, name: str, args: tuple[Any, ...], exc: Exception, started: float) -> Any:
    """``store.<name>(*args)`` failed with ``exc``: retry it as the policy allows (its budget
    counts from ``started``), else raise the last error. The hit path calls this after its
    own first ``get``, so a hit pays nothing for retries until something fails."""
    attempt = 1
    while True:
        delay = guard.retry_after(exc, attempt, started)
        if delay is None:
            raise exc
        time.sleep(delay)
        attempt += 1
        try:
            return getattr(store, name)(*args)
        except Exception as again:
            exc = again


async def _acall(store: Any, guard: Guard | None, name: str, args: tuple[Any, ...]) -> Any:
    if store.nonblocking:  # nothing to await, nothing to retry
        return getattr(store, name)(*args)
    method = getattr(store, "a" + name)
    if guard is None:
        return await method(*args)
    started = time.monotonic()
    try:
        return await method(*args)
    except Exception as exc:
        return await acall_again(store, guard, name, args, exc, started)


async def acall_again(
    store: Any, guard: Guard, name: str, args: tuple[Any, ...], exc: Exception, started: float
) -> Any:
    """``call_again`` with awaits (``name`` is the sync name; the ``a``-method is called)."""
    method = getattr(store, "a" + name)
    attempt = 1
    while True:
        delay = guard.retry_after(exc, attempt, started)
        if delay is None:
            raise exc
        await asyncio.sleep(delay)
        attempt += 1
        try:
            return await method(*args)
        except Exception as again:
            exc = again


# -- flows --------------------------------------------------------------------------------


def run(flow: Flow, store: Any, call: Callable[[], Any]) -> Outcome:
    """Carry out ``flow`` with blocking calls; report the call's store work to the guard once."""
    guard = guard_of(store)
    fault: BaseException | None = None
    touched = False
    send: Any = None
    try:
        while True:
            op = flow.send(send)
            code = op[0]
            if code == STORE:
                touched = True
                try:
                    send = _call(store, guard, op[1], op[2])
                except Exception as exc:
                    send = Failure(exc)
                    fault = fault or exc
            elif code == CALL:
                try:
                    send = Outcome(call())
                except BaseException as exc:  # handed back to the flow, re-raised by the caller
                    send = Outcome(exc=exc)
            elif code == JOIN:
                op[1].event.wait()  # made by lead_or_join for this joiner
                send = op[1].outcome
            elif code == SPAWN:
                make = op[1]
                threading.Thread(target=_background, args=(make, store, call), daemon=True).start()
                send = None
            else:  # pragma: no cover
                raise AssertionError(op)
    except StopIteration as stop:
        _report(guard, touched, fault)
        return stop.value  # type: ignore[no-any-return]


def _report(guard: Guard | None, touched: bool, fault: BaseException | None) -> None:
    if guard is not None and touched:
        if fault is None:
            guard.ok()
        else:
            guard.failed(fault)


def _background(make: Callable[[], Flow], store: Any, call: Callable[[], Any]) -> None:
    outcome = run(make(), store, call)
    if outcome.exc is not None:
        logger.debug("background refresh failed: %s", type(outcome.exc).__name__)


async def arun(flow: Flow, store: Any, call: Callable[[], Awaitable[Any]]) -> Outcome:
    """Carry out ``flow`` with awaits (store methods with an ``a`` prefix, unless the store never blocks)."""
    guard = guard_of(store)
    fault: BaseException | None = None
    touched = False
    send: Any = None
    try:
        while True:
            op = flow.send(send)
            code = op[0]
            if code == STORE:
                touched = True
                try:
                    send = await _acall(store, guard, op[1], op[2])
                except Exception as exc:
                    send = Failure(exc)
                    fault = fault or exc
            elif code == CALL:
                try:
                    send = Outcome(await call())
                except BaseException as exc:  # handed back to the flow, re-raised by the caller
                    send = Outcome(exc=exc)
            elif code == JOIN:
                # Shielded: a cancelled joiner must not cancel the leader's result for the others.
                send = await asyncio.shield(op[1].future)
            elif code == SPAWN:
                _keep(asyncio.ensure_future(_abackground(op[1], store, call)))
                send = None
            else:  # pragma: no cover
                raise AssertionError(op)
    except StopIteration as stop:
        _report(guard, touched, fault)
        return stop.value  # type: ignore[no-any-return]


async def _abackground(make: Callable[[], Flow], store: Any, call: Callable[[], Awaitable[Any]]) -> None:
    outcome = await arun(make(), store, call)
    if outcome.exc is not None:
        logger.debug("background refresh failed: %s", type(outcome.exc).__name__)


# -- evictions --------------------------------------------------------------------------------


def evict(
    store: Any,
    keys: Collection[str],
    tags: Collection[str],
    on_failure: Callable[[Failure], None],
    verdict: int | None = None,
) -> bool:
    """Evict ``keys`` and ``tags`` (with evictions owed from before), or owe them; never raises.

    With no keys and tags this pays what is owed: a read calls it before it may use
    the store again, passing the guard's ``verdict`` it already got (a half-open probe
    must not ask twice). Returns whether the store took everything.
    """
    guard = guard_of(store)
    eviction = _plan(store, guard, keys, tags, verdict)
    if eviction.bypassed:
        return False
    try:
        _send(store, guard, eviction)
    except Exception as exc:
        _not_taken(store, guard, eviction, exc, on_failure)
        return False
    if guard is not None:
        guard.taken(eviction)
    return True


async def aevict(
    store: Any,
    keys: Collection[str],
    tags: Collection[str],
    on_failure: Callable[[Failure], None],
    verdict: int | None = None,
) -> bool:
    """``evict`` with awaits."""
    guard = guard_of(store)
    eviction = _plan(store, guard, keys, tags, verdict)
    if eviction.bypassed:
        return False
    try:
        await _asend(store, guard, eviction)
    except Exception as exc:
        _not_taken(store, guard, eviction, exc, on_failure)
        return False
    if guard is not None:
        guard.taken(eviction)
    return True


def _plan(
    store: Any, guard: Guard | None, keys: Collection[str], tags: Collection[str], verdict: int | None
) -> Eviction:
    if guard is None:
        return Eviction(list(keys), list(tags))
    eviction = guard.plan(keys, tags, verdict)
    if eviction.bypassed:
        _replay_later(store, guard)
    return eviction


def _not_taken(
    store: Any, guard: Guard | None, eviction: Eviction, exc: Exception, on_failure: Callable[[Failure], None]
) -> None:
    if guard is not None and guard.not_taken(eviction, exc):
        _replay_later(store, guard)
    on_failure(Failure(exc))


def _send(store: Any, guard: Guard | None, eviction: Eviction) -> None:
    if eviction.purge:
        _call(store, guard, "purge", ())
    if eviction.keys or eviction.tags:
        _call(store, guard, "delete", (eviction.keys, eviction.tags))


async def _asend(store: Any, guard: Guard | None, eviction: Eviction) -> None:
    if eviction.purge:
        await _acall(store, guard, "purge", ())
    if eviction.keys or eviction.tags:
        await _acall(store, guard, "delete", (eviction.keys, eviction.tags))


def _replay_later(store: Any, guard: Guard) -> None:
    """Make sure something keeps offering owed evictions to the store (one replay per guard)."""
    if not guard.owes or not guard.start_replay():
        return
    if store.serves_sync:
        threading.Thread(target=_replay, args=(store, guard), daemon=True, name="cacheaside-replay").start()
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop to run on: reads pay what is owed before they use the store
        guard.stop_replay()
        return
    _keep(loop.create_task(_areplay(store, guard)))


def _replay(store: Any, guard: Guard) -> None:
    """Offer owed evictions to the store every REPLAY_INTERVAL, whatever the breaker says, until taken.

    Other processes read the store directly: they stop seeing evicted values only once
    the store takes these, so this does not wait for the breaker's reset_timeout. No
    retries and no breaker reports: this is not a caller's call.
    """
    while True:
        eviction = guard.due()
        try:
            _send(store, None, eviction)
        except Exception as exc:
            logger.debug("%s: owed evictions not taken yet (%s)", guard.name, type(exc).__name__)
        else:
            if guard.replayed(eviction):
                return
            continue
        time.sleep(REPLAY_INTERVAL)


async def _areplay(store: Any, guard: Guard) -> None:
    """``_replay`` on the event loop of the async store's client."""
    try:
        while True:
            eviction = guard.due()
            try:
                await _asend(store, None, eviction)
            except Exception as exc:
                logger.debug("%s: owed evictions not taken yet (%s)", guard.name, type(exc).__name__)
            else:
                if guard.replayed(eviction):
                    return
                continue
            await asyncio.sleep(REPLAY_INTERVAL)
    except BaseException:
        guard.replaying = False  # the loop is going away: reads pay what is owed instead
        raise
