"""``MemoryStore``: entries in process memory, on a cachetools ``TLRUCache``."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection
from dataclasses import replace

from cachetools import TLRUCache

from .._settings import settings
from .._types import CLEAR_MARK, CORRUPT, Entry, Lease, check_prefix
from ..exceptions import SerializationError
from ..guard import Guard
from ..policy import fresh
from ..serializers import Serializer

__all__ = ["MemoryStore"]


def _expiry(_key: str, entry: Entry, _now: float) -> float:
    return entry.stored_at + entry.ttl + entry.grace


def _indexed(tags: Collection[str]) -> list[str]:
    """The tags the tag index holds: all but a function's own (``CLEAR_MARK``). ``f.clear()`` is rare
    and finds its entries by a scan (``delete``), so that a fill pays no set membership for it."""
    return [t for t in tags if not t.startswith(CLEAR_MARK)]


#: Every live store, for ``_after_fork``.
_stores: weakref.WeakSet[MemoryStore] = weakref.WeakSet()


def _after_fork() -> None:
    """A forked child has none of the parent's threads: the leases they held would never be filled
    or released there (a miss would wait for them), and a lock one of them held would stay held."""
    for store in list(_stores):
        store._lock = threading.Lock()
        store._leases.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class MemoryStore:
    """In-process, thread-safe store with per-entry TTL and LRU eviction beyond ``maxsize``.

    Holds references to cached values (like ``functools.lru_cache``): a hit returns the
    very object that was cached. Given a ``serializer``, it stores bytes instead and every
    hit is an independent copy.

    Leases are per-key tokens, held only while a computation runs: an eviction revokes the
    key's token, so a value computed before the eviction is refused when it is set.

    Args:
        maxsize: the most entries kept (the least recently used go first); 0 stores
            nothing, None is unbounded, as with ``functools.lru_cache``.
        serializer: store values as bytes through it (e.g. ``MsgpackSerializer()``).
        prefix: first part of every key; ``None`` takes the configured prefix.
        clock: wall-clock seconds; inject a fake one in tests.
    """

    serves_sync = True
    serves_async = True
    nonblocking = True
    #: Nothing here fails the way a remote store does: no breaker, retries or owed evictions.
    guard: Guard | None = None
    #: Leases here are never held by another process: nothing waits on one (the protocol's member).
    lease_timeout = 5.0

    def __init__(
        self,
        maxsize: int | None = 100_000,
        *,
        serializer: Serializer | None = None,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if maxsize is not None and (isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0):
            raise ValueError(
                f"MemoryStore: maxsize must be an int >= 0 (0 stores nothing) or None (unbounded), got {maxsize!r}"
            )
        self.prefix = settings.prefix if prefix is None else check_prefix(prefix, "MemoryStore")
        self.clock = clock
        self.serializer = serializer
        self.maxsize = maxsize
        self._lock = threading.Lock()
        bound = sys.maxsize if maxsize is None else max(maxsize, 1)
        self._data: TLRUCache[str, Entry] = TLRUCache(bound, ttu=_expiry, timer=clock)
        # key -> (token, tags of the value being computed); tag evictions revoke these too.
        self._leases: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._tokens = itertools.count(1)
        # tag -> keys stored (or being filled) with it; rebuilt from the live ones when it outgrows them.
        self._tags: dict[str, set[str]] = {}
        self._memberships = 0
        self._recount = 0  # memberships past which the tag index is next checked for dead ones
        _stores.add(self)

    def __repr__(self) -> str:
        return f"MemoryStore(maxsize={self.maxsize}, entries={len(self._data)})"

    def __bool__(self) -> bool:
        return True  # an empty store is still a store (``store or default`` must not call __len__)

    def __len__(self) -> int:
        """The number of entries held (expired ones are dropped first)."""
        with self._lock:
            self._data.expire()
            return len(self._data)

    def _copy(self, entry: Entry) -> Entry:
        """The entry as a hit gives it: itself, or (with a serializer) a copy, or ``CORRUPT`` when the
        serializer cannot read its bytes back (a class it was not given: a miss, as on Redis)."""
        if self.serializer is None:
            return entry
        try:
            return replace(entry, value=self.serializer.loads(entry.value))
        except SerializationError:
            return CORRUPT

    # -- Store -------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        with self._lock:
            try:
                entry = self._data[key]
            except KeyError:
                return None
        return entry if self.serializer is None else self._copy(entry)

    def peek(self, key: str) -> tuple[Entry | None, float]:
        return self.get(key), self.clock()  # entries are stamped and judged on this store's own clock

    def acquire(self, key: str, tags: Collection[str] = (), refresh: bool = False, take_over: bool = False,
                seen: float | None = None) -> Lease:
        with self._lock:
            found = None if refresh and seen is None else self._held(key)
            if found is not None and (not fresh(found, self.clock()) or (refresh and found.stored_at == seen)):
                found = None
            copy = None if found is None else self._copy(found)
            if copy is CORRUPT:
                found = None
            if found is None:  # a fresh entry found meanwhile takes no lease
                held = self._leases.get(key)
                if held is None or (refresh and take_over):  # f.refresh(): revoke the fills under way
                    token = next(self._tokens)
                    self._leases[key] = (token, tuple(tags))
                    # Index the lease under its tags now: a tag eviction during the
                    # computation must revoke it, though no entry carries the tag yet.
                    self._index(key, tags)
                else:
                    token = held[0]
        if found is not None:
            return Lease(None, True, copy)
        return Lease(token)

    def set(self, key: str, entry: Entry, lease: Lease) -> bool:
        if self.serializer is not None:
            entry = replace(entry, value=self.serializer.dumps(entry.value))
        with self._lock:
            held = self._leases.get(key)
            if held is None or held[0] != lease.token:
                return False  # revoked by an eviction while the value was computed
            del self._leases[key]
            if self.maxsize == 0:
                return True  # stores nothing
            old = self._held(key) if self._tags else None  # no tag indexed: no old tags to unindex
            self._data[key] = entry
            if old is not None:
                for tag in set(old.tags).difference(entry.tags):
                    self._tags.get(tag, set()).discard(key)
            self._index(key, entry.tags)
        return True

    def _held(self, key: str) -> Entry | None:
        """The live entry under ``key``, or None (for a key that is usually absent: the cheapest
        lookup cachetools has for one, ``in``; ``get`` and ``[]`` cost more, and ``[]`` raises twice)."""
        if key not in self._data:
            return None
        try:
            return self._data[key]
        except KeyError:  # it expired between the two
            return None

    def _index(self, key: str, tags: Collection[str]) -> None:
        tags = _indexed(tags) if tags else ()
        if not tags:
            return
        for tag in tags:
            self._tags.setdefault(tag, set()).add(key)
        self._memberships += len(tags)
        if self._memberships > self._recount:  # (len() expires the cache first: asked only now and then)
            if self._memberships > 2 * (len(self._data) + len(self._leases)) + 1024:
                self._rebuild_tags()
            self._recount = self._memberships + max(1024, self._memberships // 2)

    def release(self, key: str, lease: Lease) -> None:
        with self._lock:
            held = self._leases.get(key)
            if held is not None and held[0] == lease.token:
                del self._leases[key]

    def watch(self, key: str, lease: Lease, timeout: float) -> Entry | None:
        return None  # leases here are never held by another process

    def delete(self, keys: Collection[str], tags: Collection[str] = ()) -> None:
        with self._lock:
            doomed = set(keys)
            for tag in tags:
                if tag.startswith(CLEAR_MARK):  # a function's own tag: not indexed, found by a scan
                    doomed.update(k for k, e in self._data.items() if tag in e.tags)
                    doomed.update(k for k, (_, held) in self._leases.items() if tag in held)
                    continue
                members = self._tags.pop(tag, None)
                if not members:
                    continue
                self._memberships -= len(members)
                for key in members:
                    # Only what carries the tag now: an entry stored again without it stays.
                    entry = self._data.get(key)
                    held = self._leases.get(key)
                    if (entry is not None and tag in entry.tags) or (held is not None and tag in held[1]):
                        doomed.add(key)
            for key in doomed:
                self._data.pop(key, None)
                self._leases.pop(key, None)  # revoke: a fill that started before this is refused

    def purge(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Drop every entry and revoke every lease."""
        with self._lock:
            self._data.clear()
            self._leases.clear()
            self._tags.clear()
            self._memberships = 0

    def _rebuild_tags(self) -> None:
        self._data.expire()
        tags: dict[str, set[str]] = {}
        for key, entry in self._data.items():
            for tag in _indexed(entry.tags):
                tags.setdefault(tag, set()).add(key)
        for key, (_, lease_tags) in self._leases.items():
            for tag in _indexed(lease_tags):
                tags.setdefault(tag, set()).add(key)
        self._tags = tags
        self._memberships = sum(len(m) for m in tags.values())

    # -- AsyncStore: nothing here blocks, so the async twins are the sync methods --

    async def aget(self, key: str) -> Entry | None:
        return self.get(key)

    async def apeek(self, key: str) -> tuple[Entry | None, float]:
        return self.peek(key)

    async def aacquire(
        self, key: str, tags: Collection[str] = (), refresh: bool = False, take_over: bool = False,
        seen: float | None = None,
    ) -> Lease:
        return self.acquire(key, tags, refresh, take_over, seen)

    async def aset(self, key: str, entry: Entry, lease: Lease) -> bool:
        return self.set(key, entry, lease)

    async def arelease(self, key: str, lease: Lease) -> None:
        self.release(key, lease)

    async def awatch(self, key: str, lease: Lease, timeout: float) -> Entry | None:
        return None

    async def adelete(self, keys: Collection[str], tags: Collection[str] = ()) -> None:
        self.delete(keys, tags)

    async def apurge(self) -> None:
        self.clear()
