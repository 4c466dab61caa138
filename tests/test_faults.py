"""API.md "Failure": outages, hangs, pauses, restarts and full memory never reach the caller.

Every test starts its own redis-server and breaks it (SIGKILL, SIGSTOP, CLIENT
PAUSE, DEBUG SLEEP, restart, maxmemory). Each checks that no exception reaches
the caller, that every value returned is the right one, and the breaker's
sequence of states.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry as ClientRetry

from cacheaside import CacheWarning, CircuitBreaker, RedisStore, cache_aside, invalidates

from .helpers import LOOP
from .redis_server import REDIS_SERVER, RedisServer, free_port

pytestmark = pytest.mark.redis

RESET = 0.3  # the breakers' reset_timeout here


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A server of the test's own, to break (``redis_server`` only makes the skip/fail decision)."""
    own = RedisServer("--enable-debug-command", "yes")
    yield own
    own.resume() if own.proc is not None and own.proc.poll() is None else None
    own.stop()


def make_store(url: str, *, asyncio: bool = False, **options: Any) -> RedisStore:
    options.setdefault("socket_timeout", 0.2)
    options.setdefault("socket_connect_timeout", 0.2)
    options.setdefault("breaker", CircuitBreaker(3, RESET))
    options.setdefault("prefix", f"f{uuid.uuid4().hex[:8]}")
    return RedisStore.from_url(url, asyncio=asyncio, **options)


