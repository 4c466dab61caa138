"""``RedisStore``: entries in Redis, shared by every process that uses the same server.

A hit is one ``GET`` of the entry's envelope (``stores.envelope``). Misses,
fills and evictions are Lua scripts (``stores.redis_scripts``), each one round
trip (a fill's tags are recorded by one script per tag in the same pipeline):
leases give stale-set protection and single-flight across processes, and a
waiting process is handed the value through a list of its own (``BLPOP``)
instead of polling.

The store's sync methods serve a ``redis.Redis`` client and its ``a``-methods a
``redis.asyncio.Redis`` one. Both build the same commands and read the replies
with the same helpers; only the call (blocking or awaited) differs.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff

from .._settings import settings
from .._types import CORRUPT, Entry, Lease, check_prefix
from ..exceptions import CacheWarning
from ..guard import Guard
from ..resilience import CircuitBreaker, Retry
from ..serializers import MsgpackSerializer, Serializer
from . import redis_scripts as lua
from .envelope import decode, encode
from .redis_wire import AsyncWire, Wire, client_retries

__all__ = ["RedisStore"]

_DEFAULT: Any = object()

#: How long a fill's epoch outlives its lease: a computation that finishes within this
#: (and saw no eviction of its key) is stored even after waiters stopped waiting for it.
_MIN_RECORD_MS = 60_000

#: The longest a single blocking wait command lasts (it must end well within the socket timeout).
_MAX_BLOCK = 0.2

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


#: Replies that mean the server cannot do its job now (not that the request was wrong).
_FAULT_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "MISCONF", "CLUSTERDOWN", "TRYAGAIN")


def is_fault(exc: BaseException) -> bool:
    """A store fault, which counts against the breaker: unreachable, too slow, or unable to serve."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).split(" ", 1)[0] in _FAULT_REPLIES


def is_transient(exc: BaseException) -> bool:
    """A fault worth one more quick try: the connection failed (a timeout already spent the budget)."""
    return isinstance(exc, (redis.ConnectionError, ConnectionError)) and not isinstance(exc, redis.TimeoutError)


def _stall_risks(client: Any) -> list[str]:
    """Client settings under which an outage would hold callers for seconds."""
    risks = []
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if kwargs is not None and kwargs.get("socket_timeout") is None:
        risks.append("no socket_timeout (a hung server holds a call forever)")
    retries = client_retries(client)
    if retries:
        risks.append(f"redis-py's own retries on ({retries}, each up to the socket timeout)")
    return risks


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _token(lease: Lease) -> tuple[bytes, bytes]:
    """A Redis lease's token: (epoch, holder)."""
    token: tuple[bytes, bytes] = lease.token  # type: ignore[assignment]
    return token


