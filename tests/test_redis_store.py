"""RedisStore against real redis-server processes: fidelity, leases across processes, corruption, round trips.

Two ``RedisStore`` instances on one server behave as two processes would: each
has its own lease identity, so a lease one holds makes the other wait. The
cross-process tests also run real processes (``tests/redis_worker.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from redis.crc import key_slot

from cacheaside import CacheWarning, RedisStore, ainvalidate_tags, cache_aside, invalidate_tags, invalidates
from cacheaside._types import Entry
from cacheaside.stores import envelope
from cacheaside.stores._redis_faults import client_retries
from cacheaside.stores.redis_scripts import index_key, lease_key, tag_key

from .conftest import redis_store
from .helpers import LOOP
from .redis_server import RedisServer
from .test_serializers import same, values

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    yield c
    c.close()


@pytest.fixture
def rstore(redis_server: RedisServer) -> Iterator[RedisStore]:
    with redis_store(redis_server) as made:
        yield made


@pytest.fixture
def other(redis_server: RedisServer, rstore: RedisStore) -> Iterator[RedisStore]:
    """A second store on the same server and prefix: another process, as far as leases go."""
    with redis_store(redis_server, prefix=rstore.prefix) as made:
        yield made


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def go() -> None:
        try:
            out.append(fn(*args))
        except BaseException as exc:  # handed to the test
            out.append(exc)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out


# -- values ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    with redis_store(redis_server) as made:
        yield made


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values)
def test_round_trip_keeps_value_and_type(module_store: RedisStore, value: Any) -> None:
    key = f"{module_store.prefix}:rt:{uuid.uuid4().hex}"
    lease = module_store.acquire(key)
    assert module_store.set(key, Entry(value, time.time(), 60), lease)
    back = module_store.get(key)
    assert back is not None and same(back.value, value)


def test_the_entry_carries_its_metadata_and_its_ttl_is_set_with_it(rstore: RedisStore, client: redis.Redis) -> None:
    @cache_aside(ttl=30, stale_while_revalidate=10, store=rstore)
    def f(x: int) -> list[int]:
        return [x]

    f(1)
    raw = client.get(f.key(1))
    assert raw is not None
    entry = envelope.decode(f.key(1), raw, rstore.serializer)
    assert entry.value == [1] and entry.ttl == 30 and entry.grace == 10 and entry.delta >= 0
    assert 39_000 < client.pttl(f.key(1)) <= 40_000  # ttl + stale window, set by the same command


def test_no_keys_scan_or_flushdb_in_normal_operation(rstore: RedisStore, client: redis.Redis) -> None:
    @cache_aside(ttl=30, store=rstore, tags=["t:{x}"])
    def f(x: int) -> int:
        return x

    @invalidates(f, tags=["t:{x}"])
    def w(x: int) -> None:
        pass

    client.config_resetstat()
    for i in range(5):
        f(i)
        f(i)
        w(i)
    invalidate_tags("t:1", store=rstore)
    stats = client.info("commandstats")
    assert not {"cmdstat_keys", "cmdstat_scan", "cmdstat_flushdb", "cmdstat_flushall"} & set(stats)


# -- wrong kinds of client --------------------------------------------------------------


def test_a_store_serves_only_its_kind_of_function(redis_server: RedisServer) -> None:
    with redis_store(redis_server) as sync_store, redis_store(redis_server, asyncio=True) as async_store:
        with pytest.raises(TypeError, match=r"asyncio=True"):
            @cache_aside(store=sync_store)
            async def a() -> int:
                return 1
        with pytest.raises(TypeError, match=r"RedisStore.from_url\(url\)"):
            @cache_aside(store=async_store)
            def s() -> int:
                return 1


def test_bad_clients_are_refused_with_the_fix(redis_server: RedisServer) -> None:
    with pytest.raises(TypeError, match=r"redis\.Redis"):
        RedisStore(object())
    decoding = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisStore(decoding)
    decoding.close()
    with pytest.raises(ValueError, match="lease_timeout"):
        RedisStore.from_url(redis_server.url, lease_timeout=0)


def test_from_url_sets_cache_timeouts_and_turns_client_retries_off(redis_server: RedisServer) -> None:
    with redis_store(redis_server) as s, redis_store(redis_server, asyncio=True, socket_timeout=1.0) as a:
        kwargs = s.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.25 and kwargs["socket_connect_timeout"] == 0.25
        assert client_retries(s.client) == 0
        assert a.client.connection_pool.connection_kwargs["socket_timeout"] == 1.0  # caller's override
        assert client_retries(a.client) == 0


# -- leases: stale-set protection -------------------------------------------------------


@pytest.mark.parametrize("evict", ["same store", "other process", "tag from other process"])
def test_a_read_computing_across_an_eviction_does_not_store_its_old_value(
    rstore: RedisStore, other: RedisStore, client: redis.Redis, evict: str
) -> None:
    db = {"k": "old"}
    entered, proceed = threading.Event(), threading.Event()

    @cache_aside(ttl=60, store=rstore, tags=["row:{k}"])
    def read(k: str) -> str:
        value = db[k]
        entered.set()
        assert proceed.wait(5)
        return value

    t, out = in_thread(read, "k")
    assert entered.wait(5)
    db["k"] = "new"  # the write commits, then evicts, while the read still holds its old value
    if evict == "same store":
        read.invalidate("k")
    elif evict == "other process":
        other.delete([read.key("k")])
    else:
        invalidate_tags("row:k", store=other)
    proceed.set()
    t.join(5)
    assert out == ["old"]  # the read returns what it computed...
    assert client.get(read.key("k")) is None  # ...but does not store it
    entered.clear()
    proceed.set()
    assert read("k") == "new"


def test_a_call_after_a_remote_eviction_does_not_join_the_computation_before_it(
    rstore: RedisStore, other: RedisStore
) -> None:
    db = {"k": "old"}
    entered, proceed = threading.Event(), threading.Event()
    runs: list[str] = []

    @cache_aside(ttl=60, store=rstore)
    def read(k: str) -> str:
        value = db[k]
        runs.append(value)
        if value == "old":
            entered.set()
            assert proceed.wait(5)
        return value

    t, out = in_thread(read, "k")
    assert entered.wait(5)
    db["k"] = "new"
    other.delete([read.key("k")])
    assert read("k") == "new"  # a new computation, not the one in flight
    proceed.set()
    t.join(5)
    assert out == ["old"] and runs == ["old", "new"]
    assert read("k") == "new"


# -- leases: waiting for another process -------------------------------------------------

#: A value handed over through a wake list arrives at once; one not handed over would arrive
#: only when the waiter's lease_timeout (5 s) ran out. Half of it tells the two apart on any machine.
HANDED_OVER = 2.5


def registered_waiter(store: RedisStore, key: str, timeout: float = 2.0) -> bool:
    """Whether a process waits on ``key`` (its ACQUIRE put it in the key's waiters set), within ``timeout``."""
    admin = redis.Redis.from_url(f"redis://{store.client.connection_pool.connection_kwargs['host']}:"
                                 f"{store.client.connection_pool.connection_kwargs['port']}/0")
    waiters = lease_key(store.prefix, key).removesuffix(":lease") + ":waiters"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if admin.scard(waiters):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
    finally:
        admin.close()


def test_a_waiter_gets_the_holders_value_as_soon_as_it_is_stored(rstore: RedisStore, other: RedisStore) -> None:
    entered, proceed = threading.Event(), threading.Event()
    done_at: list[float] = []

    @cache_aside(ttl=60, key="hot", store=rstore)
    def holder() -> str:
        entered.set()
        assert proceed.wait(5)
        done_at.append(time.monotonic())
        return "from holder"

    @cache_aside(ttl=60, key="hot", store=other)
    def waiter() -> str:
        return "waiter computed"

    t1, out1 = in_thread(holder)
    assert entered.wait(5)
    t2, out2 = in_thread(lambda: (waiter(), time.monotonic()))
    assert registered_waiter(other, waiter.key())  # the waiter is registered: it is woken, not timed out
    proceed.set()
    t1.join(5)
    t2.join(5)
    value, returned_at = out2[0]
    assert out1 == ["from holder"] and value == "from holder"
    assert waiter.stats().misses == 1 and waiter.stats().hits == 0
    # Handed the value through its wake list: not after its lease_timeout (5 s) ran out.
    assert returned_at - done_at[0] < HANDED_OVER


def test_a_lease_released_without_a_value_hands_over_at_once(rstore: RedisStore, other: RedisStore) -> None:
    entered, proceed = threading.Event(), threading.Event()
    failed_at: list[float] = []

    @cache_aside(ttl=60, key="hot", store=rstore)
    def holder() -> str:
        entered.set()
        assert proceed.wait(5)
        failed_at.append(time.monotonic())
        raise RuntimeError("source down")

    @cache_aside(ttl=60, key="hot", store=other)
    def waiter() -> str:
        return "waiter computed"

    t1, out1 = in_thread(holder)
    assert entered.wait(5)
    t2, out2 = in_thread(lambda: (waiter(), time.monotonic()))
    assert registered_waiter(other, waiter.key())
    proceed.set()
    t1.join(5)
    t2.join(5)
    assert isinstance(out1[0], RuntimeError)
    value, returned_at = out2[0]
    assert value == "waiter computed" and returned_at - failed_at[0] < HANDED_OVER
    assert holder() == "waiter computed"  # and the waiter stored it


def test_a_waiter_computes_itself_after_lease_timeout(redis_server: RedisServer) -> None:
    entered, proceed = threading.Event(), threading.Event()
    with redis_store(redis_server, lease_timeout=0.3) as a, redis_store(redis_server, prefix=a.prefix) as b:

        @cache_aside(ttl=60, key="hot", store=a)
        def slow() -> str:
            entered.set()
            assert proceed.wait(5)
            return "slow"

        @cache_aside(ttl=60, key="hot", store=b)
        def quick() -> str:
            return "quick"

        t1, out1 = in_thread(slow)
        assert entered.wait(5)
        started = time.monotonic()
        assert quick() == "quick"
        waited = time.monotonic() - started
        assert 0.25 < waited < 1.5
        proceed.set()
        t1.join(5)
        assert out1 == ["slow"]
        # No eviction happened: the slow computation's value is stored too (it finished last).
        assert quick() == "slow"


def test_a_computation_slower_than_lease_timeout_is_still_stored(redis_server: RedisServer) -> None:
    with redis_store(redis_server, lease_timeout=0.1) as s:
        calls = []

        @cache_aside(ttl=60, store=s)
        def slow(x: int) -> int:
            calls.append(x)
            time.sleep(0.3)
            return x * 2

        assert slow(2) == 4 and slow(2) == 4 and calls == [2]


def test_async_waiter_gets_the_holders_value(redis_server: RedisServer) -> None:
    with redis_store(redis_server, asyncio=True) as a, redis_store(redis_server, asyncio=True, prefix=a.prefix) as b:

        async def scenario() -> tuple[str, str, float]:
            entered, proceed = asyncio.Event(), asyncio.Event()
            done_at: list[float] = []

            @cache_aside(ttl=60, key="hot", store=a)
            async def holder() -> str:
                entered.set()
                await proceed.wait()
                done_at.append(time.monotonic())
                return "from holder"

            @cache_aside(ttl=60, key="hot", store=b)
            async def waiter() -> str:
                return "waiter computed"

            h = asyncio.ensure_future(holder())
            await entered.wait()
            w = asyncio.ensure_future(waiter())
            while not registered_waiter(b, waiter.key(), timeout=0):
                await asyncio.sleep(0.001)
            proceed.set()
            first = await h
            second = await w
            return first, second, time.monotonic() - done_at[0]

        first, second, lag = LOOP.run_until_complete(scenario())
        assert first == second == "from holder" and lag < HANDED_OVER


# -- across real processes ---------------------------------------------------------------


def _workers(server: RedisServer, prefix: str, n: int, client: redis.Redis, *flags: str) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.redis_worker", server.url, prefix, *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        for _ in range(n)
    ]
    deadline = time.monotonic() + 30
    while int(client.get(f"{prefix}:ready") or 0) < n:
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    client.rpush(f"{prefix}:gate", *["go"] * n)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_four_processes_missing_one_key_run_the_function_once(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    results = _workers(redis_server, prefix, 4, client)
    assert int(client.get(f"{prefix}:calls") or 0) == 1  # counted in Redis, outside the processes
    values = [r["value"] for r in results]
    assert all(v == values[0] for v in values)
    assert sum(r["stats"]["misses"] for r in results) == 4 and sum(r["stats"]["errors"] for r in results) == 0


def test_four_processes_serving_one_stale_entry_refresh_it_once(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    """Each process serves the stale value at once and claims its own background refresh; the lease
    (and the entry each refresh means to replace) lets one of them compute."""
    prefix = f"x{uuid.uuid4().hex[:8]}"
    with redis_store(redis_server, prefix=prefix) as here:
        key = f"{prefix}:stale:1"
        lease = here.acquire(key)
        assert here.set(key, Entry("old", time.time() - 20, 10.0, 60.0), lease)  # 10 s past its ttl of 10
    results = _workers(redis_server, prefix, 4, client, "stale")
    assert [r["value"] for r in results] == ["old"] * 4
    assert int(client.get(f"{prefix}:calls") or 0) == 1  # counted in Redis, outside the processes
    assert sum(r["stats"]["stale"] for r in results) == 4
    with redis_store(redis_server, prefix=prefix) as here:
        entry = here.get(key)
        assert entry is not None and entry.value == "new"


def test_a_value_stored_by_one_process_is_a_hit_in_another(redis_server: RedisServer, client: redis.Redis) -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    [result] = _workers(redis_server, prefix, 1, client)
    with redis_store(redis_server, prefix=prefix) as here:

        @cache_aside(ttl=60, key="shared:{x}", store=here)
        def compute(x: int) -> dict[str, Any]:
            raise AssertionError("must be a hit")

        assert compute(1) == result["value"] and compute.stats().hits == 1


# -- corruption and foreign values ---------------------------------------------------------


def _garbage(kind: str, key: str, client: redis.Redis, rstore: RedisStore) -> None:
    valid = envelope.encode(key, Entry({"v": 1}, time.time(), 60), rstore.serializer)
    if kind == "random bytes":
        client.set(key, os.urandom(64))
    elif kind == "truncated":
        client.set(key, valid[:-3])
    elif kind == "short":
        client.set(key, valid[:10])
    elif kind == "other version":
        client.set(key, valid[:1] + bytes([envelope.FORMAT_VERSION + 1]) + valid[2:])
    elif kind == "entry of another key":
        client.set(key, envelope.encode(key + "x", Entry("other", time.time(), 60), rstore.serializer))
    elif kind == "foreign string":
        client.set(key, "hello")
    elif kind == "foreign type":
        client.rpush(key, "a", "b")
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["random bytes", "truncated", "short", "other version", "entry of another key", "foreign string", "foreign type"],
)
def test_unreadable_values_are_a_miss_and_are_overwritten(
    rstore: RedisStore, client: redis.Redis, kind: str
) -> None:
    calls = []

    @cache_aside(ttl=60, store=rstore)
    def f(x: int) -> str:
        calls.append(x)
        return f"value {x}"

    _garbage(kind, f.key(1), client, rstore)
    assert f(1) == "value 1" and calls == [1]
    assert f.stats().errors == 1 and f.stats().misses == 1
    assert f(1) == "value 1" and calls == [1] and f.stats().hits == 1  # overwritten with a valid entry
    assert rstore.breaker is not None and rstore.breaker.snapshot().consecutive_failures == 0  # not a store fault


# -- round trips ---------------------------------------------------------------------------


class Commands:
    """The commands clients sent to the server during an action, seen through MONITOR,
    and the round trips they took (``trips``: writes to a socket, a pipeline being one).

    Commands that scripts run are reported as such by MONITOR and left out: what
    is counted is commands from clients (connection set-up aside).
    """

    #: A new connection's set-up, and the PING that makes sure the monitor is attached.
    HANDSHAKE = frozenset({"HELLO", "CLIENT", "PING"})

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.trips = 0

    def count(self, action: Any) -> list[str]:
        marker = f"end-{uuid.uuid4().hex}"
        sent = []
        send = redis.connection.AbstractConnection.send_packed_command

        def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            self.trips += 1
            send(conn, command, check_health)

        with self.client.monitor() as monitor:
            self.client.ping()  # the monitor is attached once this round trip is done
            with mock.patch.object(redis.connection.AbstractConnection, "send_packed_command", counted):
                action()
            self.client.echo(marker)
            while True:
                event = monitor.next_command()
                if marker in event["command"]:
                    return sent
                name = event["command"].split()[0].upper()
                if event["client_type"] != "lua" and name not in self.HANDSHAKE:
                    sent.append(name)


def test_a_miss_is_a_get_an_acquire_and_a_set(rstore: RedisStore, client: redis.Redis) -> None:
    @cache_aside(ttl=60, store=rstore)
    def f(x: int) -> dict[str, int]:
        return {"x": x}

    @cache_aside(ttl=60, store=rstore, tags=["t:{x}", "all"])
    def g(x: int) -> dict[str, int]:
        return {"x": x}

    f(0), g(0)  # loads the scripts
    commands = Commands(client)
    # The function's own tag (f.clear()), and each of its templates' tags, are recorded by the acquire's
    # and the set's scripts themselves: one EVALSHA each, however many tags.
    assert commands.count(lambda: f(1)) == ["GET", "EVALSHA", "EVALSHA"] and commands.trips == 3
    commands = Commands(client)
    assert commands.count(lambda: g(1)) == ["GET", "EVALSHA", "EVALSHA"] and commands.trips == 3


def test_a_hit_is_one_get(rstore: RedisStore, client: redis.Redis) -> None:
    @cache_aside(ttl=60, store=rstore, tags=["t:{x}"])
    def f(x: int) -> dict[str, int]:
        return {"x": x}

    f(1)
    commands = Commands(client)
    assert commands.count(lambda: f(1)) == ["GET"] and commands.trips == 1 and f.stats().hits == 1


def test_a_writer_with_three_targets_and_two_tags_is_one_round_trip(rstore: RedisStore, client: redis.Redis) -> None:
    @cache_aside(ttl=60, store=rstore, tags=["user:{user_id}"])
    def a(user_id: int) -> str:
        return "a"

    @cache_aside(ttl=60, store=rstore, key="b:{user_id}")
    def b(user_id: int) -> str:
        return "b"

    @cache_aside(ttl=60, store=rstore, tags=["team:{team}"])
    def c(user_id: int, team: str = "x") -> str:
        return "c"

    @invalidates(a, b, c, tags=["user:{user_id}", "team:{team}"])
    def write(user_id: int, team: str) -> None:
        pass

    write(0, "y")  # loads the script once
    for f in (a, b, c):
        f(1) if f is not c else f(1, team="x")
    assert all(client.exists(f.key(1)) for f in (a, b, c))
    commands = Commands(client)
    assert commands.count(lambda: write(1, "x")) == ["EVALSHA"] and commands.trips == 1
    assert not any(client.exists(f.key(1)) for f in (a, b, c))
    assert not client.exists(tag_key(rstore.prefix, "user:1")) and not client.exists(tag_key(rstore.prefix, "team:x"))


#: The keys of the commands the scripts run (MONITOR shows them), by position.
_KEYED = {"GET": 1, "SET": 1, "HMGET": 1, "HSET": 1, "HGET": 1, "HDEL": 1, "PEXPIRE": 1, "SADD": 1,
          "SMEMBERS": 1, "RPUSH": 1, "TYPE": 1, "ZREMRANGEBYSCORE": 1, "ZADD": 1, "PTTL": 1}


def test_every_entry_script_touches_one_slot(
    rstore: RedisStore, other: RedisStore, client: redis.Redis
) -> None:
    """What lets the same calls run on Redis Cluster: the acquire, set and release scripts are
    each given keys of one slot (an entry and its lease), and every key they touch is in that slot."""

    @cache_aside(ttl=60, store=rstore, tags=["t:{x}", "all"])
    def f(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x

    def actions() -> None:
        f(1), f(1)  # a miss (acquire, tags, set, tags) and a hit
        with pytest.raises(ValueError):
            f(-1)  # a release
        held = other.acquire(f.key(2), ("all",))
        rstore.acquire(f.key(2), ("all",))  # registers a waiter
        other.set(f.key(2), Entry(2, time.time(), 60.0), held)  # wakes it
        for x in (3, 4):  # untagged steps (the store's contract allows them; the cluster sends them)
            lease = rstore.acquire(f.key(x), ())
            rstore.set(f.key(x), Entry(x, time.time(), 60.0), lease)

    f(0)  # loads the scripts
    declared: set[int] | None = None
    scripts = checked = 0
    with client.monitor() as monitor:
        client.ping()
        actions()
        client.echo("end-of-actions")
        while "end-of-actions" not in (event := monitor.next_command())["command"]:
            words = event["command"].split()
            if event["client_type"] != "lua":
                declared = None
                # DELETE takes many slots, and on one server TAG also indexes and sweeps tag sets, as
                # do the acquire and set that record a fill's tags in the same script (a cluster sends
                # TAG with its tag set alone, INDEX on its own, and the untagged scripts: test_cluster)
                if words[0] == "EVALSHA" and words[1] in {s.sha for s in rstore._tagged.values()}:
                    scripts += 1
                    assert key_slot(words[3].encode()) == key_slot(words[4].encode()), event  # entry, lease
                elif words[0] == "EVALSHA" and words[1] not in (rstore._delete.sha, rstore._tag.sha):
                    scripts += 1
                    numkeys = int(words[2])
                    declared = {key_slot(k.encode()) for k in words[3:3 + numkeys]}
                    assert numkeys == 2 and len(declared) == 1, event  # an entry and its lease
            elif declared is not None:
                keys = words[1:] if words[0] in ("DEL", "EXISTS") else words[1:2] if words[0] in _KEYED else []
                assert words[0] in _KEYED or words[0] in ("DEL", "EXISTS", "TIME"), event
                assert {key_slot(k.encode()) for k in keys} <= declared, event
                checked += len(keys)
    assert scripts >= 6 and checked >= 12


def test_a_tagged_fill_reloads_scripts_the_server_lost(rstore: RedisStore, client: redis.Redis) -> None:
    @cache_aside(ttl=60, store=rstore, tags=["all"])
    def f(x: int) -> int:
        return x

    @cache_aside(ttl=60, store=rstore)
    def g(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x

    f(0), g(0)
    client.script_flush()  # as after a restart without persistence
    assert f(1) == 1 and f.stats().misses == 2 and f.stats().errors == 0
    assert client.exists(f.key(1)) and client.zscore(tag_key(rstore.prefix, "all"), f.key(1)) is not None
    assert f(1) == 1 and f.stats().hits == 1
    client.script_flush()
    f.invalidate(1)  # the delete script
    assert not client.exists(f.key(1))
    client.script_flush()
    with pytest.raises(ValueError):
        g(-1)  # acquire, then the release script
    assert client.hget("{" + g.key(-1) + "}:lease", "h") is None and g.stats().errors == 0


def test_async_tagged_fills_record_their_tags_and_tag_evictions_revoke_them(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    with redis_store(redis_server, asyncio=True) as store:
        calls = []
        started, go = asyncio.Event(), asyncio.Event()

        @cache_aside(ttl=60, store=store, tags=["all"])
        async def f(x: int) -> int:
            calls.append(x)
            if x == 2:
                started.set()
                await go.wait()
            return x * len(calls)

        async def scenario() -> None:
            assert await f(1) == 1 and await f(1) == 1
            client.script_flush()
            held = asyncio.ensure_future(f(2))  # computing while a tag eviction runs
            await started.wait()
            await ainvalidate_tags("all", store=store)
            go.set()
            assert await held == 4  # its caller gets it, but it was not stored
            assert not client.exists(f.key(2)) and not client.exists(f.key(1))
            assert await f(2) == 6 and client.zscore(tag_key(store.prefix, "all"), f.key(2)) is not None

        LOOP.run_until_complete(scenario())


def test_tag_sets_drop_dead_members_and_have_no_expiry(rstore: RedisStore, client: redis.Redis) -> None:
    """No expiry on a tag set, so that a volatile-* maxmemory policy never evicts it; each member is
    kept until its entry and its lease are both gone (server ms), plus a margin."""

    @cache_aside(ttl=2, store=rstore, tags=["all"])
    def f(x: int) -> int:
        return x

    f(1)
    tag = tag_key(rstore.prefix, "all")
    assert client.pttl(tag) == -1
    now_ms = client.time()[0] * 1000
    assert now_ms + 59_000 <= client.zscore(tag, f.key(1)) <= now_ms + 62_000  # type: ignore[operator]
    # As if the first 40 had lived their time: the next insert drops them, and only them.
    for i in range(2, 40):
        f(i)
    client.zadd(tag, {f.key(i): 1 for i in range(1, 40)}, xx=True)
    f(40)
    assert client.zrange(tag, 0, -1) == [f.key(40).encode()]
    # A member's time only grows: a set after an acquire keeps the longer of the two.
    assert client.zscore(tag, f.key(40)) >= now_ms + 59_000  # type: ignore[operator]


def test_tag_sets_whose_members_all_died_are_swept_by_later_fills(rstore: RedisStore, client: redis.Redis) -> None:
    """The index of tag sets (scored by when each set's last member dies) lets every tagged fill
    sweep two dead sets away: a tag no longer used leaves nothing behind, and a set still listing a
    live entry is kept (indexed again until that entry dies)."""

    @cache_aside(ttl=60, store=rstore, tags=["t:{x}"])
    def f(x: int) -> int:
        return x

    index = index_key(rstore.prefix)
    for x in range(4):
        f(x)
    sets = [tag_key(rstore.prefix, f"t:{x}") for x in range(4)]
    assert all(client.zscore(index, s) for s in sets)
    # Sets 0 and 1 as if their entries had lived their time; 2 is due in the index, but its entry lives.
    for x in (0, 1):
        client.zadd(sets[x], {f.key(x): 1}, xx=True)
    client.zadd(index, {sets[0]: 1, sets[1]: 1, sets[2]: 2})
    live = client.zscore(sets[2], f.key(2))
    f(10)  # sweeps two: 0 and 1
    f(11)  # sweeps 2: kept, indexed at its member's time
    assert not client.exists(sets[0]) and not client.exists(sets[1])
    assert client.zscore(index, sets[0]) is None and client.zscore(index, sets[1]) is None
    assert client.zrange(sets[2], 0, -1) == [f.key(2).encode()] and client.zscore(index, sets[2]) == live
    invalidate_tags("t:2", store=rstore)
    assert f.key(2) not in {k.decode() for k in client.keys(f"{rstore.prefix}:*")}


def test_a_tag_set_survives_foreign_values_under_its_name(rstore: RedisStore, client: redis.Redis) -> None:
    @cache_aside(ttl=60, store=rstore, tags=["all"])
    def f(x: int) -> int:
        return x

    tag = tag_key(rstore.prefix, "all")
    client.set(tag, b"junk")  # a foreign value where the tag set lives
    assert f(1) == 1 and client.type(tag) == b"zset"
    client.delete(tag)
    client.sadd(tag, f.key(1))  # a plain set (an older layout): evicted as nothing, then replaced
    invalidate_tags("all", store=rstore)
    assert not client.exists(tag)
    assert f(2) == 2 and client.type(tag) == b"zset"


def test_a_value_handed_to_an_earlier_wait_is_never_served_to_a_later_one(
    rstore: RedisStore, other: RedisStore, client: redis.Redis
) -> None:
    key = f"{rstore.prefix}:k"
    # An earlier wait gives up before the holder's value arrives; the value is handed over anyway.
    held = other.acquire(key)
    waiting = rstore.acquire(key)
    assert held.owner and not waiting.owner
    assert rstore.watch(key, waiting, 0.05) is None
    assert other.set(key, Entry("old", time.time(), 60), held)
    # The key is evicted; another process starts a new fill, and this one waits for it.
    rstore.delete([key])
    held = other.acquire(key)
    waiting = rstore.acquire(key)
    assert held.owner and not waiting.owner
    waiters = lease_key(rstore.prefix, key).removesuffix(":lease") + ":waiters"
    assert client.exists(waiters)  # this wait is registered
    timer = threading.Timer(0.2, lambda: other.set(key, Entry("new", time.time(), 60), held))
    timer.start()
    found = rstore.watch(key, waiting, 2.0)
    timer.join()
    assert found is not None and found.value == "new"
    assert not client.exists(waiters)  # the hand-over cleared the waiters (in the same script as the set)


def test_sixteen_threads_missing_one_key_run_the_function_once(rstore: RedisStore) -> None:
    barrier = threading.Barrier(16)
    calls = []

    @cache_aside(ttl=60, store=rstore)
    def f(x: int) -> int:
        calls.append(x)
        time.sleep(0.2)
        return x * 10

    def go() -> int:
        barrier.wait(5)
        return f(3)

    threads = [in_thread(go) for _ in range(16)]
    for t, _ in threads:
        t.join(10)
    assert [out for _, out in threads] == [[30]] * 16
    assert calls == [3] and f.stats().misses == 16


def test_sixteen_tasks_missing_one_key_run_the_function_once(redis_server: RedisServer) -> None:
    with redis_store(redis_server, asyncio=True) as store:
        calls = []

        @cache_aside(ttl=60, store=store)
        async def f(x: int) -> int:
            calls.append(x)
            await asyncio.sleep(0.2)
            return x * 10

        async def scenario() -> list[int]:
            return list(await asyncio.gather(*(f(3) for _ in range(16))))

        assert LOOP.run_until_complete(scenario()) == [30] * 16
        assert calls == [3]


# -- a dead holder, junk bookkeeping: one wait, then the key is cached again


def test_after_waiting_lease_timeout_for_a_dead_holder_a_process_takes_over_and_stores(
    redis_server: RedisServer,
) -> None:
    """A holder with a longer lease_timeout that died stalls others once, not on every call."""
    with redis_store(redis_server, lease_timeout=60) as dead, \
            redis_store(redis_server, prefix=dead.prefix, lease_timeout=0.2) as alive:

        @cache_aside(ttl=60, store=alive, key="slow:{x}")
        def f(x: int) -> int:
            return x * 2

        held = dead.acquire(f.key(1))  # and never sets or releases: the process died
        assert held.owner
        assert f(1) == 2 and f(1) == 2
        assert f.stats().misses == 1 and f.stats().hits == 1 and f.stats().errors == 0


@pytest.mark.parametrize("junk", ["string", "hash-fields", "waiters"])
def test_junk_under_a_bookkeeping_key_never_disables_caching_of_its_key(
    rstore: RedisStore, client: redis.Redis, junk: str
) -> None:
    @cache_aside(ttl=60, store=rstore)
    def f(x: int) -> int:
        return x + 1

    lease = lease_key(rstore.prefix, f.key(1))
    if junk == "string":
        client.set(lease, "junk")
    elif junk == "hash-fields":
        client.hset(lease, mapping={"e": "x", "h": "someone", "t": "not-a-number"})
    else:
        client.set(lease.removesuffix(":lease") + ":waiters", "junk")
    assert f(1) == 2 and f(1) == 2
    assert f.stats().hits == 1 and f.stats().errors == 0


def test_a_key_template_cannot_reach_the_bookkeeping_keys(rstore: RedisStore, client: redis.Redis) -> None:
    """Templates, key callables and tags give '<prefix>:...' keys; bookkeeping is under '<prefix>|'."""

    @cache_aside(ttl=60, store=rstore, key="tag:{name}")
    def tag_page(name: str) -> str:
        return f"page {name}"

    @cache_aside(ttl=60, store=rstore, key=lambda name: f"{{{name}}}:lease", tags=["{name}"])
    def braces(name: str) -> str:
        return name

    tag_page("news"), braces("x"), tag_page("news"), braces("x")
    own = {k.decode() for k in client.scan_iter(match=f"{rstore.prefix}|*")}
    users = {k.decode() for k in client.scan_iter(match=f"{rstore.prefix}:*")}
    assert users == {tag_page.key("news"), braces.key("x")} and own and not own & users
    assert tag_page.stats().hits == braces.stats().hits == 1


def test_a_server_that_refuses_the_stores_commands_says_what_it_needs() -> None:
    """A server without a command the store needs (as an older Redis lacks ZADD GT) warns once, naming the
    version the store needs; calls are served by the function meanwhile."""
    server = RedisServer("--rename-command", "ZADD", "")
    try:
        with redis_store(server) as store:

            @cache_aside(ttl=60, store=store, tags=["t"])
            def f(x: int) -> int:
                return x

            with pytest.warns(CacheWarning, match=r"Redis 6\.2 or newer"):
                assert f(1) == 1
            assert f(1) == 1 and f(2) == 2  # no second warning
            assert f.stats().errors >= 1 and store.breaker is not None and store.breaker.state == "closed"
    finally:
        server.stop()


def test_refresh_stores_even_while_another_process_holds_the_lease(rstore: RedisStore, other: RedisStore) -> None:
    """f.refresh() "calls the function, stores and returns": it takes the lease over from a holder elsewhere."""

    @cache_aside(ttl=60, store=rstore, key="r:{x}")
    def f(x: int) -> str:
        return "refreshed"

    held = other.acquire(f.key(1))  # another process is computing it
    assert held.owner
    assert f.refresh(1) == "refreshed"
    assert f(1) == "refreshed" and f.stats().hits == 1


def test_joiners_in_a_process_keep_single_flight_when_their_leader_takes_over(redis_server: RedisServer) -> None:
    """Another process's holder died: this process's leader waits lease_timeout, takes over and computes;
    the calls that joined it at the start (their lease_timeout ran out as the leader's did) wait for that
    computation instead of each computing."""
    with redis_store(redis_server, lease_timeout=60) as dead, \
            redis_store(redis_server, prefix=dead.prefix, lease_timeout=0.5) as alive:
        runs: list[int] = []
        barrier = threading.Barrier(4)

        @cache_aside(ttl=60, store=alive, key="flight:{x}")
        def f(x: int) -> int:
            runs.append(x)
            time.sleep(0.1)  # well within lease_timeout
            return x

        assert dead.acquire(f.key(1)).owner  # and never fills: the process died
        threads = [in_thread(lambda: (barrier.wait(2), f(1))[1]) for _ in range(4)]
        for t, _ in threads:
            t.join(5)
        assert runs == [1] and all(out == [1] for _, out in threads)


def test_a_call_arriving_while_a_taken_over_computation_runs_joins_it(redis_server: RedisServer) -> None:
    """The take-over gives the leader a new lease token; a call made meanwhile gets that token and must
    join the leader's flight, not start a second computation."""
    # lease_timeout is also the leader's own deadline once it took over: the late call must come
    # within it (at 0.2 s a loaded CI machine let the late call take the lease over in turn)
    with redis_store(redis_server, lease_timeout=60) as dead, \
            redis_store(redis_server, prefix=dead.prefix, lease_timeout=1.0) as alive:
        runs: list[int] = []
        entered, gate = threading.Event(), threading.Event()

        @cache_aside(ttl=60, store=alive, key="adopt:{x}")
        def f(x: int) -> int:
            runs.append(x)
            entered.set()
            gate.wait(5)
            return x

        assert dead.acquire(f.key(1)).owner  # and never fills: the process died
        leader, out1 = in_thread(f, 1)
        assert entered.wait(4)  # the leader waited lease_timeout, took over and is computing
        late, out2 = in_thread(f, 1)
        gate.set()
        leader.join(5)
        late.join(5)
        assert runs == [1] and out1 == out2 == [1]


def test_a_client_option_redis_py_does_not_take_is_named_at_the_first_failure(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, socket_timout=0.1)  # a typo: redis-py fails every command

    @cache_aside(ttl=60, store=store)
    def f(x: int) -> int:
        return x

    with pytest.warns(CacheWarning, match=r"an option redis-py does not take .*socket_timout"):
        assert f(1) == 1
    assert f(1) == 1 and f.stats().errors == 2  # served by the function; warned once
    store.close()