class States:
    """The breaker's states as calls see them, consecutive repeats collapsed."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.seen: list[str] = []
        self.look()

    def look(self) -> None:
        assert self.store.breaker is not None
        state = self.store.breaker.state
        if not self.seen or self.seen[-1] != state:
            self.seen.append(state)


def calls(f: Callable[[int], Any], states: States, n: int, x: int = 1) -> list[Any]:
    out = []
    for _ in range(n):
        states.look()
        out.append(f(x))
        states.look()
    return out


def until(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def source() -> tuple[dict[int, int], Callable[[int], int]]:
    db = {1: 10, 2: 20}

    def read(x: int) -> int:
        return db[x]

    return db, read


# -- unreachable, killed, restarted ------------------------------------------------------------


def test_unreachable_from_the_start_and_zero_connection_attempts_once_open() -> None:
    store = make_store(f"redis://127.0.0.1:{free_port()}/0")
    _db, read = source()
    f = cache_aside(ttl=60, store=store)(read)
    states = States(store)
    attempts = []
    pool = store.client.connection_pool
    real = pool.get_connection

    def counting(*a: Any, **k: Any) -> Any:
        attempts.append(1)
        return real(*a, **k)

    pool.get_connection = counting  # type: ignore[method-assign]
    assert calls(f, states, 3) == [10, 10, 10]
    assert store.breaker is not None and store.breaker.state == "open"
    before = len(attempts)
    assert calls(f, states, 20) == [10] * 20
    assert len(attempts) == before  # open: the store is not touched at all
    assert f.stats().bypassed == 20 and f.stats().errors == 3
    time.sleep(RESET)
    assert calls(f, states, 2) == [10, 10]  # one probe, which fails
    assert states.seen == ["closed", "open", "half_open", "open"]
    store.client.close()


def test_killed_mid_run_then_restarted(server: RedisServer) -> None:
    store = make_store(server.url)
    db, read = source()
    f = cache_aside(ttl=60, store=store)(read)
    states = States(store)
    assert calls(f, states, 3) == [10, 10, 10] and f.stats().hits == 2
    server.kill()
    db[1] = 11  # the cache is gone with the server: the source answers
    assert calls(f, states, 6) == [11] * 6
    server.restart()
    time.sleep(RESET)
    assert calls(f, states, 3) == [11, 11, 11]
    assert states.seen == ["closed", "open", "half_open", "closed"]
    assert f.stats().hits >= 3  # cached again after the restart
    store.client.close()


def test_restarted_empty_on_the_same_port_between_calls(server: RedisServer) -> None:
    store = make_store(server.url)
    db, read = source()
    f = cache_aside(ttl=60, store=store)(read)
    states = States(store)
    assert calls(f, states, 2) == [10, 10]
    server.restart()  # pooled connections are now dead, and the scripts are gone
    db[1] = 12
    assert calls(f, states, 3) == [12, 12, 12]  # a quick retry reconnects; scripts are reloaded
    assert states.seen == ["closed"] and f.stats().errors == 0
    store.client.close()


# -- hung, paused, sleeping -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["SIGSTOP", "CLIENT PAUSE", "DEBUG SLEEP"])
def test_a_hung_server_costs_a_bounded_wait_then_nothing(server: RedisServer, how: str) -> None:
    store = make_store(server.url)
    _db, read = source()

    def slow(x: int) -> int:
        time.sleep(0.05)
        return read(x)

    f = cache_aside(ttl=60, store=store)(slow)
    states = States(store)
    assert calls(f, states, 1) == [10]
    control = redis.Redis.from_url(server.url, socket_timeout=5)
    sleeper = None
    if how == "SIGSTOP":
        server.pause()
    elif how == "CLIENT PAUSE":
        control.execute_command("CLIENT", "PAUSE", "2000", "ALL")
    else:
        sleeper = threading.Thread(target=lambda: control.execute_command("DEBUG", "SLEEP", "2"))
        sleeper.start()
        time.sleep(0.05)
    took = []
    for _ in range(3):
        started = time.monotonic()
        assert f(1) == 10
        took.append(time.monotonic() - started)
        states.look()
    assert max(took) < 1.0
    assert store.breaker is not None and store.breaker.state == "open"
    open_took = []
    for _ in range(10):
        started = time.monotonic()
        assert f(1) == 10
        open_took.append(time.monotonic() - started)
    assert sorted(open_took)[5] <= 0.05 * 1.1  # no more than the function itself (+10%)
    if how == "SIGSTOP":
        server.resume()
    elif sleeper is not None:
        sleeper.join(5)
    else:
        control.execute_command("CLIENT", "UNPAUSE")
    time.sleep(RESET)
    assert until(lambda: (states.look(), f(1) == 10, states.look(), store.breaker.state == "closed")[-1])  # type: ignore[union-attr]
    assert states.seen[:2] == ["closed", "open"] and states.seen[-1] == "closed"
    control.close()
    store.client.close()


def test_full_memory_replies_are_survived(server: RedisServer) -> None:
    store = make_store(server.url)
    control = redis.Redis.from_url(server.url, socket_timeout=2)
    control.config_set("maxmemory-policy", "noeviction")
    control.config_set("maxmemory", "1")  # every write is refused with OOM
    _db, read = source()
    f = cache_aside(ttl=60, store=store)(read)
    states = States(store)
    assert [f(x) for x in (1, 2, 1, 2)] == [10, 20, 10, 20]
    states.look()
    assert states.seen == ["closed", "open"] and f.stats().errors == 3
    control.config_set("maxmemory", "0")
    time.sleep(RESET)
    assert calls(f, states, 2) == [10, 10]
    assert states.seen[-1] == "closed" and f.stats().hits == 1
    control.close()
    store.client.close()


# -- no eviction is lost ---------------------------------------------------------------------


def test_an_eviction_during_an_outage_is_applied_before_the_next_read(server: RedisServer) -> None:
    store = make_store(server.url)
    db, read = source()
    f = cache_aside(ttl=60, store=store)(read)
    w = invalidates(f)(lambda x, value: db.__setitem__(x, value))
    assert f(1) == 10 and f(1) == 10
    server.pause()  # the old value stays in Redis
    w(1, 14)  # no exception, and the eviction is owed
    assert store.guard is not None and store.guard.owes
    server.resume()
    assert f(1) == 14  # the owed eviction went first
    assert f(1) == 14 and not store.guard.owes
    store.client.close()


WRITER = """
import sys, time
from cacheaside import RedisStore, cache_aside, invalidates
url, prefix, path = sys.argv[1:4]
store = RedisStore.from_url(url, prefix=prefix, socket_timeout=0.2, socket_connect_timeout=0.2)

