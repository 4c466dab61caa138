"""Hot keys: one background refresh per key however many stale or early hits, early refresh
(XFetch) on the store's clock, and no old value after a refresh stored a new one; memory and
Redis, sync and async, with an injected clock and random source."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
import redis

from cacheaside import MemoryStore, cache_aside
from cacheaside import _refreshes as refreshes
from cacheaside._types import Entry

from .conftest import BACKENDS, FakeClock
from .helpers import LOOP, resolve


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)



class Source:
    """A function whose runs after the first block until ``release`` (a refresh in flight)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.runs = 0
        self.delay = delay
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail = False

    def __call__(self, x: int) -> int:
        self.runs += 1
        run = self.runs
        if run == 1:
            time.sleep(self.delay)  # the computation's time: XFetch scales by it
        else:
            self.entered.set()
            assert self.gate.wait(5)
            if self.fail:
                raise ConnectionError("source down")
        return run


def decorate(mode: str, source: Source, **options: Any) -> Any:
    if mode == "sync":
        return cache_aside(**options)(source)

    async def body(x: int) -> int:
        if source.runs >= 1:  # a refresh: wait off the loop, so that callers keep being served
            return await asyncio.to_thread(source, x)
        return source(x)

    return cache_aside(**options)(body)


def _settled(predicate: Any, mode: str, timeout: float = 3.0) -> bool:
    """Wait for ``predicate``, letting the suite's loop run its tasks (async refreshes) meanwhile."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        if mode == "async":
            LOOP.run_until_complete(asyncio.sleep(0.002))
        else:
            time.sleep(0.002)
    return True


def _count_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every thread started, and every background task the library keeps, from now on."""
    import cacheaside.drivers

    started: list[str] = []
    real_start = threading.Thread.start
    real_keep = cacheaside.drivers.keep_task

    def start(self: threading.Thread) -> None:
        started.append("thread")
        real_start(self)

    def keep_task(task: Any) -> Any:
        started.append("task")
        return real_keep(task)

    monkeypatch.setattr(threading.Thread, "start", start)
    monkeypatch.setattr(cacheaside.drivers, "keep_task", keep_task)
    return started


def _one_refresh(started: list[str], mode: str) -> bool:
    """At most one refresh started: a pool thread (sync), or a task and the thread its body runs on."""
    return started.count("thread") <= 1 and started.count("task") <= (1 if mode == "async" else 0)


def test_1000_stale_hits_start_one_refresh_and_no_round_trip_each(
    clock: FakeClock, store: Any, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = Source()
    f = decorate(mode, source, ttl=10, stale_while_revalidate=60, store=store)
    assert resolve(f(1)) == 1
    clock.advance(15)
    counter = redis.Redis(port=int(store.client.connection_pool.connection_kwargs["port"])) \
        if hasattr(store, "client") and not store.cluster else None
    calls = (lambda: int(counter.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))) \
        if counter is not None else (lambda: 0)
    started = _count_starts(monkeypatch)
    before = calls()
    assert [resolve(f(1)) for _ in range(1000)] == [1] * 1000  # served stale, at once
    assert _settled(source.entered.is_set, mode)  # the one refresh is computing
    assert [resolve(f(1)) for _ in range(100)] == [1] * 100
    assert _one_refresh(started, mode) and source.runs == 2
    assert calls() - before <= 1  # the refresh's acquire (which records its tags): nothing per stale hit
    assert f.stats().stale == 1100
    source.gate.set()
    assert _settled(lambda: refreshes.running() == 0, mode)
    assert resolve(f(1)) == 2 and source.runs == 2
    if counter is not None:
        counter.close()


def test_once_a_refresh_is_stored_no_call_returns_the_older_value(clock: FakeClock, store: Any, mode: str) -> None:
    source = Source()
    f = decorate(mode, source, ttl=10, stale_while_revalidate=60, store=store)
    assert resolve(f(1)) == 1
    clock.advance(15)
    assert resolve(f(1)) == 1  # starts the refresh
    assert _settled(source.entered.is_set, mode)
    source.gate.set()
    stored = (lambda: (resolve(store.aget(f.key(1))) if not store.serves_sync else store.get(f.key(1))).value == 2)
    assert _settled(stored, mode)
    assert [resolve(f(1)) for _ in range(200)] == [2] * 200
    assert source.runs == 2


