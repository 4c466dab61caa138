"""``RedisStore``: entries in Redis, shared by every process that uses the same server.

A hit is one ``GET`` of the entry's envelope (``stores.envelope``). Misses,
fills and evictions are Lua scripts (``stores.redis_scripts``), each one round
trip: leases give stale-set protection and single-flight across processes, and
a waiting process hears about the value on the lease's pub/sub channel instead
of polling.

The store's sync methods serve a ``redis.Redis`` client and its ``a``-methods a
``redis.asyncio.Redis`` one. Both build the same commands and read the replies
with the same helpers; only the call (blocking or awaited) differs.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff

from .._types import CORRUPT, Entry, Lease
from ..resilience import CircuitBreaker, Retry
from ..serializers import MsgpackSerializer, Serializer
from . import redis_scripts as lua
from .envelope import decode, encode

__all__ = ["RedisStore"]

_DEFAULT: Any = object()

#: How long a fill's epoch outlives its lease: a computation that finishes within this
#: (and saw no eviction of its key) is stored even after waiters stopped waiting for it.
_MIN_RECORD_MS = 60_000

#: Pub/sub connections a store keeps open between waits.
_IDLE_PUBSUBS = 4

#: ``from_url``'s client settings; docs/design.md gives the reason for each.
CLIENT_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 0.25,
    "socket_connect_timeout": 0.25,
    "socket_keepalive": True,
    "health_check_interval": 30,
}

_SYNC_CLIENTS: tuple[type, ...] = (redis.Redis, redis.RedisCluster)
_ASYNC_CLIENTS: tuple[type, ...] = (redis.asyncio.Redis, redis.asyncio.RedisCluster)


def _is_async_client(client: object) -> bool:
    if isinstance(client, _ASYNC_CLIENTS):
        return True
    if isinstance(client, _SYNC_CLIENTS):
        return False
    raise TypeError(
        f"RedisStore: client must be a redis.Redis or redis.asyncio.Redis (or a cluster client), "
        f"got {type(client).__name__}; or use RedisStore.from_url(url)."
    )


def _token(lease: Lease) -> tuple[bytes, bytes]:
    """A Redis lease's token: (epoch, holder)."""
    token: tuple[bytes, bytes] = lease.token  # type: ignore[assignment]
    return token


def _is_wrongtype(exc: redis.ResponseError) -> bool:
    return str(exc).startswith("WRONGTYPE")


class _Listener:
    """A pub/sub connection that waits take turns on, and its count of subscriptions sent and confirmed."""

    __slots__ = ("confirmed", "pubsub", "sent")

    def __init__(self, pubsub: Any) -> None:
        self.pubsub = pubsub
        self.sent = 0
        self.confirmed = 0