@cache_aside(ttl=60, key="row:{x}", store=store)
def read(x):
    return open(path).read()

@invalidates(read)
def write(x, value):
    open(path, "w").write(value)

write(1, "new")
print("written", flush=True)
deadline = time.monotonic() + 15
while store.guard.owes and time.monotonic() < deadline:
    time.sleep(0.05)
print("paid" if not store.guard.owes else "still owed", flush=True)
"""


def test_another_process_stops_seeing_the_old_value_within_a_second_of_recovery(
    server: RedisServer, tmp_path: Any
) -> None:
    path = tmp_path / "row"
    path.write_text("old")
    store = make_store(server.url)

    @cache_aside(ttl=60, key="row:{x}", store=store)
    def read(x: int) -> str:
        return path.read_text()

    assert read(1) == "old" and read(1) == "old"
    server.pause()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, server.url, store.prefix, str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "written"
    time.sleep(0.3)
    server.resume()
    back = time.monotonic()
    assert until(lambda: read(1) == "new", timeout=3.0)
    seen = time.monotonic() - back
    out, err = writer.communicate(timeout=20)
    assert "paid" in out, err
    assert seen < 1.5, seen
    assert store.breaker is not None and store.breaker.state == "closed"  # this process never failed
    store.client.close()


def test_an_overflowing_record_purges_the_prefix(server: RedisServer) -> None:
    store = make_store(server.url)
    assert store.guard is not None
    store.guard.max_owed = 3
    db, read = source()
    f = cache_aside(ttl=60, store=store)(read)
    w = invalidates(f)(lambda x, value: db.__setitem__(x, value))
    keep = make_store(server.url, prefix=store.prefix + "x")  # another prefix: untouched
    g = cache_aside(ttl=60, store=keep)(read)
    assert [f(1), f(2), g(1)] == [10, 20, 10]
    server.pause()
    for x in (1, 2, 3, 4):
        w(x, 99) if x in db else None
        db.setdefault(x, 0)
    w(3, 30)
    w(4, 40)
    server.resume()
    assert store.guard.owed()[2] or not store.guard.owes  # a purge is owed (or already done)
    assert until(lambda: not store.guard.owes)  # type: ignore[union-attr]
    assert [f(1), f(2)] == [99, 99]
    db[1] = 5
    assert g(1) == 10  # the other prefix kept its entry
    store.client.close()
    keep.client.close()


# -- configuration warnings -----------------------------------------------------------------------


def test_a_client_that_would_stall_callers_warns_once_with_the_fix(server: RedisServer) -> None:
    slow = redis.Redis.from_url(server.url)  # redis-py's defaults: retries on
    with pytest.warns(CacheWarning, match="socket_timeout=0.25"):
        RedisStore(slow)
    forever = redis.Redis.from_url(server.url, socket_timeout=None, retry=ClientRetry(NoBackoff(), 0))
    with pytest.warns(CacheWarning, match="no socket_timeout"):
        RedisStore(forever)
    retrying = redis.Redis.from_url(server.url, socket_timeout=0.2, retry=ClientRetry(NoBackoff(), 3))
    if hasattr(ClientRetry, "get_retries"):  # redis-py >= 6; 5.x does not tell the count through its API
        with pytest.warns(CacheWarning, match=r"redis-py's own retries on \(3,"):
            RedisStore(retrying)
    fine = redis.Redis.from_url(server.url, socket_timeout=0.2, retry=ClientRetry(NoBackoff(), 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RedisStore(fine)
    for c in (slow, forever, retrying, fine):
        c.close()


# -- asyncio ---------------------------------------------------------------------------------------


def test_async_calls_survive_a_hang_and_recover(server: RedisServer) -> None:
    store = make_store(server.url, asyncio=True)
    _db, read = source()

    @cache_aside(ttl=60, store=store)
    async def f(x: int) -> int:
        return read(x)

    async def scenario() -> list[str]:
        states = States(store)
        assert await f(1) == 10
        server.pause()
        for _ in range(4):
            started = time.monotonic()
            assert await f(1) == 10
            assert time.monotonic() - started < 1.0
            states.look()
        server.resume()
        await asyncio.sleep(RESET)
        for _ in range(3):
            states.look()
            assert await f(1) == 10
            states.look()
        return states.seen

    assert LOOP.run_until_complete(scenario()) == ["closed", "open", "half_open", "closed"]
    LOOP.run_until_complete(store.client.aclose())


def test_a_cancelled_async_leader_lets_its_lease_go(server: RedisServer) -> None:
    store = make_store(server.url, asyncio=True)
    other = make_store(server.url, asyncio=True, prefix=store.prefix)

    async def scenario() -> tuple[str, float]:
        entered = asyncio.Event()

        @cache_aside(ttl=60, key="k", store=store)
        async def stuck() -> str:
            entered.set()
            await asyncio.sleep(30)
            return "never"

        @cache_aside(ttl=60, key="k", store=other)
        async def quick() -> str:
            return "quick"

        task = asyncio.ensure_future(stuck())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.monotonic()
        value = await quick()  # not made to wait for lease_timeout (5 s)
        return value, time.monotonic() - started

    value, waited = LOOP.run_until_complete(scenario())
    assert value == "quick" and waited < 1.0
    LOOP.run_until_complete(store.client.aclose())
    LOOP.run_until_complete(other.client.aclose())


def test_redis_server_binary_is_present_for_fault_tests() -> None:
    assert REDIS_SERVER is not None or not os.environ.get("CACHEASIDE_REQUIRE_REDIS")


# -- soak -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_soak_eight_threads_through_two_kills_and_restarts(redis_server: RedisServer) -> None:
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    try:
        _soak(server)
    finally:
        server.stop()


def _soak(server: RedisServer) -> None:
    store = make_store(server.url, breaker=CircuitBreaker(5, 0.5))
    rows = 16
    db = {r: 0 for r in range(rows)}
    lock = threading.Lock()

    @cache_aside(ttl=60, store=store, key="row:{r}")
    def read(r: int) -> str:
        with lock:
            value = f"row{r}-v{db[r]}"
        time.sleep(0.002)  # the source of truth is a database, not a dict
        return value

    @invalidates(read)
    def write(r: int) -> int:
        with lock:
            db[r] += 1
            return db[r]

    total, threads = 20_000, 8
    done = [0]
    log: list[tuple[str, int, float, float, int]] = []
    errors: list[BaseException] = []
    wrong: list[str] = []
    down: list[tuple[float, float]] = []
    closed_after: list[float] = []

    def worker(seed: int) -> None:
        import random

        rng = random.Random(seed)
        mine = []
        for _ in range(total // threads):
            r = rng.randrange(rows)
            start = time.monotonic()
            try:
                if rng.random() < 0.1:
                    version = write(r)
                    kind = "w"
                else:
                    value = read(r)
                    kind = "r"
                    name, _, v = value.partition("-v")
                    version = int(v)
                    if name != f"row{r}":
                        wrong.append(value)
            except BaseException as exc:  # surfaced to a caller: the test fails on any
                errors.append(exc)
                continue
            mine.append((kind, r, start, time.monotonic(), version))
            done[0] += 1
        with lock:
            log.extend(mine)

    def chaos() -> None:
        for at in (0.2, 0.6):
            while done[0] < total * at:
                time.sleep(0.005)
            went = time.monotonic()
            server.kill()
            time.sleep(0.8)
            server.start()  # with its data (append-only file): old values come back
            back = time.monotonic()
            down.append((went, back))
            assert store.breaker is not None
            while store.breaker.state != "closed" and time.monotonic() - back < 10:
                time.sleep(0.005)
            closed_after.append(time.monotonic() - back)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    monkey = threading.Thread(target=chaos)
    started = time.monotonic()
    for t in [*workers, monkey]:
        t.start()
    for t in [*workers, monkey]:
        t.join(120)
    elapsed = time.monotonic() - started

    stale = 0
    writes: dict[int, list[tuple[float, int]]] = {}
    for kind, r, _s, end, version in log:
        if kind == "w":
            writes.setdefault(r, []).append((end, version))
    for kind, r, s, _e, version in log:
        if kind == "r" and version < max((v for end, v in writes.get(r, []) if end < s), default=0):
            stale += 1
    during = sorted(e - s for _k, _r, s, e, _v in log if any(a <= s <= b for a, b in down))
    p = lambda q: during[min(len(during) - 1, int(len(during) * q))] * 1000 if during else 0.0
    print(
        f"\nsoak: {len(log)} calls in {elapsed:.1f} s, {len(errors)} errors surfaced, {len(wrong)} wrong values, "
        f"{stale} stale reads; during the outages p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms over {len(during)} calls; "
        f"breaker closed {', '.join(f'{c:.2f}' for c in closed_after)} s after Redis came back; "
        f"stats {read.stats()}"
    )
    assert not errors and not wrong and stale == 0
    assert len(log) == total and len(down) == 2
    assert store.breaker is not None and store.breaker.state == "closed"
    store.client.close()


# -- the helpers and the logger ------------------------------------------------------------------


def test_helpers_and_writers_never_raise_when_the_store_is_unreachable() -> None:
    store = make_store(f"redis://127.0.0.1:{free_port()}/0")
    db, read = source()
    f = cache_aside(ttl=60, store=store, tags=["row:{x}"])(read)
    w = invalidates(f, tags=["row:{x}"])(lambda x, value: db.__setitem__(x, value))
    f.invalidate(1)
    assert f.refresh(1) == 10
    w(1, 16)
    from cacheaside import invalidate_tags

    invalidate_tags("row:2", store=store)
    assert f(1) == 16
    assert store.guard is not None
    keys, tags, purge = store.guard.owed()
    assert f.key(1) in keys and {"row:1", "row:2"} <= set(tags) and not purge
    store.client.close()


def test_the_logger_says_each_transition_once(server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    store = make_store(server.url)
    _db, read = source()
    f = cache_aside(ttl=60, store=store)(read)
    states = States(store)
    caplog.set_level("INFO", logger="cacheaside")
    calls(f, states, 2)
    server.kill()
    calls(f, states, 20)
    server.restart()
    time.sleep(RESET)
    calls(f, states, 20)
    assert states.seen == ["closed", "open", "half_open", "closed"]
    opened = [r for r in caplog.records if "circuit open" in r.getMessage()]
    closed = [r for r in caplog.records if "circuit closed" in r.getMessage()]
    assert len(opened) == 1 and opened[0].levelname == "WARNING"
    assert len(closed) == 1 and closed[0].levelname == "INFO"
    assert all("127.0.0.1" not in r.getMessage() for r in caplog.records)  # error types, never messages
    snap = store.breaker.snapshot()  # type: ignore[union-attr]
    assert snap.state == "closed" and snap.consecutive_failures == 0 and snap.last_error_type == "ConnectionError"
    store.client.close()


def test_async_evictions_during_an_outage_are_replayed_in_the_background(server: RedisServer) -> None:
    store = make_store(server.url, asyncio=True)
    db, read = source()

    @cache_aside(ttl=60, store=store)
    async def f(x: int) -> int:
        return read(x)

    @invalidates(f)
    async def w(x: int, value: int) -> None:
        db[x] = value

    async def scenario() -> None:
        assert await f(1) == 10 and await f(1) == 10
        server.pause()
        await w(1, 17)
        assert store.guard is not None and store.guard.owes and store.guard.replaying
        server.resume()
        deadline = time.monotonic() + 3
        while store.guard.owes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not store.guard.owes  # taken by the background replay, no call needed

    LOOP.run_until_complete(scenario())
    control = redis.Redis.from_url(server.url)
    assert control.get(f.key(1)) is None
    control.close()
    LOOP.run_until_complete(store.client.aclose())


def test_a_caller_cancelled_mid_command_leaves_the_connection_usable(server: RedisServer) -> None:
    store = make_store(server.url, asyncio=True, socket_timeout=1.0)
    read_more = {1: 10, 2: 20, 3: 30}

    @cache_aside(ttl=60, store=store)
    async def f(x: int) -> int:
        return read_more[x]

    async def scenario() -> list[int]:
        assert await f(1) == 10 and await f(2) == 20
        server.pause()
        task = asyncio.ensure_future(f(1))
        await asyncio.sleep(0.1)  # its GET is written and waiting for a reply
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.resume()
        # Every later reply matches its own request (a connection out of step would swap them).
        return [await f(x) for x in (3, 2, 1, 3, 2, 1)]

    assert LOOP.run_until_complete(scenario()) == [30, 20, 10, 30, 20, 10]
    LOOP.run_until_complete(store.client.aclose())


def test_refresh_skips_an_open_breaker_too() -> None:
    store = make_store(f"redis://127.0.0.1:{free_port()}/0")
    _db, read = source()
    f = cache_aside(ttl=60, store=store)(read)
    for _ in range(3):
        f(1)
    assert store.breaker is not None and store.breaker.state == "open"
    pool = store.client.connection_pool
    attempts = []
    real = pool.get_connection
    pool.get_connection = lambda *a, **k: (attempts.append(1), real(*a, **k))[1]  # type: ignore[method-assign]
    assert f.refresh(1) == 10 and f.refresh(2) == 20
    assert attempts == [] and f.stats().bypassed == 2
    store.client.close()


def test_misses_and_the_functions_own_exceptions_are_not_store_faults(server: RedisServer) -> None:
    store = make_store(server.url)

    @cache_aside(ttl=60, store=store)
    def boom(x: int) -> int:
        raise ValueError(x)

    for x in range(10):
        with pytest.raises(ValueError):
            boom(x)
    assert store.breaker is not None
    snap = store.breaker.snapshot()
    assert snap.state == "closed" and snap.consecutive_failures == 0 and snap.last_error_type is None
    assert boom.stats().errors == 0 and boom.stats().misses == 10
    store.client.close()


# -- store lifecycle: close() stops the background replay; a dropped store leaves nothing running


def _replays() -> int:
    return sum(t.name == "cacheaside-replay" and t.is_alive() for t in threading.enumerate())


def test_close_stops_the_replay_of_owed_evictions(server: RedisServer) -> None:
    store = make_store(server.url, retry=None)
    f = cache_aside(ttl=60, store=store)(lambda x: x)
    server.kill()
    before = _replays()
    f.invalidate(1)  # owed: a replay thread starts
    assert store.guard.owes and _replays() == before + 1
    store.close()
    assert until(lambda: _replays() == before, 2.0)
    server.start()


def test_a_dropped_store_leaves_no_replay_thread_behind() -> None:
    import gc

    before = _replays()
    for i in range(3):
        store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=f"dropped{i}", retry=None,
                                    socket_connect_timeout=0.1)
        cache_aside(ttl=60, store=store)(lambda x: x).invalidate(1)  # owed, never taken
        store.client.close()
        del store
    # redis-py's errors leave reference cycles, so the stores go at the next garbage collection
    # (the replay holds them weakly); then their replays end within a replay interval.
    assert until(lambda: gc.collect() >= 0 and _replays() == before, 2.0)


def test_aclose_stops_the_async_replay_and_closes_the_client(server: RedisServer) -> None:
    store = make_store(server.url, asyncio=True, retry=None)
    f = cache_aside(ttl=60, store=store)(_async_identity)

    async def scenario() -> bool:
        server.kill()
        await f.invalidate(1)
        replaying = store.guard.replaying
        await store.aclose()
        deadline = time.monotonic() + 2
        while store.guard.replaying and time.monotonic() < deadline:  # the task sees the store closed, ends
            await asyncio.sleep(0.01)
        return replaying and not store.guard.replaying

    assert LOOP.run_until_complete(scenario())
    server.start()


async def _async_identity(x: int) -> int:
    return x


def test_a_value_the_serializer_refuses_is_not_a_store_incident(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No breaker count and no "store failed" line: the value, not the store, is at fault."""
    store = make_store(server.url)
    f = cache_aside(ttl=60, store=store)(lambda x: object())
    with pytest.warns(CacheWarning, match="could not be cached"):
        for _ in range(6):
            f(1)
    assert store.breaker is not None and store.breaker.state == "closed" and store.guard.clear
    assert not [r for r in caplog.records if "store failed" in r.getMessage()]
    assert f.stats().errors == 6
    store.close()


