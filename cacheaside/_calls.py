"""Store operations with retries (blocking and awaited), and the background tasks kept alive.

One decision is not made here: whether to retry, which is the guard's (``retry_after``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .guard import Guard

__all__ = ["acall", "acall_again", "call", "call_again", "keep_task"]

# Background tasks (refreshes, replays), kept referenced until done (the loop holds only weak references).
_tasks: set[asyncio.Task[Any]] = set()


def keep_task(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Keep ``task`` referenced until it is done."""
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


def call(store: Any, guard: Guard | None, name: str, args: tuple[Any, ...]) -> Any:
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
    try:
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
    finally:
        del exc  # no exception -> traceback -> this frame -> exception cycle to keep the store alive


async def acall(store: Any, guard: Guard | None, name: str, args: tuple[Any, ...]) -> Any:
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
    try:
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
    finally:
        del exc


