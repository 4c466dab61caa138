"""Evictions: ``evict`` / ``aevict``, evictions owed while a store is down, and their background replay.

An eviction the store does not take is owed (``guard``): it goes out with the next eviction
or read of this process on the store, and a background replay (a thread for sync stores, a
task on the client's event loop for async ones) offers it every ``REPLAY_INTERVAL`` until the
store takes it, the store is closed, or the store is dropped (the replay holds it weakly).
An eviction is never lost to a cancellation either: an awaited one that is cancelled in
flight is owed, as a failed one.

On a store of several shards (Redis Cluster) an eviction goes out in one part per shard, each
under that shard's guard (``Shards``): a shard whose breaker is open owes its part without
a try, and a part that a shard took only in part (``PartialEviction``) leaves each failed
node's keys owed to that node's shard, and a tag whose set could not be read owed on every
shard (its entries can be anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Generator
from typing import Any

from ._calls import acall, call, keep_task
from ._types import PartialEviction
from .flow import Failure
from .guard import REPLAY_INTERVAL, Eviction, Guard
from .shards import Shards

__all__ = ["EVICTION_LISTENERS", "TAG_EVICTIONS", "aevict", "evict", "owe"]

logger = logging.getLogger("cacheaside")

OnFailure = Callable[[Failure], None]

#: Tags each store was asked to evict (``f.clear()`` included), for ``cacheaside.metrics``.
TAG_EVICTIONS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


#: Told of every eviction the application asks for (not replays of owed ones): the transaction
#: integrations (``cacheaside.transactions``), which apply it again after a commit.
EVICTION_LISTENERS: list[Callable[[Any, Collection[str], Collection[str]], None]] = []


def _asked(store: Any, keys: Collection[str], tags: Collection[str]) -> None:
    """An eviction asked for: counted, and told to the listeners (whose trouble is never the caller's)."""
    for listener in EVICTION_LISTENERS:
        try:
            listener(store, keys, tags)
        except Exception:
            logger.exception("%r: a transaction integration failed to note an eviction", store)
    if tags:
        with contextlib.suppress(TypeError):  # a store that cannot be weakly referenced or hashed: not counted
            TAG_EVICTIONS[store] = TAG_EVICTIONS.get(store, 0) + len(tags)


def evict(store: Any, keys: Collection[str], tags: Collection[str], on_failure: OnFailure,
          verdict: int | None = None, where: str = "an eviction", guard: Guard | None = None) -> bool:
    """Evict ``keys`` and ``tags`` (with evictions owed from before), or owe them; never raises.

    With no keys and tags this pays what ``guard`` owes: a read calls it before it may use
    the store again, passing the guard's ``verdict`` it already got (a half-open probe must
    not ask twice). Returns whether the store took everything.
    """
    if guard is None:
        _asked(store, keys, tags)
        return all([_evict(store, g, k, t, on_failure, None, where) for g, k, t in _parts(store, keys, tags)])
    return _evict(store, guard, keys, tags, on_failure, verdict, where)


def _evict(store: Any, guard: Guard | None, keys: Collection[str], tags: Collection[str], on_failure: OnFailure,
           verdict: int | None, where: str) -> bool:
    eviction = _plan(store, guard, keys, tags, verdict)
    if eviction.bypassed:
        return False
    try:
        _send(store, guard, eviction)
    except Exception as exc:
        return _not_taken(store, guard, eviction, exc, on_failure, where)
    if guard is not None:
        guard.taken(eviction)
    return True


async def aevict(store: Any, keys: Collection[str], tags: Collection[str], on_failure: OnFailure,
                 verdict: int | None = None, where: str = "an eviction", guard: Guard | None = None) -> bool:
    """``evict`` with awaits; a store that serves sync code only is evicted from in a worker thread."""
    if not store.nonblocking and not store.serves_async:
        return await asyncio.to_thread(evict, store, keys, tags, on_failure, verdict, where, guard)
    if guard is None:
        _asked(store, keys, tags)
        return all([await _aevict(store, g, k, t, on_failure, None, where) for g, k, t in _parts(store, keys, tags)])
    return await _aevict(store, guard, keys, tags, on_failure, verdict, where)


async def _aevict(store: Any, guard: Guard | None, keys: Collection[str], tags: Collection[str],
                  on_failure: OnFailure, verdict: int | None, where: str) -> bool:
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
        return _not_taken(store, guard, eviction, exc, on_failure, where)
    if guard is not None:
        guard.taken(eviction)
    return True


def _parts(store: Any, keys: Collection[str], tags: Collection[str]) -> list[tuple[Guard | None, list[str], list[str]]]:
    """An eviction's parts, one per shard (one in all on a store with one guard, or none)."""
    guards = getattr(store, "guard", None)
    if not isinstance(guards, Shards):
        return [(guards, list(keys), list(tags))]
    parts: dict[Guard, tuple[list[str], list[str]]] = {}
    for key in keys:
        parts.setdefault(guards.of(key), ([], []))[0].append(key)
    for tag in tags:
        parts.setdefault(guards.of_tag(tag), ([], []))[1].append(tag)
    return [(g, k, t) for g, (k, t) in parts.items()]


def owe(store: Any, keys: Collection[str], tags: Collection[str]) -> None:
    """Record an eviction that could not be sent (a cancellation) as owed to ``store``."""
    parts = _parts(store, keys, tags)
    for guard, part_keys, part_tags in parts:
        if guard is None:
            if store.nonblocking:
                store.delete(part_keys, part_tags)
            else:
                logger.warning("%r: an eviction was cancelled and this store cannot owe it", store)
            continue
        guard.owe(part_keys, part_tags)
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
               where: str) -> bool:
    """The store did not take ``eviction`` (or took it in part); True when nothing is owed for it."""
    if isinstance(exc, PartialEviction) and guard is not None:
        _partly_taken(store, guard, eviction, exc, where)
        failure = (exc.failed[0][1] if exc.failed else exc.unresolved[0][2])
        on_failure(Failure(failure))
        return False
    if guard is not None and guard.not_taken(eviction, exc, where):
        _replay_later(store, guard)
    on_failure(Failure(exc))
    return False