# -- incidents: one per outage of a kind of work, however calls alternate; the right advice


def test_a_store_that_serves_reads_but_refuses_writes_is_one_incident(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Under maxmemory with noeviction, hits work and fills fail: one warning, not one per call."""
    import logging

    caplog.set_level(logging.INFO, logger="cacheaside")
    store = make_store(server.url, breaker=CircuitBreaker(100, RESET))
    calls: list[int] = []

    @cache_aside(ttl=60, store=store)
    def f(x: int) -> int:
        calls.append(x)
        return x

    f(0)  # cached before memory runs out: later calls of f(0) hit
    control = redis.Redis.from_url(server.url)
    control.config_set("maxmemory-policy", "noeviction")
    control.config_set("maxmemory", 1)
    try:
        for i in range(1, 9):
            assert f(0) == 0 and f(i) == i  # a hit, then a miss whose fill fails
    finally:
        control.config_set("maxmemory", 0)
        control.close()
    assert f.stats().hits >= 8 and f.stats().errors >= 8
    started = [r for r in caplog.records if "store failed" in r.getMessage()]
    ended = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert len(started) == 1 and not ended
    assert f(99) == 99 and f(99) == 99  # memory back: a fill that works ends the incident
    assert len([r for r in caplog.records if "answers again" in r.getMessage()]) == 1
    store.close()


def test_a_user_without_a_right_the_scripts_need_is_told_which_rights_to_grant(server: RedisServer) -> None:
    control = redis.Redis.from_url(server.url)
    control.execute_command("ACL", "SETUSER", "notime", "on", ">pw", "~*", "+@read", "+@write", "+@scripting",
                            "+blpop")
    try:
        store = RedisStore.from_url(f"redis://notime:pw@127.0.0.1:{server.port}/0", prefix="nt", retry=None)

        @cache_aside(ttl=60, store=store)
        def f(x: int) -> int:
            return x

        with pytest.warns(CacheWarning, match=r"may not run a command.*\+@keyspace \+time"):
            assert f(1) == 1
        store.close()
    finally:
        control.execute_command("ACL", "DELUSER", "notime")
        control.close()


def test_an_incident_begun_by_a_failed_eviction_ends_when_the_replay_lands(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A read-mostly app: an eviction fails, the store comes back, the owed eviction is replayed, and the
    incident is over, so the next outage is logged as a new one."""
    import logging

    caplog.set_level(logging.INFO, logger="cacheaside")
    store = make_store(server.url, retry=None, breaker=CircuitBreaker(100, RESET))
    f = cache_aside(ttl=60, store=store)(lambda x: x)
    f(7)
    for round_ in range(2):
        server.pause()
        try:
            f.invalidate(7)  # fails: owed, an incident begins
        finally:
            server.resume()
        assert until(lambda: not store.guard.owes)  # the replay lands
        for _ in range(5):
            f(7)
        assert store.guard.clear and store.guard.failing is None, round_
    started = [r for r in caplog.records if "store failed" in r.getMessage()]
    ended = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert len(started) == 2 and len(ended) == 2
    store.close()
