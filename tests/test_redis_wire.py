"""The store's lean command path (``stores.redis_wire``): taken only where it changes nothing, and never out of step.

The store sends ``GET``, ``EVALSHA`` and ``BLPOP`` through redis-py's pool and
connections itself when the client's ``execute_command`` would add nothing; these
tests pin when that is, that tracing added later still sees every command, and that
a read cut short (cancelled, timed out, refused) never leaves a reply for the next one.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry as ClientRetry

from cacheaside import RedisStore, cache_aside, invalidates
from cacheaside.stores import redis_wire
from cacheaside.stores.redis_wire import AsyncWire, Wire, lean_ok

from .conftest import redis_store
from .helpers import LOOP
from .redis_server import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A server of the test's own, to pause (``redis_server`` only makes the skip/fail decision)."""
    own = RedisServer()
    yield own
    own.resume() if own.proc is not None and own.proc.poll() is None else None
    own.stop()


class Traced(redis.Redis):
    def execute_command(self, *args: Any, **options: Any) -> Any:
        return super().execute_command(*args, **options)


def test_lean_for_the_clients_from_url_makes(redis_server: RedisServer) -> None:
    sync = RedisStore.from_url(redis_server.url)
    asyn = RedisStore.from_url(redis_server.url, asyncio=True)
    assert lean_ok(sync.client, is_async=False)
    assert lean_ok(asyn.client, is_async=True)
    sync.client.close()
    LOOP.run_until_complete(asyn.client.aclose())


