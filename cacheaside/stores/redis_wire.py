"""The store's three plain commands (``GET``, ``EVALSHA``, ``BLPOP``) over redis-py's own pool and connections.

redis-py's ``execute_command`` wraps every command in machinery a cache hit pays for and
``RedisStore`` does not use: a retry object and its closure (the store has its own retries,
and asks for the client's to be off), metrics hooks, client-side-cache and single-connection
branches, response callbacks. On this project's benchmark machine that is about a fifth of a
``GET``'s CPU, as much as everything else a hit does. So when the client is a plain one, whose
``execute_command`` would do nothing more for these commands than send, read and give the
connection back, the store does exactly that itself, with redis-py's pool, connection, packer
and parser: :func:`lean_ok` says when. Otherwise, and whenever ``execute_command`` is replaced
on the client's class after the store was made (tracing instrumentation does that), the
client's own methods run.

Error handling is redis-py's: a ``ResponseError`` leaves the connection in step (the reply was
read whole); anything else, cancellation included, disconnects it before it goes back to the
pool (redis-py's connection does so itself on a failed or cancelled read or write; the wire does
it again for anything else that escapes, as ``execute_command`` does), so a half-read reply can
never be taken for the next command's.
"""

from __future__ import annotations

import inspect
from typing import Any

import redis
import redis.asyncio

__all__ = ["AsyncWire", "Wire", "client_retries", "lean_ok"]

_STOCK = {False: redis.Redis.execute_command, True: redis.asyncio.Redis.execute_command}
#: The commands whose raw reply the store takes as it is (``BLPOP``'s callback only makes a tuple of a list).
_RAW = ("GET", "EVALSHA")


def client_retries(client: Any) -> int:
    """How many times redis-py itself retries a failed command on ``client`` (0: it doesn't)."""
    get_retry = getattr(client, "get_retry", None)
    retry = get_retry() if get_retry is not None else None
    if retry is None:
        return 0
    get_retries = getattr(retry, "get_retries", None)  # redis-py >= 6; 5.x keeps the count in _retries
    return int(get_retries() if get_retries is not None else getattr(retry, "_retries", 0))


def _metrics_on() -> bool:
    """Whether redis-py's own OpenTelemetry metrics (redis-py >= 8) are on: they hook execute_command."""
    try:
        from redis.observability.providers import get_observability_instance
    except ImportError:
        return False
    try:
        manager = get_observability_instance().get_provider_manager()
        return manager is not None and bool(manager.config.enabled_telemetry)
    except Exception:  # an API that moved: assume on, and keep redis-py's path
        return True


def lean_ok(client: Any, is_async: bool) -> bool:
    """Whether the store may send its commands itself on ``client`` without changing what happens.

    True for a stock ``redis.Redis`` / ``redis.asyncio.Redis`` (no subclass or instance
    override of ``execute_command``) on a pool, without redis-py's retries, client-side
    caching, single connection, response callbacks for these commands, or metrics.
    """
    pool = getattr(client, "connection_pool", None)
    callbacks = getattr(client, "response_callbacks", {})
    return (
        pool is not None
        and getattr(type(client), "execute_command", None) is _STOCK[is_async]
        and "execute_command" not in vars(client)
        and getattr(client, "connection", None) is None
        and not getattr(client, "single_connection_client", False)
        and getattr(pool, "cache", None) is None
        and client_retries(client) == 0
        and not any(callbacks.get(name) for name in _RAW)
        and not _metrics_on()
    )


def _pool_args(pool: Any) -> tuple[str, ...]:
    """What ``pool.get_connection`` needs: redis-py 5.x requires a command name, later ones warn on it."""
    try:
        param = inspect.signature(pool.get_connection).parameters.get("command_name")
    except (TypeError, ValueError):
        return ()
    return ("GET",) if param is not None and param.default is param.empty else ()


class _Wire:
    """What both wires decide once: whether to go lean on ``client``, and with which pool."""

    is_async = False

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lean = lean_ok(client, self.is_async)
        self.pool: Any = client.connection_pool if self.lean else None
        self.pool_args = _pool_args(self.pool) if self.lean else ()
        #: redis-py's ``execute_command`` when lean, else None: each command's one test is whether
        #: the client's class still has it (tracing may replace it after the store was made).
        self.stock = _STOCK[self.is_async] if self.lean else None


class Wire(_Wire):
    """The commands on a sync client."""

    def send(self, *args: Any) -> Any:
        """One command's raw reply, through a pooled connection; the caller checked ``lean``."""
        pool = self.pool
        conn = pool.get_connection(*self.pool_args)
        try:
            conn.send_command(*args)
            return conn.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def get(self, key: str) -> bytes | None:
        if type(self.client).execute_command is self.stock:
            return self.send("GET", key)  # type: ignore[no-any-return]
        return self.client.get(key)  # type: ignore[no-any-return]

    def evalsha(self, sha: str, keys: Any, args: Any) -> Any:
        if type(self.client).execute_command is self.stock:
            return self.send("EVALSHA", sha, len(keys), *keys, *args)
        return self.client.evalsha(sha, len(keys), *keys, *args)

    def blpop(self, key: str, timeout: float) -> Any:
        """``[key, value]`` (or a tuple), or None when ``timeout`` seconds passed first."""
        if type(self.client).execute_command is self.stock:
            return self.send("BLPOP", key, timeout)
        return self.client.blpop([key], timeout=timeout)


class AsyncWire(_Wire):
    """The commands on an asyncio client: ``Wire`` with awaits."""

    is_async = True

    async def send(self, *args: Any) -> Any:
        pool = self.pool
        conn = await pool.get_connection(*self.pool_args)
        try:
            await conn.send_command(*args)
            return await conn.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)

    async def get(self, key: str) -> bytes | None:
        if type(self.client).execute_command is self.stock:
            return await self.send("GET", key)  # type: ignore[no-any-return]
        return await self.client.get(key)  # type: ignore[no-any-return]

    async def evalsha(self, sha: str, keys: Any, args: Any) -> Any:
        if type(self.client).execute_command is self.stock:
            return await self.send("EVALSHA", sha, len(keys), *keys, *args)
        return await self.client.evalsha(sha, len(keys), *keys, *args)

    async def blpop(self, key: str, timeout: float) -> Any:
        if type(self.client).execute_command is self.stock:
            return await self.send("BLPOP", key, timeout)
        return await self.client.blpop([key], timeout=timeout)