def _partly_taken(store: Any, guard: Guard, eviction: Eviction, exc: PartialEviction, where: str,
                  report: bool = True) -> None:
    """A shard's part went out but some nodes failed it: what it paid is paid, what failed is owed
    where it belongs (a node's keys to its shard; an unread tag set's tag to every shard).

    ``report``: tell the failing shards' guards (a caller's eviction; the background replay does not).
    """
    shards: Shards = store.guard
    guard.paid(*eviction.paying, eviction.purge)
    failed: set[Guard] = set()
    for keys, error in exc.failed:
        owner = shards.of(keys[0])
        failed.add(owner)
        if report:
            owner.failed(error, where)
        if owner.is_fault(error):
            owner.owe(keys, ())
            _replay_later(store, owner)
    for tag, tag_set, error in exc.unresolved:
        owner = shards.of(tag_set)
        failed.add(owner)
        if report:
            owner.failed(error, where)
        if owner.is_fault(error):
            shards.owe_everywhere([tag])
            for each in shards.guards().values():
                _replay_later(store, each)
    if report and guard not in failed:
        guard.ok(wrote=True)


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


#: What the replay's send step reports when the store took an eviction in part (accounted for already).
_PARTIAL = "partial"


def _replay_steps(ref: weakref.ref[Any], guard: Guard) -> Generator[Any, str | None, None]:
    """The background replay, as a flow: offer what is owed every REPLAY_INTERVAL, whatever the breaker
    says, until the store takes it, is closed or is dropped.

    Other processes read the store directly: they stop seeing evicted values only once the store
    takes these, so this does not wait for the breaker's reset_timeout. No retries and no breaker
    reports: this is not a caller's call. Yields ``(store, eviction)`` to send (receiving the error's
    type name, or None: never the error, whose traceback would keep the store alive; ``_PARTIAL``
    when it was taken in part, what failed being owed again), and ``None`` to sleep an interval.
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
        if failed == _PARTIAL and guard.stop_replay():
            return  # what failed is owed to other shards now, each replayed on its own
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
            except PartialEviction as exc:
                _partly_taken(step[0], guard, step[1], exc, guard.name, report=False)
                step = steps.send(_PARTIAL)
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
            except PartialEviction as exc:
                _partly_taken(step[0], guard, step[1], exc, guard.name, report=False)
                step = steps.send(_PARTIAL)
            except Exception as exc:
                step = steps.send(type(exc).__name__)
            else:
                step = steps.send(None)
    except StopIteration:
        pass
    finally:
        guard.replaying = False  # taken, closed, dropped, or the loop is going away: reads pay what is owed