@pytest.mark.parametrize(
    "why",
    ["redis-py retries", "single connection", "subclass overrides execute_command", "instance override",
     "a GET response callback", "redis-py metrics on"],
)
def test_not_lean_where_redis_py_would_do_more(
    redis_server: RedisServer, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    options: dict[str, Any] = {"retry": ClientRetry(NoBackoff(), 0)}
    cls: type[redis.Redis] = redis.Redis
    if why == "redis-py retries":
        options["retry"] = ClientRetry(NoBackoff(), 2)
    elif why == "single connection":
        options["single_connection_client"] = True
    elif why == "subclass overrides execute_command":
        cls = Traced
    client = cls.from_url(redis_server.url, **options)
    if why == "instance override":
        client.execute_command = client.execute_command  # type: ignore[method-assign]
    elif why == "a GET response callback":
        client.set_response_callback("GET", lambda r, **kw: r)
    elif why == "redis-py metrics on":  # redis-py 8's OpenTelemetry metrics hook execute_command
        monkeypatch.setattr(redis_wire, "_metrics_on", lambda: True)
    assert not lean_ok(client, is_async=False)
    # ...and the store still works on it, through the client's own methods.
    client.set("k", b"v")
    assert Wire(client).get("k") == b"v"
    client.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tracing_added_after_the_store_was_made_sees_every_command(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    seen: list[str] = []
    cls: Any = redis.asyncio.Redis if mode == "async" else redis.Redis
    original = cls.execute_command

    if mode == "async":
        async def traced(self: Any, *args: Any, **options: Any) -> Any:
            seen.append(str(args[0]))
            return await original(self, *args, **options)
    else:
        def traced(self: Any, *args: Any, **options: Any) -> Any:
            seen.append(str(args[0]))
            return original(self, *args, **options)

    with redis_store(redis_server, asyncio=mode == "async") as store:
        if mode == "async":
            @cache_aside(ttl=60, store=store)
            async def aread(n: int) -> int:
                return n * 2

            @invalidates(aread)
            async def awrite(n: int) -> None:
                return None

            def run(fn: Any, n: int) -> Any:
                return LOOP.run_until_complete(fn(n))

            read, write = aread, awrite
        else:
            @cache_aside(ttl=60, store=store)
            def sread(n: int) -> int:
                return n * 2

            @invalidates(sread)
            def swrite(n: int) -> None:
                return None

            def run(fn: Any, n: int) -> Any:
                return fn(n)

            read, write = sread, swrite
        assert run(read, 1) == 2  # lean: nothing to see
        run(write, 1)  # (and every script is loaded now)
        assert seen == []
        monkeypatch.setattr(cls, "execute_command", traced)
        assert run(read, 2) == 4  # miss: GET, acquire, set
        assert run(read, 2) == 4  # hit: GET
        run(write, 2)  # eviction: one script
        assert seen == ["GET", "EVALSHA", "EVALSHA", "GET", "EVALSHA"]
        monkeypatch.undo()
        assert run(read, 1) == 2
        assert len(seen) == 5


def test_a_refused_command_leaves_the_connection_in_step(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, retry=ClientRetry(NoBackoff(), 0), max_connections=1)
    wire = Wire(client)
    assert wire.lean
    name = uuid.uuid4().hex
    client.set(f"{name}:a", b"A")
    client.rpush(f"{name}:list", b"x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        wire.get(f"{name}:list")
    assert wire.get(f"{name}:a") == b"A"
    client.close()


#: max_connections for the two paths: a pool too small to keep a connection from (each command
#: checks one out and back), and the default pool, where the wire keeps its connection.
PATHS = {"pool": 1, "kept": None}


@pytest.mark.parametrize("path", PATHS)
def test_a_timed_out_read_leaves_no_reply_for_the_next_one(server: RedisServer, path: str) -> None:
    client = redis.Redis.from_url(
        server.url, socket_timeout=0.2, retry=ClientRetry(NoBackoff(), 0), max_connections=PATHS[path]
    )
    wire = Wire(client)
    assert wire.lean and wire.idle_cap == (0 if path == "pool" else redis_wire.MAX_IDLE)
    client.mset({"a": b"A", "b": b"B"})
    server.pause()
    with pytest.raises(redis.TimeoutError):
        wire.get("a")  # sent; its reply comes once the server resumes
    server.resume()
    assert wire.get("b") == b"B"  # the same connection would read "A" had it been kept in that state
    assert wire.get("a") == b"A"
    assert len(wire.idle) == (0 if path == "pool" else 1)
    client.close()


@pytest.mark.parametrize("path", PATHS)
def test_a_cancelled_read_leaves_no_reply_for_the_next_one(server: RedisServer, path: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(
            server.url, socket_timeout=5, retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
            max_connections=PATHS[path],
        )
        wire = AsyncWire(client)
        assert wire.lean and wire.idle_cap == (0 if path == "pool" else redis_wire.MAX_IDLE)
        await client.mset({"a": b"A", "b": b"B"})
        server.pause()
        task = asyncio.ensure_future(wire.get("a"))
        await asyncio.sleep(0.1)  # sent, and waiting on the reply
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.resume()
        assert await wire.get("b") == b"B"
        assert await wire.get("a") == b"A"
        assert len(wire.idle) == (0 if path == "pool" else 1)
        await client.aclose()

    LOOP.run_until_complete(scenario())


# -- kept connections ---------------------------------------------------------------------


def _count_checkouts(pool: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    taken = [0]
    get_connection = pool.get_connection

    def counted(*args: Any, **kwargs: Any) -> Any:
        taken[0] += 1
        return get_connection(*args, **kwargs)

    monkeypatch.setattr(pool, "get_connection", counted)
    return taken


def test_hits_keep_their_connection_instead_of_checking_one_out_each_time(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=uuid.uuid4().hex)
    taken = _count_checkouts(store.client.connection_pool, monkeypatch)

    @cache_aside(ttl=60, store=store)
    def read(n: int) -> int:
        return n

    for _ in range(50):
        assert read(1) == 1
    assert taken[0] == 1
    assert len(store._wire.idle) == 1
    assert read.stats().errors == 0
    store.client.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_kept_connection_the_server_closed_is_reopened_before_the_next_command(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """As the pool would: a server restart or idle timeout must not fail the next call (retries off here)."""
    control = redis.Redis.from_url(redis_server.url)
    store = RedisStore.from_url(redis_server.url, prefix=uuid.uuid4().hex, asyncio=mode == "async", retry=None)
    monkeypatch.setattr(redis_wire, "RECHECK_AFTER", 0.0)  # instead of leaving the connection unused for 1 s

    def kill_store_connections() -> None:
        mine = [c for c in control.client_list() if c["name"] == "" and int(c["id"]) != control.client_id()]
        assert mine
        for c in mine:
            control.client_kill_filter(_id=c["id"])

    if mode == "async":
        @cache_aside(ttl=60, store=store)
        async def aread(n: int) -> int:
            return n

        assert LOOP.run_until_complete(aread(1)) == 1
        kill_store_connections()
        LOOP.run_until_complete(asyncio.sleep(0.05))  # a running loop sees the closed socket, as in an app
        assert LOOP.run_until_complete(aread(1)) == 1
        assert LOOP.run_until_complete(aread(1)) == 1
        stats = aread.stats()
        LOOP.run_until_complete(store.client.aclose())
    else:
        @cache_aside(ttl=60, store=store)
        def read(n: int) -> int:
            return n

        assert read(1) == 1
        kill_store_connections()
        assert read(1) == 1
        assert read(1) == 1
        stats = read.stats()
        store.client.close()
    assert stats.errors == 0 and stats.hits == 2
    control.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_does_not_use_its_parents_connections(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=uuid.uuid4().hex)

    @cache_aside(ttl=60, store=store)
    def read(n: int) -> int:
        return n

    assert read(1) == 1 and len(store._wire.idle) == 1
    parent_conn = store._wire.idle[0][0]
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if it forgot the parent's socket and still reads
        ok = store._wire.idle == [] and read(1) == 1 and store._wire.idle[0][0] is not parent_conn
        os._exit(0 if ok and read.stats().errors == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert read(1) == 1 and read.stats().errors == 0  # the parent's connection is intact
    assert store._wire.idle[0][0] is parent_conn
    store.client.close()


def test_stores_made_and_dropped_on_one_client_share_its_kept_connections(redis_server: RedisServer) -> None:
    """A store per request on a shared client must not take a connection out of the pool each time."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1, retry=ClientRetry(NoBackoff(), 0))
    pool = client.connection_pool
    for _ in range(20):
        store = RedisStore(client, prefix=uuid.uuid4().hex)
        assert store._wire.get("nothing") is None
        del store
    gc.collect()
    assert len(pool._in_use_connections) == 1  # the one connection all of them kept
    client.close()


def test_async_stores_made_and_dropped_on_one_client_share_its_kept_connections(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(
            redis_server.url, socket_timeout=1, retry=redis.asyncio.retry.Retry(NoBackoff(), 0)
        )
        pool = client.connection_pool
        for _ in range(20):
            store = RedisStore(client, prefix=uuid.uuid4().hex)
            assert await store._wire.get("nothing") is None
            del store
        gc.collect()
        assert len(pool._in_use_connections) == 1
        await client.aclose()

    LOOP.run_until_complete(scenario())


def test_a_wire_keeps_at_most_a_quarter_of_the_pool(redis_server: RedisServer) -> None:
    """Six commands at once need six connections; afterwards two stay with the wire, four go back."""
    client = redis.Redis.from_url(redis_server.url, retry=ClientRetry(NoBackoff(), 0), max_connections=8)
    pool = client.connection_pool
    wire = Wire(client)
    assert wire.lean and wire.idle_cap == 2
    name = uuid.uuid4().hex
    barrier = threading.Barrier(6)

    def wait() -> None:
        barrier.wait()
        wire.blpop(f"{name}:nothing", 0.2)

    threads = [threading.Thread(target=wait) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wire.idle) == 2
    assert len(pool._in_use_connections) == 2 and len(pool._available_connections) == 4
    client.set(name, b"v")  # the client's own commands still find a connection
    assert client.get(name) == b"v"
    client.close()


# -- the asyncio write ----------------------------------------------------------------------


def test_an_async_connection_due_its_health_check_gets_it(redis_server: RedisServer) -> None:
    """The asyncio write skips redis-py's send_command, but not the health check it makes."""
    control = redis.Redis.from_url(redis_server.url)

    def pings() -> int:
        return int(control.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))

    async def scenario() -> None:
        store = RedisStore.from_url(redis_server.url, asyncio=True, prefix=uuid.uuid4().hex, health_check_interval=30)
        wire = store._wire
        assert await wire.get("a") is None
        before = pings()
        assert await wire.get("a") is None
        assert pings() == before  # checked less than 30 s ago
        wire.idle[-1][0].next_health_check = -1  # due now
        assert await wire.get("a") is None
        assert pings() == before + 1
        await store.client.aclose()

    LOOP.run_until_complete(scenario())
    control.close()


def test_large_async_values_round_trip_and_a_stalled_write_is_bounded(server: RedisServer) -> None:
    """A command bigger than the socket's buffers waits for it to drain, within the socket timeout."""
    big = os.urandom(8 << 20)

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(
            server.url, socket_timeout=0.5, retry=redis.asyncio.retry.Retry(NoBackoff(), 0)
        )
        wire = AsyncWire(client)
        assert wire.lean
        name = uuid.uuid4().hex
        await client.set(name, b"x")
        assert await wire.get(name) == b"x"  # a kept connection now
        assert await wire.evalsha(await client.script_load("return #ARGV[1]"), [name], [big]) == len(big)
        server.pause()
        started = time.monotonic()
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            await wire.send("ECHO", big)
        assert time.monotonic() - started < 2.0
        server.resume()
        assert await wire.get(name) == b"x"
        await client.aclose()

    LOOP.run_until_complete(scenario())


def test_other_pools_lend_each_connection_back(redis_server: RedisServer) -> None:
    """A blocking pool (or Sentinel's) keeps its own bookkeeping: the wire takes and returns each time."""
    pool = redis.BlockingConnectionPool.from_url(redis_server.url, max_connections=8, timeout=1)
    client = redis.Redis(connection_pool=pool, retry=ClientRetry(NoBackoff(), 0))
    wire = Wire(client)
    assert wire.lean and wire.idle_cap == 0
    for _ in range(3):
        assert wire.get("nothing") is None
    assert wire.idle == [] and len(pool._connections) == 1 and pool.pool.qsize() == 8  # all lent back
    client.close()
