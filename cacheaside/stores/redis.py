"""``RedisStore``: entries in Redis, shared by every process that uses the same server.

A hit is one ``GET`` of the entry's envelope (``stores.envelope``). Misses, fills and
evictions are Lua scripts (``stores.redis_scripts``), each one round trip (on one server a
fill's tags are recorded by its own script): leases give stale-set protection
and single-flight across processes, and a waiting process is handed the value through a
list of its own (``BLPOP``) instead of polling.

Everything goes through redis-py's public API: the client's command methods, ``Script``
objects (``EVALSHA``, reloading a script the server lost) and pipelines, so redis-py's own
connection handling, health checks, re-authentication, instrumentation and metrics apply
to the store's commands as to any other. The sync methods serve a ``redis.Redis`` client
and the ``a``-methods a ``redis.asyncio.Redis`` one; both build the same commands and read
the replies with the same helpers.
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

from .._settings import settings
from .._types import CORRUPT, Entry, Lease, check_prefix, to_seconds
from ..exceptions import warn
from ..guard import Guard
from ..resilience import CircuitBreaker, Retry
from ..serializers import MsgpackSerializer, Serializer
from ..shards import ShardBreakers, Shards
from . import redis_scripts as lua
from ._redis_commands import Commands
from ._redis_faults import (
    aconfig_policy,
    client_options,
    config_policy,
    connect,
    diagnose,
    is_async_client,
    is_cluster_client,
    is_fault,
    is_transient,
    stall_risks,
)
from ._redis_spread import Spread
from .envelope import decode

__all__ = ["CLIENT_DEFAULTS", "CLUSTER_DEFAULTS", "RedisStore"]

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

#: What ``from_url(cluster=True)`` adds: redis-py's cluster retries off (from redis-py 6 the
#: ``retry`` above does it): a call that meets a dead primary fails at once, redis-py reads the
#: topology again, and the store's own retry goes to the promoted replica.
CLUSTER_DEFAULTS: dict[str, Any] = (
    {} if int(redis.__version__.split(".")[0]) >= 6 else {"cluster_error_retry_attempts": 0}  # 6+: ``retry``
)


class RedisStore(Commands, Spread):
    """A store in Redis for many processes: one ``GET`` per hit, leases and evictions in Lua.

    Args:
        client: a ``redis.Redis`` (serves sync functions) or ``redis.asyncio.Redis``
            (serves async functions), or a cluster client of either kind
            (``redis.RedisCluster``, ``redis.asyncio.RedisCluster``). It must not
            decode responses: entries are bytes.
        prefix: first part of every key; ``None`` takes the configured prefix.
        serializer: turns values into bytes; ``None`` means ``MsgpackSerializer()``.
        breaker: the store's ``CircuitBreaker``; ``None`` turns it off. On a cluster each
            shard gets a breaker of its own with these settings, and ``store.breaker`` is a
            ``ShardBreakers`` reporting them (the worst state, and ``.shards`` by name).
        retry: the store's ``Retry`` policy; ``None`` turns retries off.
        lease_timeout: seconds a process that misses waits for another process's
            computation of the same key before computing it itself.
        clock: wall-clock seconds used to stamp and judge entries.

    Needs Redis 6.2 or newer, and a user allowed to run scripts (see README).
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
        is_async = is_async_client(client)
        encoder = getattr(client, "get_encoder", None)
        if encoder is not None and encoder().decode_responses:
            raise ValueError(
                "RedisStore: the client decodes responses to str, but entries are bytes; "
                "create it with decode_responses=False (the default)."
            )
        self.client: Any = client
        self.serves_sync = not is_async
        self.serves_async = is_async
        #: A Redis Cluster client: a breaker per shard, evictions sent per node (``_redis_spread``).
        self.cluster = is_cluster_client(client)
        self.prefix = settings.prefix if prefix is None else check_prefix(prefix, "RedisStore")
        self.serializer: Serializer = MsgpackSerializer() if serializer is None else serializer
        self.breaker: CircuitBreaker | None = CircuitBreaker() if breaker is _DEFAULT else breaker
        self.retry = Retry() if retry is _DEFAULT else retry
        self.lease_timeout = to_seconds(lease_timeout, owner="RedisStore", param="lease_timeout")
        self.clock = clock
        self._lease_ms = max(1, int(self.lease_timeout * 1000))
        self._record_ms = max(_MIN_RECORD_MS, 10 * self._lease_ms)
        register = self.client.register_script
        acquire = lua.acquire_script(self._lease_ms, self._record_ms)
        self._acquire, self._set = register(acquire), register(lua.SET)
        # The same with a fill's tags recorded in the one script (one server; ``_send``).
        self._tagged = {id(self._acquire): register(lua.with_tags(acquire)),
                        id(self._set): register(lua.with_tags(lua.SET))}
        self._release = register(lua.RELEASE)
        self._delete = register(lua.DELETE)
        self._tag = register(lua.TAG)
        self._index, self._reap, self._peek = register(lua.INDEX), register(lua.REAP), register(lua.PEEK)
        self._delete_spread = register(lua.DELETE_SPREAD)
        timeout = (client_options(client) or {}).get("socket_timeout")
        self._block = _MAX_BLOCK if not timeout else min(_MAX_BLOCK, timeout / 2)
        self._budget = timeout or 0.25
        self.guard: Guard | Shards
        if self.cluster:
            shards = Shards(self._shard_guard, self.locate, self.tag_set)
            if self.breaker is not None:
                self.breaker = ShardBreakers(self.breaker, shards.guards)
            self.guard = shards
        else:
            self.guard = self._make_guard(repr(self), self.breaker)
        risks = stall_risks(client)
        if risks:
            warn(
                f"RedisStore: the client has {' and '.join(risks)}; while Redis is down or hung, every cached "
                "call would stall. Create it with socket_timeout=0.25, socket_connect_timeout=0.25 and "
                "retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0), as RedisStore.from_url(url) does."
            )
        #: The server's maxmemory policy was checked (once, at the first fill with tags).
        self._policy_checked = False
        self._id = os.urandom(6).hex()
        self._serial = itertools.count(1)
        #: The store made the client (``from_url``), so ``close()`` closes it too.
        self.owns_client = False

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
        cluster: bool = False,
        **kwargs: Any,
    ) -> RedisStore:
        """A store on a new client for ``url``, with timeouts fit for a cache.

        ``kwargs`` go to the client and override ``CLIENT_DEFAULTS`` (0.25 s socket
        timeouts, keepalive, health checks). redis-py's own retries are off: the
        store's ``retry`` policy retries within the call's budget instead.
        ``cluster=True`` makes a Redis Cluster client (``redis.RedisCluster`` or
        ``redis.asyncio.RedisCluster``) from the URL of any node, with the same settings.
        ``close()`` / ``aclose()`` close the client with the store.
        """
        options = dict(CLIENT_DEFAULTS)
        if asyncio:
            from redis.asyncio.retry import Retry as AsyncClientRetry

            options["retry"] = AsyncClientRetry(NoBackoff(), 0)
        else:
            from redis.retry import Retry as ClientRetry

            options["retry"] = ClientRetry(NoBackoff(), 0)
        if cluster:
            options.update(CLUSTER_DEFAULTS)
        options.update(kwargs)
        if cluster:
            factory: Any = redis.asyncio.RedisCluster if asyncio else redis.RedisCluster
        else:
            factory = redis.asyncio.Redis if asyncio else redis.Redis
        store = cls(
            connect(factory, url, options),
            prefix=prefix,
            serializer=serializer,
            breaker=breaker,
            retry=retry,
            lease_timeout=lease_timeout,
            clock=clock,
        )
        store.owns_client = True
        return store

    def __repr__(self) -> str:  # no URL: it can hold a password
        kind = ("asyncio" if self.serves_async else "sync") + (" cluster" if self.cluster else "")
        return f"RedisStore({kind}, prefix={self.prefix!r})"

    def _make_guard(self, name: str, breaker: CircuitBreaker | None) -> Guard:
        return Guard(name=name, breaker=breaker, retry=self.retry, is_fault=is_fault, is_transient=is_transient,
                     diagnose=diagnose, budget=self._budget)

    def _shard_guard(self, node: str) -> Guard:
        """The guard of a shard of the cluster, first served by ``node``."""
        breakers = self.breaker
        breaker = breakers.make() if isinstance(breakers, ShardBreakers) else None
        return self._make_guard(f"{self!r} shard {node}", breaker)

    def close(self) -> None:
        """Stop the background replay of owed evictions, and close the client if the store made it."""
        self.guard.close()
        if self.owns_client and self.serves_sync:
            self.client.close()

    async def aclose(self) -> None:
        """``close`` for a store on an asyncio client."""
        self.guard.close()
        if self.owns_client:
            await self.client.aclose()

    # -- Store (sync client) --------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        try:
            data = self.client.get(key)
        except redis.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return CORRUPT  # something else lives under the key: a miss, overwritten by the fill
            raise
        return None if data is None else decode(key, data, self.serializer)

    def _run(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], tags: Collection[str] = (), px: int = 0
    ) -> Any:
        """Run ``script`` (recording a fill's ``tags`` in the same round trip); its reply."""
        if self.serves_async:  # a sync method on an asyncio client would only make a coroutine
            raise TypeError(f"{self!r} is on an asyncio client: use its a-methods (from async code)")
        if tags and not self._policy_checked:
            self._policy_checked = True
            self._warn_policy(config_policy(self.client.config_get))
        if self.cluster and tags:
            return self._fill(script, keys, args, tags, px)
        return self._send(script, keys, args, tags, px)  # (redis-py's Script reloads a script the server lost)

    def peek(self, key: str) -> tuple[Entry | None, float]:
        return self._timed(key, self._run(self._peek, [key], []))

    def acquire(self, key: str, tags: Collection[str] = (), refresh: bool = False, take_over: bool = False,
                seen: float | None = None) -> Lease:
        call = self._acquire_args(key, tags, self._mode(refresh, take_over), seen)
        lease = self._lease(key, self._run(**call), call["args"][0])
        if lease is None:  # the script saw a fresh header on bytes that do not decode
            call = self._acquire_args(key, tags, "r")
            lease = self._lease(key, self._run(**call), call["args"][0])
        assert lease is not None
        return lease

    def set(self, key: str, entry: Entry, lease: Lease) -> bool:
        return bool(self._run(**self._set_args(key, entry, lease)))

    def release(self, key: str, lease: Lease) -> None:
        self._run(**self._release_args(key, lease))

    def watch(self, key: str, lease: Lease, timeout: float) -> Entry | None:
        wake, until = self._wait_plan(key, lease, timeout)
        while (remaining := until - time.monotonic()) > 0:
            reply = self.client.blpop([wake], timeout=max(0.001, min(remaining, self._block)))
            if reply is not None:
                return self._woken(key, reply)
        return None

    def delete(self, keys: Collection[str], tags: Collection[str] = ()) -> None:
        if self.cluster:
            self._spread_delete(keys, tags)
        elif keys or tags:
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

    # -- AsyncStore (asyncio client) ---------------------------------------------------

    async def aget(self, key: str) -> Entry | None:
        try:
            data = await self.client.get(key)
        except redis.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return CORRUPT
            raise
        return None if data is None else decode(key, data, self.serializer)

    async def _arun(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], tags: Collection[str] = (), px: int = 0
    ) -> Any:
        if tags and not self._policy_checked:
            self._policy_checked = True
            self._warn_policy(await aconfig_policy(self.client.config_get))
        if self.cluster and tags:
            return await self._afill(script, keys, args, tags, px)
        return await self._send(script, keys, args, tags, px)

    async def apeek(self, key: str) -> tuple[Entry | None, float]:
        return self._timed(key, await self._arun(self._peek, [key], []))

    async def aacquire(
        self, key: str, tags: Collection[str] = (), refresh: bool = False, take_over: bool = False,
        seen: float | None = None,
    ) -> Lease:
        call = self._acquire_args(key, tags, self._mode(refresh, take_over), seen)
        lease = self._lease(key, await self._arun(**call), call["args"][0])
        if lease is None:
            call = self._acquire_args(key, tags, "r")
            lease = self._lease(key, await self._arun(**call), call["args"][0])
        assert lease is not None
        return lease

    async def aset(self, key: str, entry: Entry, lease: Lease) -> bool:
        return bool(await self._arun(**self._set_args(key, entry, lease)))

    async def arelease(self, key: str, lease: Lease) -> None:
        await self._arun(**self._release_args(key, lease))

    async def awatch(self, key: str, lease: Lease, timeout: float) -> Entry | None:
        wake, until = self._wait_plan(key, lease, timeout)
        while (remaining := until - time.monotonic()) > 0:
            reply = await self.client.blpop([wake], timeout=max(0.001, min(remaining, self._block)))
            if reply is not None:
                return self._woken(key, reply)
        return None

    async def adelete(self, keys: Collection[str], tags: Collection[str] = ()) -> None:
        if self.cluster:
            await self._aspread_delete(keys, tags)
        elif keys or tags:
            await self._arun(**self._delete_args(keys, tags))

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