def test_a_failed_refresh_keeps_the_stale_value_counts_and_warns_once(
    clock: FakeClock, store: Any, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = Source()
    source.fail = True
    source.gate.set()
    f = decorate(mode, source, ttl=10, stale_while_revalidate=60, store=store)
    assert resolve(f(1)) == 1
    clock.advance(15)
    with caplog.at_level(logging.WARNING, logger="cacheaside"):
        for expected_errors in (1, 2):
            assert resolve(f(1)) == 1
            assert _settled(lambda n=expected_errors: f.stats().refresh_errors == n, mode)  # type: ignore[misc]
            assert _settled(lambda: refreshes.running() == 0, mode)
    warnings = [r for r in caplog.records if "background refresh failed" in r.getMessage()]
    assert len(warnings) == 1 and f.stats().errors == 0


def _force(f: Any, u: float) -> None:
    """Inject the random source of ``f``'s read policy (XFetch's U)."""
    f._self_site.policy.random = lambda: u


def test_early_refresh_recomputes_once_before_expiry_as_xfetch_says(
    clock: FakeClock, store: Any, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """delta * beta * -ln(1 - U) >= time to expiry: with delta ~0.02 s, beta 1000 and ttl 60, U = 0.5
    (-ln 0.5 = 0.69: 14 s) keeps the entry while 60 s are left; U = 1 - 1e-6 (13.8: 276 s) recomputes
    early, once, while every caller keeps the current value."""
    source = Source(delay=0.02)
    f = decorate(mode, source, ttl=60, early_refresh=1000, store=store)
    assert resolve(f(1)) == 1
    _force(f, 0.5)
    assert [resolve(f(1)) for _ in range(50)] == [1] * 50 and source.runs == 1
    _force(f, 1 - 1e-6)
    started = _count_starts(monkeypatch)
    assert [resolve(f(1)) for _ in range(500)] == [1] * 500  # early hits: the current value, at once
    assert _settled(source.entered.is_set, mode)
    assert source.runs == 2 and _one_refresh(started, mode)
    source.gate.set()
    assert _settled(lambda: refreshes.running() == 0, mode)
    _force(f, 0.0)  # -ln(1) = 0: never early
    assert resolve(f(1)) == 2 and source.runs == 2
    assert f.stats().hits == 551 and f.stats().stale == 0  # 50 + 500 early + 1


def test_early_refresh_with_the_time_left_judged_on_the_memory_stores_clock(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    source = Source(delay=0.02)
    source.gate.set()
    f = cache_aside(ttl=60, early_refresh=1000, store=store)(source)
    assert f(1) == 1
    _force(f, 0.5)  # 0.02 * 1000 * 0.69 ~ 14 s: early once less than that is left
    clock.advance(40)  # 20 s left
    assert f(1) == 1 and source.runs == 1
    clock.advance(10)  # 10 s left
    assert f(1) == 1
    assert _settled(lambda: source.runs == 2 and refreshes.running() == 0, "sync")
    assert f(1) == 2


def test_early_refresh_on_redis_judges_the_time_left_on_the_servers_clock(redis_server: Any) -> None:
    """A writer whose wall clock is 30 s behind: judged by the writer's stamp, 30 of the 60 s would be
    left; by the server's expiry, 60. With a threshold of 45 s the entry is not refreshed early."""
    from .conftest import redis_store

    with redis_store(redis_server, clock=lambda: time.time() - 30) as writer, \
            redis_store(redis_server, prefix=writer.prefix) as reader:
        runs: list[int] = []

        @cache_aside(ttl=60, early_refresh=45, store=reader, key="skew:{x}")
        def f(x: int) -> int:
            runs.append(x)
            return x

        lease = writer.acquire(f.key(1))
        assert writer.set(f.key(1), Entry(1, writer.clock(), 60.0, 0.0, 1.0), lease)  # delta: 1 s
        _force(f, 1 - math.exp(-1))  # -ln(1 - U) = 1: early when under 45 s are left
        assert [f(1) for _ in range(20)] == [1] * 20
        assert runs == [] and refreshes.running() == 0


# -- from a hostile trial: each of these failed on the first version of the refresh pool ----------


def test_an_argument_mutated_after_the_call_never_poisons_the_refreshed_entry(
    clock: FakeClock, store: Any, mode: str
) -> None:
    """The background refresh runs with the call's own argument objects: when the caller changed one
    meanwhile, the value computed from it is not stored under the old key (counted, logged)."""
    entered, gate = threading.Event(), threading.Event()
    runs: list[int] = []

    def page(params: dict[str, int]) -> str:
        runs.append(params["n"])
        if len(runs) > 1:
            entered.set()
            assert gate.wait(5)
        return f"page {params['n']}"

    if mode == "sync":
        f = cache_aside(ttl=10, stale_while_revalidate=60, store=store)(page)
    else:
        async def apage(params: dict[str, int]) -> str:
            return page(params) if not runs else await asyncio.to_thread(page, params)

        f = cache_aside(ttl=10, stale_while_revalidate=60, store=store)(apage)
    params = {"n": 1}
    assert resolve(f(params)) == "page 1"
    clock.advance(15)
    assert resolve(f(params)) == "page 1"  # stale: the refresh starts with this dict
    params["n"] = 2  # the caller reuses its dict
    gate.set()
    assert _settled(lambda: refreshes.running() == 0, mode)
    assert f.stats().refresh_errors == 1
    assert resolve(f({"n": 1})) == "page 1"  # still the old value of page 1, never "page 2"
    assert _settled(lambda: refreshes.running() == 0, mode)  # the refresh that stale hit started


def test_f_refresh_during_a_fill_under_way_stores_its_own_value(store: Any, mode: str) -> None:
    """f.refresh() while another call is computing from older data: the refresh's value is the one
    stored (the fill under way is revoked), as the contract says: it stores and returns."""
    data = {"v": "v1"}
    entered, gate = threading.Event(), threading.Event()
    runs: list[str] = []

    def read(x: int) -> str:
        value = data["v"]
        runs.append(value)
        if len(runs) == 1:
            entered.set()
            assert gate.wait(5)
        return value

    if mode == "sync":
        f = cache_aside(ttl=60, store=store)(read)
        slow = threading.Thread(target=f, args=(1,))
        slow.start()
        assert entered.wait(3)
        data["v"] = "v2"
        assert f.refresh(1) == "v2"
        gate.set()
        slow.join(5)
        assert f(1) == "v2"
    else:
        async def aread(x: int) -> str:
            return await asyncio.to_thread(read, x)

        f = cache_aside(ttl=60, store=store)(aread)

        async def scenario() -> str:
            slow = asyncio.ensure_future(f(1))
            assert await asyncio.to_thread(entered.wait, 3)
            data["v"] = "v2"
            assert await f.refresh(1) == "v2"
            gate.set()
            await slow
            return str(await f(1))

        assert LOOP.run_until_complete(scenario()) == "v2"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_a_child_forked_while_a_refresh_runs_computes_its_own_misses(clock: FakeClock) -> None:
    """The parent's flights and memory leases belong to threads the child does not have: the child
    must not wait for them (it hung forever on a miss)."""
    store = MemoryStore(clock=clock)
    source = Source()
    f = cache_aside(ttl=10, stale_while_revalidate=60, store=store)(source)
    assert f(1) == 1
    clock.advance(15)
    assert f(1) == 1
    assert source.entered.wait(3)  # the parent's refresh is computing, holding the lease
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a miss after the stale window, then report
        try:
            signal.alarm(5)
            clock.advance(100)
            source.gate.set()  # the child's own computations do not block
            os.write(write, str(f(1)).encode())
        finally:
            os._exit(0)
    os.close(write)
    got = os.read(read, 100)
    os.waitpid(pid, 0)
    source.gate.set()
    assert got == b"3"  # computed in the child (run 3: the parent's refresh was run 2)


def test_a_hung_refresh_neither_blocks_other_refreshes_nor_the_interpreters_exit(tmp_path: Any) -> None:
    script = tmp_path / "hung.py"
    script.write_text(textwrap.dedent('''
        import threading, time
        from cacheaside import MemoryStore, cache_aside
        from cacheaside import _refreshes

        now = [1000.0]
        store = MemoryStore(clock=lambda: now[0])
        never = threading.Event()
        runs = {"slow": 0, "other": 0}

        @cache_aside(ttl=10, stale_while_revalidate=60, store=store)
        def slow(x):
            runs["slow"] += 1
            if runs["slow"] > 4:
                never.wait()  # hangs for good
            return x

        @cache_aside(ttl=10, stale_while_revalidate=60, store=store)
        def other(x):
            runs["other"] += 1
            return runs["other"]

        for x in range(4):
            slow(x)
        other(0)
        now[0] += 15
        for x in range(4):
            slow(x)  # four refreshes that never end
        other(0)
        deadline = time.monotonic() + 3
        while runs["other"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("other refreshed" if runs["other"] == 2 else "other starved", flush=True)
    '''))
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "other refreshed"
    assert time.monotonic() - started < 10  # exited though four refresh threads hang


def test_a_claim_whose_event_loop_was_closed_is_given_up(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop closed with the refresh task still pending never runs its ``finally``: the claim is
    taken as abandoned after CLAIM_SECONDS, and a later stale hit refreshes."""
    monkeypatch.setattr(refreshes, "CLAIM_SECONDS", 0.05)
    store = MemoryStore(clock=clock)
    runs: list[int] = []

    @cache_aside(ttl=10, stale_while_revalidate=60, store=store)
    async def get(x: int) -> int:
        runs.append(x)
        if len(runs) > 1:
            await asyncio.sleep(0.01)  # a refresh that awaits: its loop closes under it
        return len(runs)

    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(get(1)) == 1
    clock.advance(15)
    assert loop.run_until_complete(get(1)) == 1  # the refresh task is made, never run
    loop.close()
    time.sleep(0.1)

    async def later() -> int:
        value = await get(1)
        for _ in range(100):
            if len(runs) == 3:
                break
            await asyncio.sleep(0.005)
        return value

    assert asyncio.run(later()) == 1 and len(runs) == 3  # a second refresh, once the first was given up


def test_a_background_refresh_whose_tags_cannot_be_rendered_is_counted_and_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The refresh's own machinery failing (here: rendering a tag raises) is a failed refresh, counted
    and logged, not a silent one (it was neither)."""
    store = MemoryStore(clock=clock)

    class User:
        broken = False

        @property
        def id(self) -> int:
            if self.broken:
                raise RuntimeError("session closed")
            return 7

        def __cache_key__(self) -> str:
            return "user"

    @cache_aside(ttl=10, stale_while_revalidate=60, store=store, tags=["u:{u.id}"])
    def get(u: User) -> str:
        return "x"

    user = User()
    assert get(user) == "x"
    clock.advance(15)
    user.broken = True
    with caplog.at_level(logging.WARNING, logger="cacheaside"):
        assert get(user) == "x"  # served stale; its refresh cannot render the tag
        assert _settled(lambda: refreshes.running() == 0, "sync")
    assert get.stats().refresh_errors == 1 and get.stats().errors == 0
    assert any("background refresh failed" in r.getMessage() for r in caplog.records)


def test_stale_hits_while_the_interpreter_shuts_down_never_raise(tmp_path: Any) -> None:
    """A worker thread still serving after the main thread returned, and an atexit hook: their stale
    hits raised RuntimeError ('cannot schedule new futures after interpreter shutdown')."""
    script = tmp_path / "shutdown.py"
    script.write_text(textwrap.dedent('''
        import atexit, threading, time
        from cacheaside import MemoryStore, cache_aside

        now = [1000.0]

        @cache_aside(ttl=10, stale_while_revalidate=60, store=MemoryStore(clock=lambda: now[0]))
        def config(x):
            return x

        def worker():
            time.sleep(0.3)  # the main thread has returned by now
            now[0] += 15
            print("worker:", config(1), flush=True)

        @atexit.register
        def last():
            now[0] += 15
            print("atexit:", config(1), flush=True)

        config(1)
        threading.Thread(target=worker).start()
    '''))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0 and "Error" not in done.stderr, done.stderr
    assert "worker: 1" in done.stdout and "atexit: 1" in done.stdout
