"""The two drivers of the flows (blocking calls and threads, or awaits and tasks), and the hit paths.

This is where sync and async code exist twice; every decision is made elsewhere: in the
read policy (``policy``), the flows (``flow``) and the guard (``guard``). Here: the hit
path of each kind of call site (one frame per hit: key, lookup, verdict, return), store
operations with retries, and one guard report per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import _refreshes
from ._calls import acall, acall_again, call, call_again, keep_task
from ._flights import computed, computing
from ._settings import settings
from ._site import CallSite
from ._types import OtherShard
from .evictions import aevict, evict
from .exceptions import SerializationError
from .flow import CALL, JOIN, STORE, Failure, Flow, Outcome, read, refresh
from .guard import BYPASS, REPLAY, Guard, guard_of
from .policy import EARLY, HIT, STALE

__all__ = ["akept_out", "arun", "kept_out", "make_areader", "make_reader", "run", "tags_of"]

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


#: Failures that are not the key's shard's: a value's (it cannot be serialized), or another shard's
#: (a tag set's on a cluster, charged to that shard already).
_NOT_THIS_SHARD = (SerializationError, OtherShard)

#: The store operations that only read (a failure of any other is a failed write).
_READS = frozenset({"get", "peek", "watch"})


def _report(guard: Guard | None, touched: bool, fault: BaseException | None, where: str, wrote: bool,
            failed_op: str) -> None:
    """One report per call: what its store work amounted to."""
    if guard is not None and touched:
        if fault is None:
            guard.ok(wrote)
        else:
            guard.failed(fault, where, failed_op not in _READS)


# -- flows --------------------------------------------------------------------------------


def run(flow: Flow, site: CallSite, store: Any, key: str, compute: Callable[[], Any]) -> Outcome:
    """Carry out ``flow`` (a call on ``key``) with blocking calls."""
    guard = guard_of(store, key)
    fault: BaseException | None = None
    touched = wrote = False
    failed_op = ""
    send: Any = None
    try:
        while True:
            op = flow.send(send)
            code = op[0]
            if code == STORE:
                touched = True
                try:
                    send = call(store, guard, op[1], op[2])
                    wrote = wrote or op[1] not in _READS
                except Exception as exc:
                    send = Failure(exc)
                    if fault is None and not isinstance(exc, _NOT_THIS_SHARD):
                        fault, failed_op = exc, op[1]
            elif code == CALL:
                token = None if op[1] is None else computing(op[1])
                started = time.monotonic()
                try:
                    send = Outcome(compute(), elapsed=time.monotonic() - started)
                except BaseException as exc:  # handed back to the flow, re-raised by the caller
                    send = Outcome(exc=exc, elapsed=time.monotonic() - started)
                finally:
                    if token is not None:
                        computed(token)
            elif code == JOIN:
                send = op[1].wait()
            else:  # pragma: no cover
                raise AssertionError(op)
    except StopIteration as stop:
        _report(guard, touched, fault, site.name, wrote, failed_op)
        fault = send = None  # no exception -> traceback -> this frame -> exception cycle
        return stop.value  # type: ignore[no-any-return]


async def arun(flow: Flow, site: CallSite, store: Any, key: str, compute: Callable[[], Awaitable[Any]]) -> Outcome:
    """Carry out ``flow`` with awaits (store methods with an ``a`` prefix, unless the store never blocks)."""
    guard = guard_of(store, key)
    fault: BaseException | None = None
    touched = wrote = False
    failed_op = ""
    send: Any = None
    try:
        while True:
            op = flow.send(send)
            code = op[0]
            if code == STORE:
                touched = True
                try:
                    send = await acall(store, guard, op[1], op[2])
                    wrote = wrote or op[1] not in _READS
                except Exception as exc:
                    send = Failure(exc)
                    if fault is None and not isinstance(exc, _NOT_THIS_SHARD):
                        fault, failed_op = exc, op[1]
            elif code == CALL:
                token = None if op[1] is None else computing(op[1])
                started = time.monotonic()
                try:
                    send = Outcome(await compute(), elapsed=time.monotonic() - started)
                except BaseException as exc:  # handed back to the flow, re-raised by the caller
                    send = Outcome(exc=exc, elapsed=time.monotonic() - started)
                finally:
                    if token is not None:
                        computed(token)
            elif code == JOIN:
                send = await op[1].await_outcome()
            else:  # pragma: no cover
                raise AssertionError(op)
    except StopIteration as stop:
        _report(guard, touched, fault, site.name, wrote, failed_op)
        fault = send = None  # no exception -> traceback -> this frame -> exception cycle
        return stop.value  # type: ignore[no-any-return]


# -- the hit paths ----------------------------------------------------------------------


def kept_out(site: CallSite, store: Any, guard: Guard) -> bool:
    """Whether a call must not use the store now; asked only when its (shard's) guard is not clear.

    The breaker is open (the call counts as ``bypassed``), or evictions owed to the
    store could not be paid first (an error, counted by the failed eviction).
    """
    verdict = guard.admit()
    if verdict == BYPASS:
        site.counters.bypassed += 1
        return True
    return verdict == REPLAY and not evict(store, (), (), lambda f: site.store_failed(f.exc), verdict, guard=guard)


async def akept_out(site: CallSite, store: Any, guard: Guard) -> bool:
    """``kept_out`` with awaits."""
    verdict = guard.admit()
    if verdict == BYPASS:
        site.counters.bypassed += 1
        return True
    return verdict == REPLAY and not await aevict(store, (), (), lambda f: site.store_failed(f.exc), verdict,
                                                  guard=guard)


def _lookup_failed(site: CallSite, guard: Guard | None, exc: Exception) -> None:
    if guard is not None:
        guard.failed(exc, site.name, writing=False)
    site.store_failed(exc)
    site.counters.misses += 1
    site.counters.get_errors += 1


def tags_of(site: CallSite, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The call's tags, rendered when a flow asks (made here, off the hit path: a closure in the
    hit path itself would allocate a cell per captured name on every call, hits included): the
    function's own tag (``f.clear()``), then its templates'."""
    if not site.tags:
        return site.fixed_tags
    return lambda: (site.clear_tag, *site.keys.tags(site.tags, instance, skip, args, kwargs))


def _claimed(site: CallSite, store: Any, key: str, verdict: str) -> bool:
    """A stale or early hit, counted; whether this caller starts the key's background refresh
    (none runs in this process: every other caller is served and starts nothing)."""
    if verdict is EARLY:
        site.counters.hits += 1
    else:
        site.counters.stale += 1
    return _refreshes.claim(store, key)


def _unchanged(site: CallSite, store: Any, key: str, instance: Any, skip: bool, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Callable[[], bool]:
    """Whether the call's arguments still make ``key`` (a background refresh runs after the call
    returned, with the same argument objects, which the caller may have changed since)."""

    def check() -> bool:
        try:
            return bool(site.keys.build(store.prefix, instance, skip, args, kwargs) == key)
        except Exception:
            return False

    return check


def _refresh_flow(site: CallSite, store: Any, key: str, entry: Any, loop: Any, instance: Any, skip: bool,
                  args: tuple[Any, ...], kwargs: dict[str, Any]) -> Flow:
    """The background refresh of a stale or early hit on ``entry``."""
    return refresh(site, store, key, tags_of(site, instance, skip, args, kwargs), loop, background=True,
                   seen=entry.stored_at, unchanged=_unchanged(site, store, key, instance, skip, args, kwargs))


def _read(site: CallSite, store: Any, key: str, entry: Any, verdict: str, wrapped: Callable[..., Any],
          instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A sync call whose lookup gave no plain hit: served stale or early (and refreshed in the
    background pool), or the read flow."""
    if verdict is STALE or verdict is EARLY:
        if _claimed(site, store, key, verdict):
            flow = _refresh_flow(site, store, key, entry, None, instance, skip, args, kwargs)

            def job() -> None:
                try:
                    run(flow, site, store, key, lambda: wrapped(*args, **kwargs))
                except Exception as exc:  # the refresh's own machinery (a tag that cannot be rendered)
                    site.refresh_failed(exc)

            _refreshes.submit(job, store, key)
        return entry.value
    flow = read(site, store, key, entry, verdict, tags_of(site, instance, skip, args, kwargs), None)
    return run(flow, site, store, key, lambda: wrapped(*args, **kwargs)).unwrap()


async def _aread(site: CallSite, store: Any, key: str, entry: Any, verdict: str, wrapped: Callable[..., Any],
                 instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """An async call whose lookup gave no plain hit: ``_read``, the refresh in a kept task."""
    loop = asyncio.get_running_loop()
    if verdict is STALE or verdict is EARLY:
        if _claimed(site, store, key, verdict):
            flow = _refresh_flow(site, store, key, entry, loop, instance, skip, args, kwargs)
            keep_task(loop.create_task(_abackground(flow, site, store, key, lambda: wrapped(*args, **kwargs))))
        return entry.value
    flow = read(site, store, key, entry, verdict, tags_of(site, instance, skip, args, kwargs), loop)
    return (await arun(flow, site, store, key, lambda: wrapped(*args, **kwargs))).unwrap()


async def _abackground(flow: Flow, site: CallSite, store: Any, key: str, compute: Callable[[], Awaitable[Any]]) -> None:
    try:
        await arun(flow, site, store, key, compute)
    except Exception as exc:  # the refresh's own machinery (a tag that cannot be rendered)
        site.refresh_failed(exc)
    finally:
        _refreshes.done(store, key)


def make_reader(site: CallSite, static: bool) -> Wrapper:
    """The wrapper of a sync call site: its hit path inline, everything else in ``_read``.

    On a remote store a hit is a round trip plus this, and every frame shows in the ratio:
    no helper calls but the key, the lookup and the verdict, and no closures.
    """
    build = site.keys.build
    decide = site.policy.decide
    counters = site.counters
    fixed = site.store  # checked at decoration; None: the configured default, checked per call
    timed = site.policy.early_refresh is not None  # judge expiry on the store's own clock (``peek``)
    lookup = "peek" if timed else "get"

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if settings.disabled:
            return wrapped(*args, **kwargs)
        store = fixed if fixed is not None else site.resolve_store()
        if static:
            instance = None
        skip = instance is not None
        key = build(store.prefix, instance, skip, args, kwargs)
        guard = store.guard  # on a cluster, its shards': clear while every shard's guard is
        if guard is not None and not guard.clear:
            guard = guard.of(key)
            if not guard.clear and kept_out(site, store, guard):
                return wrapped(*args, **kwargs)
        try:
            found = store.peek(key) if timed else store.get(key)
        except Exception as exc:
            try:
                if guard is None:
                    raise
                guard = guard.of(key)
                found = call_again(store, guard, lookup, (key,), exc, time.monotonic())
            except Exception as final:
                _lookup_failed(site, guard, final)
                return wrapped(*args, **kwargs)
        if timed:
            entry, now = found
        else:
            entry, now = found, store.clock()
        verdict = decide(entry, now)
        if verdict is HIT:
            counters.hits += 1
            if guard is not None and not guard.clear:
                guard.of(key).ok()
            return entry.value
        return _read(site, store, key, entry, verdict, wrapped, instance, skip, args, kwargs)

    return wrapper


def make_areader(site: CallSite, static: bool) -> Wrapper:
    """``make_reader`` for an async call site."""
    build = site.keys.build
    decide = site.policy.decide
    counters = site.counters
    fixed = site.store
    timed = site.policy.early_refresh is not None
    lookup = "peek" if timed else "get"

    async def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if settings.disabled:
            return await wrapped(*args, **kwargs)
        store = fixed if fixed is not None else site.resolve_store()
        if static:
            instance = None
        skip = instance is not None
        key = build(store.prefix, instance, skip, args, kwargs)
        guard = store.guard
        if guard is not None and not guard.clear:
            guard = guard.of(key)
            if not guard.clear and await akept_out(site, store, guard):
                return await wrapped(*args, **kwargs)
        try:
            if store.nonblocking:
                found = store.peek(key) if timed else store.get(key)
            else:
                found = await (store.apeek(key) if timed else store.aget(key))
        except Exception as exc:
            try:
                if guard is None:
                    raise
                guard = guard.of(key)
                found = await acall_again(store, guard, lookup, (key,), exc, time.monotonic())
            except Exception as final:
                _lookup_failed(site, guard, final)
                return await wrapped(*args, **kwargs)
        if timed:
            entry, now = found
        else:
            entry, now = found, store.clock()
        verdict = decide(entry, now)
        if verdict is HIT:
            counters.hits += 1
            if guard is not None and not guard.clear:
                guard.of(key).ok()
            return entry.value
        return await _aread(site, store, key, entry, verdict, wrapped, instance, skip, args, kwargs)

    return wrapper