class RedisStore:
    """A store in Redis for many processes: one ``GET`` per hit, leases and evictions in Lua.

    Args:
        client: a ``redis.Redis`` (serves sync functions) or ``redis.asyncio.Redis``
            (serves async functions), or a cluster client of either kind. It must not
            decode responses: entries are bytes.
        prefix: first part of every key; ``None`` takes the configured prefix.
        serializer: turns values into bytes; ``None`` means ``MsgpackSerializer()``.
        breaker: the store's ``CircuitBreaker``; ``None`` turns it off.
        retry: the store's ``Retry`` policy; ``None`` turns retries off.
        lease_timeout: seconds a process that misses waits for another process's
            computation of the same key before computing it itself.
        clock: wall-clock seconds used to stamp and judge entries.
    """

    nonblocking = False

    def __init__(
        self,
        client: Any,
        *,
        prefix: str | None = None,
        serializer: Serializer | None = None,
        breaker: CircuitBreaker | None = _DEFAULT,
        retry: Retry | None = _DEFAULT,
        lease_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        is_async = _is_async_client(client)
        encoder = getattr(client, "get_encoder", None)
        if encoder is not None and encoder().decode_responses:
            raise ValueError(
                "RedisStore: the client decodes responses to str, but entries are bytes; "
                "create it with decode_responses=False (the default)."
            )
        if isinstance(lease_timeout, bool) or not isinstance(lease_timeout, (int, float)) or not lease_timeout > 0:
            raise ValueError(f"RedisStore: lease_timeout must be a positive number of seconds, got {lease_timeout!r}")
        from ..config import settings  # configured prefix, read once at creation

        self.client: Any = client
        self.serves_sync = not is_async
        self.serves_async = is_async
        self.prefix = settings.prefix if prefix is None else prefix
        self.serializer: Serializer = MsgpackSerializer() if serializer is None else serializer
        self.breaker = CircuitBreaker() if breaker is _DEFAULT else breaker
        self.retry = Retry() if retry is _DEFAULT else retry
        self.lease_timeout = float(lease_timeout)
        self.clock = clock
        self._lease_ms = max(1, int(self.lease_timeout * 1000))
        self._record_ms = max(_MIN_RECORD_MS, 10 * self._lease_ms)
        self._acquire = self.client.register_script(lua.ACQUIRE)
        self._set = self.client.register_script(lua.SET)
        self._release = self.client.register_script(lua.RELEASE)
        self._peek = self.client.register_script(lua.PEEK)
        self._delete = self.client.register_script(lua.DELETE)
        self._idle: list[_Listener] = []  # pub/sub connections between waits (list ops are atomic)
        self._id = os.urandom(6).hex()
        self._serial = itertools.count(1)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        asyncio: bool = False,
        prefix: str | None = None,
        serializer: Serializer | None = None,
        breaker: CircuitBreaker | None = _DEFAULT,
        retry: Retry | None = _DEFAULT,
        lease_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> RedisStore:
        """A store on a new client for ``url``, with timeouts fit for a cache.

        ``kwargs`` go to the client and override ``CLIENT_DEFAULTS`` (0.25 s socket
        timeouts, keepalive, health checks). redis-py's own retries are off: the
        store's ``retry`` policy retries within the call's budget instead.
        """
        options = dict(CLIENT_DEFAULTS)
        if asyncio:
            from redis.asyncio.retry import Retry as AsyncClientRetry

            options["retry"] = AsyncClientRetry(NoBackoff(), 0)
        else:
            from redis.retry import Retry as ClientRetry

            options["retry"] = ClientRetry(NoBackoff(), 0)
        options.update(kwargs)
        factory: Any = redis.asyncio.Redis if asyncio else redis.Redis
        client = factory.from_url(url, **options)
        return cls(
            client,
            prefix=prefix,
            serializer=serializer,
            breaker=breaker,
            retry=retry,
            lease_timeout=lease_timeout,
            clock=clock,
        )

    def __repr__(self) -> str:  # no URL: it can hold a password
        kind = "asyncio" if self.serves_async else "sync"
        return f"RedisStore({kind}, prefix={self.prefix!r})"

    # -- commands and replies, shared by the sync and async methods ---------------

    def _holder(self) -> str:
        return f"{self._id}.{os.getpid()}.{next(self._serial)}"

    def _mine(self, holder: bytes) -> bool:
        """Whether a lease holder is this store in this process (so callers here share its flight)."""
        return holder.startswith(f"{self._id}.{os.getpid()}.".encode())

    def _acquire_args(self, key: str, tags: Collection[str], holder: str, force: bool) -> dict[str, Any]:
        # force: take (or share) the lease even when a fresh entry is there (refreshes, unreadable bytes)
        keys = [key, lua.lease_key(key), *(lua.tag_key(self.prefix, t) for t in tags)]
        args = [repr(self.clock()), holder, self._lease_ms, self._record_ms, 1 if force else 0]
        return {"keys": keys, "args": args}

    def _lease(self, key: str, reply: Sequence[Any]) -> Lease | None:
        """The lease in an acquire reply; None when it held a value that does not decode."""
        if len(reply) == 1:
            entry = decode(key, reply[0], self.serializer)
            if entry is CORRUPT:
                return None
            return Lease(None, True, entry)
        epoch, holder = reply[1], reply[2]
        return Lease((epoch, holder), self._mine(holder))

    def _set_args(self, key: str, entry: Entry, lease: Lease) -> dict[str, Any]:
        payload = encode(key, entry, self.serializer)  # SerializationError before any I/O
        epoch, holder = _token(lease)
        px = max(1, int(entry.retain * 1000))
        keys = [key, lua.lease_key(key), *(lua.tag_key(self.prefix, t) for t in entry.tags)]
        return {"keys": keys, "args": [epoch, holder, payload, px]}

    def _release_args(self, key: str, lease: Lease) -> dict[str, Any]:
        return {"keys": [key, lua.lease_key(key)], "args": [_token(lease)[1]]}

    def _delete_args(self, keys: Collection[str], tags: Collection[str]) -> dict[str, Any]:
        unique = list(dict.fromkeys(keys))
        names = [name for key in unique for name in (key, lua.lease_key(key))]
        names.extend(lua.tag_key(self.prefix, t) for t in dict.fromkeys(tags))
        return {"keys": names, "args": [len(unique)]}

    def _entry(self, key: str, data: bytes | None) -> Entry | None:
        return None if data is None else decode(key, data, self.serializer)

    def _listener(self) -> _Listener:
        return self._idle.pop() if self._idle else _Listener(self.client.pubsub())

    def _done_watching(self, listener: _Listener, reusable: bool) -> bool:
        """Keep a pub/sub connection for the next wait (connecting is most of a wait's cost).

        Returns False when the caller must close it instead (it failed, or enough are kept).
        """
        if reusable and len(self._idle) < _IDLE_PUBSUBS:
            self._idle.append(listener)
            return True
        if self.serves_sync:
            listener.pubsub.close()
            return True
        return False

    def _watched(self, key: str, lease: Lease, reply: Sequence[Any], deadline: float) -> tuple[float, Entry | None]:
        """(when to stop waiting, entry) from a look at the key while waiting for another process's fill.

        The wait ends at once with the entry when it is there, and without one when the
        lease was let go, revoked or taken over; else at our deadline or the holder's.
        """
        data, holder, left_ms = reply
        entry = self._entry(key, data)
        now = time.monotonic()
        if entry is not None and entry is not CORRUPT and self.clock() < entry.expires_at:
            return now, entry
        if holder != _token(lease)[1]:
            return now, None
        return min(deadline, now + left_ms / 1000), None

    def _heard(self, key: str, listener: _Listener, message: Any) -> tuple[bool, Entry | None]:
        """(done, entry) from a message on the lease channel: the filled value, or ``0`` when let go.

        Messages that reach the connection before this wait's own subscription is confirmed
        belong to an earlier wait on it (perhaps on the same key, with a value evicted since):
        they are skipped, never served.
        """
        if message is None:
            return False, None
        kind = message.get("type")
        if kind == "subscribe":
            listener.confirmed += 1
            return False, None
        if kind != "message" or listener.confirmed < listener.sent:
            return False, None
        data = message["data"]
        if data == b"0":
            return True, None
        entry = self._entry(key, data)
        if entry is not None and entry is not CORRUPT and self.clock() < entry.expires_at:
            return True, entry
        return True, None

    # -- Store (sync client) --------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        try:
            data = self.client.get(key)
        except redis.ResponseError as exc:
            if _is_wrongtype(exc):
                return CORRUPT  # something else lives under the key: a miss, overwritten by the fill
            raise
        return None if data is None else decode(key, data, self.serializer)

    def acquire(self, key: str, tags: Collection[str] = (), refresh: bool = False) -> Lease:
        holder = self._holder()
        lease = self._lease(key, self._acquire(**self._acquire_args(key, tags, holder, refresh)))
        if lease is None:  # the script saw a fresh header on bytes that do not decode
            lease = self._lease(key, self._acquire(**self._acquire_args(key, tags, holder, True)))
        assert lease is not None
        return lease

    def set(self, key: str, entry: Entry, lease: Lease) -> bool:
        return bool(self._set(**self._set_args(key, entry, lease)))

    def release(self, key: str, lease: Lease) -> None:
        self._release(**self._release_args(key, lease))

    def watch(self, key: str, lease: Lease, timeout: float) -> Entry | None:
        channel = lua.lease_key(key)
        listener = self._listener()
        reusable = False
        try:
            listener.pubsub.subscribe(channel)  # before looking, so no notification falls in between
            listener.sent += 1
            until, entry = self._watched(key, lease, self._peek(keys=[key, channel]), time.monotonic() + timeout)
            while (remaining := until - time.monotonic()) > 0:
                done, entry = self._heard(key, listener, listener.pubsub.get_message(timeout=remaining))
                if done:
                    break
            listener.pubsub.unsubscribe(channel)
            reusable = True
            return entry
        finally:
            self._done_watching(listener, reusable)

    def delete(self, keys: Collection[str], tags: Collection[str] = ()) -> None:
        if keys or tags:
            self._delete(**self._delete_args(keys, tags))

    # -- AsyncStore (asyncio client) ---------------------------------------------------

    async def aget(self, key: str) -> Entry | None:
        try:
            data = await self.client.get(key)
        except redis.ResponseError as exc:
            if _is_wrongtype(exc):
                return CORRUPT
            raise
        return None if data is None else decode(key, data, self.serializer)

    async def aacquire(self, key: str, tags: Collection[str] = (), refresh: bool = False) -> Lease:
        holder = self._holder()
        lease = self._lease(key, await self._acquire(**self._acquire_args(key, tags, holder, refresh)))
        if lease is None:
            lease = self._lease(key, await self._acquire(**self._acquire_args(key, tags, holder, True)))
        assert lease is not None
        return lease

    async def aset(self, key: str, entry: Entry, lease: Lease) -> bool:
        return bool(await self._set(**self._set_args(key, entry, lease)))

    async def arelease(self, key: str, lease: Lease) -> None:
        await self._release(**self._release_args(key, lease))

    async def awatch(self, key: str, lease: Lease, timeout: float) -> Entry | None:
        channel = lua.lease_key(key)
        listener = self._listener()
        reusable = False
        try:
            await listener.pubsub.subscribe(channel)
            listener.sent += 1
            reply = await self._peek(keys=[key, channel])
            until, entry = self._watched(key, lease, reply, time.monotonic() + timeout)
            while (remaining := until - time.monotonic()) > 0:
                message = await listener.pubsub.get_message(timeout=remaining)
                done, entry = self._heard(key, listener, message)
                if done:
                    break
            await listener.pubsub.unsubscribe(channel)
            reusable = True
            return entry
        finally:
            if not self._done_watching(listener, reusable):
                await listener.pubsub.aclose()

    async def adelete(self, keys: Collection[str], tags: Collection[str] = ()) -> None:
        if keys or tags:
            await self._delete(**self._delete_args(keys, tags))