def _is_wrongtype(exc: redis.ResponseError) -> bool:
    return str(exc).startswith("WRONGTYPE")


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
        self.client: Any = client
        self.serves_sync = not is_async
        self.serves_async = is_async
        self.prefix = settings.prefix if prefix is None else check_prefix(prefix, type(self).__name__)
        self.serializer: Serializer = MsgpackSerializer() if serializer is None else serializer
        self.breaker = CircuitBreaker() if breaker is _DEFAULT else breaker
        self.retry = Retry() if retry is _DEFAULT else retry
        self.lease_timeout = float(lease_timeout)
        self.clock = clock
        self._lease_ms = max(1, int(self.lease_timeout * 1000))
        self._record_ms = max(_MIN_RECORD_MS, 10 * self._lease_ms)
        self._acquire = self.client.register_script(lua.acquire_script(self._lease_ms, self._record_ms))
        self._set = self.client.register_script(lua.SET)
        self._release = self.client.register_script(lua.RELEASE)
        self._delete = self.client.register_script(lua.DELETE)
        self._tag = self.client.register_script(lua.TAG)
        timeout = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}).get("socket_timeout")
        self._block = _MAX_BLOCK if not timeout else min(_MAX_BLOCK, timeout / 2)
        self.guard = Guard(
            name=repr(self),
            breaker=self.breaker,
            retry=self.retry,
            is_fault=is_fault,
            is_transient=is_transient,
            budget=timeout or 0.25,
        )
        risks = _stall_risks(client)
        if risks:
            warnings.warn(
                f"RedisStore: the client has {' and '.join(risks)}; while Redis is down or hung, every cached "
                "call would stall. Create it with socket_timeout=0.25, socket_connect_timeout=0.25 and "
                "retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0), as RedisStore.from_url(url) does.",
                CacheWarning,
                stacklevel=2,
            )
        self._wire: Any = AsyncWire(client) if is_async else Wire(client)
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

    def _process(self) -> str:
        """This store in this process: the prefix of its holder ids (the pid keeps forked children apart)."""
        return f"{self._id}.{os.getpid()}."

    def _holder(self) -> str:
        return f"{self._process()}{next(self._serial)}"

    def _send(self, script: Any, keys: Sequence[str], args: Sequence[Any], tags: Collection[str], px: int) -> Any:
        """Send ``script`` (a reply, or its awaitable): ``EVALSHA`` alone or, with ``tags`` (a fill's),
        a pipeline of it and one ``TAG`` per tag, whose reply is a list. One round trip either way.

        Each command touches one slot, so the same calls run on Redis Cluster. The tags are
        recorded after the script and kept ``px`` ms from now. After an acquire, not before: a
        tag eviction that runs in between has no lease to revoke, and it came before the
        computation, which starts only once the whole pipeline has replied.
        """
        if not tags:
            return self._wire.evalsha(script.sha, keys, args)
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        for tag in tags:
            pipe.evalsha(self._tag.sha, 1, lua.tag_key(self.prefix, tag), keys[0], px)
        return pipe.execute()

    def _sources(self, script: Any, tags: Collection[str]) -> tuple[str, ...]:
        """What to load when the server lost its scripts (a restart, ``SCRIPT FLUSH``)."""
        return (script.script, self._tag.script) if tags else (script.script,)

    def _acquire_args(self, key: str, tags: Collection[str], holder: str, force: bool) -> dict[str, Any]:
        # force: take (or share) the lease even when a fresh entry is there (refreshes, unreadable bytes)
        args = [repr(self.clock()), holder, "1"] if force else [repr(self.clock()), holder]
        return {"script": self._acquire, "keys": [key], "args": args, "tags": tags, "px": self._record_ms}

    def _lease(self, key: str, holder: str, reply: Sequence[Any]) -> Lease | None:
        """The lease in an acquire reply; None when it held a value that does not decode.

        A holder of this store in this process makes the caller an owner too: it shares
        that computation's in-process flight instead of waiting on Redis.
        """
        if len(reply) == 1:
            entry = decode(key, reply[0], self.serializer)
            if entry is CORRUPT:
                return None
            return Lease(None, True, entry)
        epoch, held_by = reply[1], reply[2]
        if len(reply) == 3 or held_by.startswith(self._process().encode()):
            return Lease((epoch, held_by), True)
        return Lease((epoch, held_by), False, wait=(holder, time.monotonic() + reply[3] / 1000))

    def _set_args(self, key: str, entry: Entry, lease: Lease) -> dict[str, Any]:
        payload = encode(key, entry, self.serializer)  # SerializationError before any I/O
        epoch, holder = _token(lease)
        px = max(1, int(entry.retain * 1000))
        return {"script": self._set, "keys": [key], "args": [epoch, holder, payload, px], "tags": entry.tags, "px": px}

    def _release_args(self, key: str, lease: Lease) -> dict[str, Any]:
        return {"script": self._release, "keys": [key], "args": [_token(lease)[1]]}

    def _delete_args(self, keys: Collection[str], tags: Collection[str]) -> dict[str, Any]:
        names = list(dict.fromkeys(keys))
        count = len(names)
        names.extend(lua.tag_key(self.prefix, t) for t in dict.fromkeys(tags))
        return {"script": self._delete, "keys": names, "args": [count]}

    def _entry(self, key: str, data: bytes | None) -> Entry | None:
        return None if data is None else decode(key, data, self.serializer)

    def _woken(self, key: str, reply: Any) -> Entry | None:
        """The entry a holder handed over through a wake list; None when it let go (``0``)."""
        if reply is None or reply[1] == b"0":
            return None
        entry = self._entry(key, reply[1])
        if entry is not None and entry is not CORRUPT and entry.fresh(self.clock()):
            return entry
        return None

    def _wait_plan(self, key: str, lease: Lease, timeout: float) -> tuple[str, float]:
        waiter, until = lease.wait
        return lua.wake_key(key, waiter), min(time.monotonic() + timeout, until)

    # -- Store (sync client) --------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        try:
            data = self._wire.get(key)
        except redis.ResponseError as exc:
            if _is_wrongtype(exc):
                return CORRUPT  # something else lives under the key: a miss, overwritten by the fill
            raise
        return None if data is None else decode(key, data, self.serializer)

    def _run(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], tags: Collection[str] = (), px: int = 0
    ) -> Any:
        """Run ``script`` (recording a fill's ``tags`` in the same round trip); its reply."""
        try:
            reply = self._send(script, keys, args, tags, px)
        except redis.exceptions.NoScriptError:
            for source in self._sources(script, tags):
                self.client.script_load(source)
            reply = self._send(script, keys, args, tags, px)
        return reply[0] if tags else reply

    def acquire(self, key: str, tags: Collection[str] = (), refresh: bool = False) -> Lease:
        holder = self._holder()
        lease = self._lease(key, holder, self._run(**self._acquire_args(key, tags, holder, refresh)))
        if lease is None:  # the script saw a fresh header on bytes that do not decode
            lease = self._lease(key, holder, self._run(**self._acquire_args(key, tags, holder, True)))
        assert lease is not None
        return lease

    def set(self, key: str, entry: Entry, lease: Lease) -> bool:
        return bool(self._run(**self._set_args(key, entry, lease)))

    def release(self, key: str, lease: Lease) -> None:
        self._run(**self._release_args(key, lease))

    def watch(self, key: str, lease: Lease, timeout: float) -> Entry | None:
        wake, until = self._wait_plan(key, lease, timeout)
        while (remaining := until - time.monotonic()) > 0:
            reply = self._wire.blpop(wake, max(0.001, min(remaining, self._block)))
            if reply is not None:
                return self._woken(key, reply)
        return None

    def delete(self, keys: Collection[str], tags: Collection[str] = ()) -> None:
        if keys or tags:
            self._run(**self._delete_args(keys, tags))

    def purge(self) -> None:
        """Delete every key under the prefix (SCAN + UNLINK): only after owed evictions overflowed."""
        for pattern in self._purge_patterns():
            batch: list[Any] = []
            for name in self.client.scan_iter(match=pattern, count=1000):
                batch.append(name)
                if len(batch) >= 500:
                    self.client.unlink(*batch)
                    batch = []
            if batch:
                self.client.unlink(*batch)

    def _purge_patterns(self) -> list[str]:
        prefix = _glob_escape(self.prefix)
        return [f"{prefix}:*", "{" + f"{prefix}:*"]

    # -- AsyncStore (asyncio client) ---------------------------------------------------

    async def aget(self, key: str) -> Entry | None:
        try:
            data = await self._wire.get(key)
        except redis.ResponseError as exc:
            if _is_wrongtype(exc):
                return CORRUPT
            raise
        return None if data is None else decode(key, data, self.serializer)

    async def _arun(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], tags: Collection[str] = (), px: int = 0
    ) -> Any:
        try:
            reply = await self._send(script, keys, args, tags, px)
        except redis.exceptions.NoScriptError:
            for source in self._sources(script, tags):
                await self.client.script_load(source)
            reply = await self._send(script, keys, args, tags, px)
        return reply[0] if tags else reply

    async def aacquire(self, key: str, tags: Collection[str] = (), refresh: bool = False) -> Lease:
        holder = self._holder()
        lease = self._lease(key, holder, await self._arun(**self._acquire_args(key, tags, holder, refresh)))
        if lease is None:
            lease = self._lease(key, holder, await self._arun(**self._acquire_args(key, tags, holder, True)))
        assert lease is not None
        return lease

    async def aset(self, key: str, entry: Entry, lease: Lease) -> bool:
        return bool(await self._arun(**self._set_args(key, entry, lease)))

    async def arelease(self, key: str, lease: Lease) -> None:
        await self._arun(**self._release_args(key, lease))

    async def awatch(self, key: str, lease: Lease, timeout: float) -> Entry | None:
        wake, until = self._wait_plan(key, lease, timeout)
        while (remaining := until - time.monotonic()) > 0:
            reply = await self._wire.blpop(wake, max(0.001, min(remaining, self._block)))
            if reply is not None:
                return self._woken(key, reply)
        return None

    async def apurge(self) -> None:
        for pattern in self._purge_patterns():
            batch: list[Any] = []
            async for name in self.client.scan_iter(match=pattern, count=1000):
                batch.append(name)
                if len(batch) >= 500:
                    await self.client.unlink(*batch)
                    batch = []
            if batch:
                await self.client.unlink(*batch)

    async def adelete(self, keys: Collection[str], tags: Collection[str] = ()) -> None:
        if keys or tags:
            await self._arun(**self._delete_args(keys, tags))
