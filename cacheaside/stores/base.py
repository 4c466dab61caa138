"""The store contract: what the read and write flows need from a place that holds entries.

A store holds ``Entry`` objects under string keys and implements leases
(``acquire``/``set``/``release``), which give stale-set protection: an eviction
of a key revokes every lease on it, and a value set under a revoked lease is
refused. Sync stores implement ``Store``, async ones ``AsyncStore`` (the same
methods with an ``a`` prefix); a store may implement both. Methods raise on
store trouble; the flows, not the stores, decide how to survive it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol, runtime_checkable

from .._types import Entry, Lease
from ..guard import Guard
from ..shards import Shards

__all__ = ["AsyncStore", "Store", "StoreInfo"]


@runtime_checkable
class StoreInfo(Protocol):
    """What every store, sync or async, tells the flows about itself.

    Read-only members, so that a store may declare them as plain attributes of narrower
    types (``MemoryStore.guard`` is always None) and still be one.
    """

    @property
    def prefix(self) -> str:
        """First part of every key the store holds."""

    @property
    def clock(self) -> Callable[[], float]:
        """Wall-clock seconds, used to stamp and judge entries."""

    @property
    def serves_sync(self) -> bool:
        """Whether the sync methods (``Store``) are available."""

    @property
    def serves_async(self) -> bool:
        """Whether the async methods (``AsyncStore``) are available."""

    @property
    def nonblocking(self) -> bool:
        """True when the sync methods never block on I/O, so async code may call them directly."""

    @property
    def guard(self) -> Guard | Shards | None:
        """Breaker, retries and owed evictions for a store that can fail (None for one that can't);
        on a store of several shards, one ``Guard`` per shard (``Shards``)."""

    @property
    def lease_timeout(self) -> float:
        """Seconds a miss waits for another caller's computation of the same key before computing itself."""


@runtime_checkable
class Store(StoreInfo, Protocol):
    def get(self, key: str) -> Entry | None:
        """The entry under ``key`` while the store keeps it (possibly past its ttl), or None."""

    def peek(self, key: str) -> tuple[Entry | None, float]:
        """``get``, and the time now on the clock of the entry's ``stored_at`` such that its time to
        expiry is the store's own (a remote store's clock, read with the value): for early refresh."""

    def acquire(self, key: str, tags: Collection[str] = (), refresh: bool = False, take_over: bool = False,
                seen: float | None = None) -> Lease:
        """Take (or share) the lease to fill ``key`` with a value that will carry ``tags``.

        An eviction of the key or of one of the tags revokes the lease. ``Lease.entry``
        is a fresh value found meanwhile (then no lease is taken); with ``refresh`` the
        caller means to replace a fresh value, so a lease is always taken or shared and
        ``entry`` is None, unless ``seen`` (the ``stored_at`` of the entry the caller means to
        replace) is given and a fresh entry stored at another time is there: it is returned.
        ``take_over``: the caller waited ``lease_timeout`` for another process's holder, and now
        takes the lease from it (the holder can still store); with ``refresh`` too (``f.refresh()``),
        every fill under way is revoked instead, so that the caller's value is the one stored.
        """

    def set(self, key: str, entry: Entry, lease: Lease) -> bool:
        """Store ``entry`` if ``lease`` is still valid; False when an eviction revoked it."""

    def release(self, key: str, lease: Lease) -> None:
        """Give the lease up without a value, so a waiter can take over at once."""

    def watch(self, key: str, lease: Lease, timeout: float) -> Entry | None:
        """Wait up to ``timeout`` seconds for another process's lease holder to fill ``key``."""

    def delete(self, keys: Collection[str], tags: Collection[str] = ()) -> None:
        """Evict ``keys`` and every entry stored with one of ``tags``, revoking their leases.

        An entry stored again without a tag is not evicted by that tag.
        """

    def purge(self) -> None:
        """Evict every entry under the prefix (only after owed evictions overflowed)."""


@runtime_checkable
class AsyncStore(StoreInfo, Protocol):
    async def aget(self, key: str) -> Entry | None: ...

    async def apeek(self, key: str) -> tuple[Entry | None, float]: ...

    async def aacquire(
        self, key: str, tags: Collection[str] = (), refresh: bool = False, take_over: bool = False,
        seen: float | None = None,
    ) -> Lease: ...

    async def aset(self, key: str, entry: Entry, lease: Lease) -> bool: ...

    async def arelease(self, key: str, lease: Lease) -> None: ...

    async def awatch(self, key: str, lease: Lease, timeout: float) -> Entry | None: ...

    async def adelete(self, keys: Collection[str], tags: Collection[str] = ()) -> None: ...

    async def apurge(self) -> None: ...
