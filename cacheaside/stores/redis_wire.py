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

The wires of one pool also keep the connections they used (up to ``idle_cap``, shared by every
store on that pool) instead of handing each back to the pool after every command: the pool's
checkout (a lock, a non-blocking ``recv`` to check that nothing is left to read, connection-count
bookkeeping for metrics, an event on release) cost about a third of a hit's CPU. The wire never
leaves a reply unread (see above), which is what that ``recv`` checks. The kept connections are
still the pool's: ``disconnect()`` and ``close()`` on the client close them too (the next command
reconnects, with redis-py's health checks), and a forked child forgets them (they are the
parent's sockets). Because they are kept per pool, stores made and dropped on one client (say,
one per request) share them and never hold more than ``idle_cap``. Only redis-py's own
``ConnectionPool`` is kept from: blocking and Sentinel pools keep their own bookkeeping.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import weakref
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


#: At most this many connections kept for one pool, and at most a quarter of its
#: ``max_connections``, so that the client's other commands still find connections.
MAX_IDLE = 16

#: A kept connection unused for this long is checked as the pool checks one it hands out (a server
#: restart or idle timeout closed it: reconnect before sending, rather than fail the command).
RECHECK_AFTER = 1.0

#: The pools whose connections a wire keeps: redis-py's own. Others (blocking, Sentinel) lend
#: each connection back after every command, as before.
_KEEPING_POOLS: tuple[type, ...] = (redis.ConnectionPool, redis.asyncio.ConnectionPool)

#: The connections kept for each pool (each with when it was last used), shared by its wires.
_KEPT: weakref.WeakKeyDictionary[Any, list[tuple[Any, float]]] = weakref.WeakKeyDictionary()


def _forget_connections() -> None:
    """In a forked child: the kept connections are the parent's sockets."""
    for idle in list(_KEPT.values()):
        idle.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections)


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
        #: Connections taken from the pool and kept between commands, each with when it was last
        #: used, shared by the wires of the same pool (see the module's docstring).
        keeps = self.lean and type(self.pool) in _KEEPING_POOLS
        self.idle: list[tuple[Any, float]] = _KEPT.setdefault(self.pool, []) if keeps else []
        #: redis-py >= 7 marks a connection to reconnect on a server maintenance notification,
        #: and the pool disconnects it when it comes back; the wire does so when it keeps one.
        self.marks = hasattr(getattr(self.pool, "connection_class", None), "should_reconnect")
        limit = getattr(self.pool, "max_connections", None)
        #: How many connections to keep (a pool of fewer than 4 lends every one back each time).
        self.idle_cap = 0 if not keeps else min(MAX_IDLE, limit // 4) if isinstance(limit, int) else MAX_IDLE

    # What to do with kept connections, for both wires; each does the I/O its own way.

    def pop_kept(self) -> tuple[Any, bool] | None:
        """A kept connection and whether it sat unused long enough to be checked; None if none is kept."""
        try:
            conn, used = self.idle.pop()
        except IndexError:
            return None
        return conn, time.monotonic() - used > RECHECK_AFTER

    def room(self) -> bool:
        """Whether a connection done with its command is kept (else it goes back to the pool)."""
        return len(self.idle) < self.idle_cap

    def put(self, conn: Any) -> None:
        self.idle.append((conn, time.monotonic()))


class Wire(_Wire):
    """The commands on a sync client."""

    def take(self) -> Any:
        """A kept connection (checked if it sat unused a while), else one from the pool."""
        kept = self.pop_kept()
        if kept is None:
            return self.pool.get_connection(*self.pool_args)
        conn, due = kept
        if due:
            try:
                stale = conn.can_read()  # data nobody asked for, or the server closed it
            except (redis.RedisError, OSError):
                stale = True
            if stale:
                conn.disconnect()  # the command reconnects it
        return conn

    def keep(self, conn: Any) -> None:
        if not self.room():
            self.pool.release(conn)
            return
        if self.marks and conn.should_reconnect():
            conn.disconnect()
        self.put(conn)

    def send(self, *args: Any) -> Any:
        """One command's raw reply, on a kept connection or one from the pool; the caller checked ``lean``."""
        conn = self.take()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            conn.disconnect()  # the next command on it reconnects
            raise
        finally:
            self.keep(conn)

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

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        # The pool's check of a connection it hands out: can_read() from redis-py 8 on,
        # can_read_destructive() before (deprecated in 8).
        connection_class = getattr(self.pool, "connection_class", None)
        can_read = getattr(connection_class, "can_read", None)
        self.check = "can_read" if inspect.iscoroutinefunction(can_read) else "can_read_destructive"

    async def take(self) -> Any:
        kept = self.pop_kept()
        if kept is None:
            return await self.pool.get_connection(*self.pool_args)
        conn, due = kept
        if due and conn.is_connected:
            try:
                stale = await getattr(conn, self.check)()
            except (redis.RedisError, OSError):
                stale = True
            if stale:
                await conn.disconnect()
        return conn

    async def keep(self, conn: Any) -> None:
        if not self.room():
            await self.pool.release(conn)
            return
        if self.marks and conn.should_reconnect():
            await conn.disconnect()
        self.put(conn)

    async def write(self, conn: Any, args: tuple[Any, ...]) -> None:
        """Send one command on ``conn``: redis-py's ``send_command`` without its task per command.

        redis-py bounds the write with ``asyncio.wait_for``, which before Python 3.12 creates a
        task per call: about a quarter of an asyncio hit's instructions. A command goes into the
        transport's buffer at once (``writelines`` never blocks); only when the buffer does not
        empty straight away (a large value, a server that stopped reading) does the wire wait for
        it to drain, bounded by the socket timeout as redis-py bounds it, with redis-py's errors.
        A connection that is not open (or closing) or is due its health check takes redis-py's path.
        """
        writer = getattr(conn, "_writer", None)
        if (
            writer is None
            or not conn.is_connected
            or writer.transport.is_closing()
            or (conn.health_check_interval and asyncio.get_running_loop().time() > conn.next_health_check)
        ):
            await conn.send_command(*args)
            return
        try:
            writer.writelines(conn.pack_command(*args))
            if writer.transport.get_write_buffer_size():
                await asyncio.wait_for(writer.drain(), conn.socket_timeout or None)
        except asyncio.TimeoutError:
            await conn.disconnect(nowait=True)
            raise redis.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise redis.ConnectionError(f"Error while writing to socket: {exc}") from exc

    async def send(self, *args: Any) -> Any:
        conn = await self.take()
        try:
            await self.write(conn, args)
            return await conn.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await self.keep(conn)

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
