"""The two drivers of the flows: blocking calls and threads, or awaits and tasks.

This is the only module where sync and async code exist twice; every decision
is made in ``flow``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .flow import CALL, JOIN, SPAWN, STORE, Failure, Flow, Outcome

__all__ = ["arun", "run"]

logger = logging.getLogger("cacheaside")

# Background refresh tasks, kept referenced until done (the event loop holds only weak references).
_tasks: set[asyncio.Task[Any]] = set()


def run(flow: Flow, store: Any, call: Callable[[], Any]) -> Outcome:
    """Carry out ``flow`` with blocking calls."""
    send: Any = None
    try:
        while True:
            op = flow.send(send)
            code = op[0]
            if code == STORE:
                try:
                    send = getattr(store, op[1])(*op[2])
                except Exception as exc:
                    send = Failure(exc)
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
        return stop.value  # type: ignore[no-any-return]


def _background(make: Callable[[], Flow], store: Any, call: Callable[[], Any]) -> None:
    outcome = run(make(), store, call)
    if outcome.exc is not None:
        logger.debug("background refresh failed: %s", type(outcome.exc).__name__)


async def arun(flow: Flow, store: Any, call: Callable[[], Awaitable[Any]]) -> Outcome:
    """Carry out ``flow`` with awaits (store methods with an ``a`` prefix, unless the store never blocks)."""
    direct = store.nonblocking
    send: Any = None
    try:
        while True:
            op = flow.send(send)
            code = op[0]
            if code == STORE:
                try:
                    if direct:
                        send = getattr(store, op[1])(*op[2])
                    else:
                        send = await getattr(store, "a" + op[1])(*op[2])
                except Exception as exc:
                    send = Failure(exc)
            elif code == CALL:
                try:
                    send = Outcome(await call())
                except BaseException as exc:  # handed back to the flow, re-raised by the caller
                    send = Outcome(exc=exc)
            elif code == JOIN:
                # Shielded: a cancelled joiner must not cancel the leader's result for the others.
                send = await asyncio.shield(op[1].future)
            elif code == SPAWN:
                task = asyncio.ensure_future(_abackground(op[1], store, call))
                _tasks.add(task)
                task.add_done_callback(_tasks.discard)
                send = None
            else:  # pragma: no cover
                raise AssertionError(op)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _abackground(make: Callable[[], Flow], store: Any, call: Callable[[], Awaitable[Any]]) -> None:
    outcome = await arun(make(), store, call)
    if outcome.exc is not None:
        logger.debug("background refresh failed: %s", type(outcome.exc).__name__)
