"""RedisStore hit cost against a bare ``GET`` + ``msgpack.unpackb`` of the same payload, sync and async;
and how promptly a waiter is handed another process's value.

Run: make bench-redis  (or .venv/bin/python benchmarks/bench_redis.py [--url redis://...])

Without --url it starts its own redis-server on a free port. Each case runs twice: on a client
the user built (``redis.Redis(host=..., port=...)``, redis-py's defaults) and on the client
``RedisStore.from_url`` builds (0.25 s timeouts, redis-py's retries off). Baseline and cacheaside
share the client and run in alternating rounds, and the ratio is the median of per-round ratios,
so machine noise hits both alike.

Hand-over: a holder computes a key while a waiter (another store, so another process to it) is
blocked on it; the figure is the time from the end of the holder's computation to the waiter's
return (the holder's store round trip, the wake, the waiter's reply). Target: about 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import redis
import redis.asyncio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cacheaside
from cacheaside import RedisStore, cache_aside
from cacheaside.stores import redis_scripts as lua
from tests.redis_server import RedisServer

VALUE = {"id": 1, "name": "user1", "email": "user1@example.com", "roles": ["admin", "dev"], "score": 12.5}


def per_call(fn: Callable[[], Any], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


async def aper_call(fn: Callable[[], Awaitable[Any]], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        await fn()
    return (time.perf_counter() - start) / number


def compare(samples: dict[str, list[float]]) -> tuple[float, float, float]:
    """Medians per call, and the median of the per-round ratios (rounds ran back to back, ABBA)."""
    base, ours = statistics.median(samples["base"]), statistics.median(samples["ours"])
    ratio = statistics.median(o / b for o, b in zip(samples["ours"], samples["base"], strict=True))
    return base, ours, ratio


def _store(url: str, user_built: bool, is_async: bool, prefix: str) -> RedisStore:
    if not user_built:
        return RedisStore.from_url(url, prefix=prefix, asyncio=is_async)
    parts = redis.connection.parse_url(url)
    factory: Any = redis.asyncio.Redis if is_async else redis.Redis
    client = factory(host=parts["host"], port=parts["port"], db=parts.get("db", 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # redis-py's defaults: the store warns about stalls, rightly
        return RedisStore(client, prefix=prefix)


def sync_case(url: str, rounds: int, number: int, user_built: bool) -> tuple[float, float, float]:
    store = _store(url, user_built, False, f"bench-sync-{user_built}")
    client = store.client  # the same client for both

    @cache_aside(ttl=3600, store=store)
    def get_user(user_id: int) -> dict[str, Any]:
        return VALUE

    get_user(1)
    client.set("bench:bare", store.serializer.dumps(VALUE))
    loads = msgpack.unpackb

    def bare() -> Any:
        return loads(client.get("bench:bare"), raw=False, strict_map_key=False)

    assert bare() == get_user(1) == VALUE
    samples: dict[str, list[float]] = {"base": [], "ours": []}
    cases = {"base": bare, "ours": lambda: get_user(1)}
    for i in range(rounds):
        for name in ("base", "ours") if i % 2 == 0 else ("ours", "base"):  # ABBA: drift hits both alike
            samples[name].append(per_call(cases[name], number))
    assert get_user.stats().misses == 1, get_user.stats()
    client.close()
    return compare(samples)


async def async_case(url: str, rounds: int, number: int, user_built: bool) -> tuple[float, float, float]:
    store = _store(url, user_built, True, f"bench-async-{user_built}")
    client = store.client

    @cache_aside(ttl=3600, store=store)
    async def get_user(user_id: int) -> dict[str, Any]:
        return VALUE

    await get_user(1)
    await client.set("bench:bare", store.serializer.dumps(VALUE))
    loads = msgpack.unpackb

    async def bare() -> Any:
        return loads(await client.get("bench:bare"), raw=False, strict_map_key=False)

    assert await bare() == await get_user(1) == VALUE
    samples: dict[str, list[float]] = {"base": [], "ours": []}
    cases = {"base": bare, "ours": lambda: get_user(1)}
    for i in range(rounds):
        for name in ("base", "ours") if i % 2 == 0 else ("ours", "base"):
            samples[name].append(await aper_call(cases[name], number))
    assert get_user.stats().misses == 1, get_user.stats()
    await client.aclose()
    return compare(samples)


# -- hand-over: how long after the holder's computation a waiter in another process returns ----


def _near(prefix: str, key: str, what: str) -> str:
    """The lease hash or waiters set of an entry key (see ``redis_scripts``)."""
    return lua.book(prefix, key) + ":" + what


def handover_case(url: str, rounds: int) -> list[float]:
    """Seconds from the end of the holder's computation to the return of a waiter that was blocked
    on it, per round. Two stores on one prefix are two processes to each other (their holder ids
    differ), so the waiter waits on Redis, not in-process."""
    holder_store = RedisStore.from_url(url, prefix="handover")
    waiter_store = RedisStore.from_url(url, prefix="handover")
    go = threading.Event()
    done: list[float] = []

    @cache_aside(ttl=3600, store=holder_store, key="hot:{n}")
    def holder(n: int) -> dict[str, Any]:
        assert go.wait(5)
        done.append(time.perf_counter())
        return VALUE

    @cache_aside(ttl=3600, store=waiter_store, key="hot:{n}")
    def waiter(n: int) -> dict[str, Any]:
        raise AssertionError("the waiter computed: it should have been handed the value")

    control = holder_store.client
    gaps = []
    for n in range(rounds):
        go.clear()
        t = threading.Thread(target=holder, args=(n,))
        t.start()
        key = holder.key(n)
        while not control.exists(_near(holder_store.prefix, key, "lease")):
            time.sleep(0.0005)

        def release(key: str = key) -> None:
            while not control.scard(_near(holder_store.prefix, key, "waiters")):
                time.sleep(0.0005)
            go.set()

        r = threading.Thread(target=release)
        r.start()
        assert waiter(n) == VALUE
        returned = time.perf_counter()
        t.join()
        r.join()
        gaps.append(returned - done[-1])
    holder_store.client.close()
    waiter_store.client.close()
    return gaps


async def ahandover_case(url: str, rounds: int) -> list[float]:
    """``handover_case`` with asyncio clients: the holder, the waiter and the releaser are tasks."""
    holder_store = RedisStore.from_url(url, prefix="ahandover", asyncio=True)
    waiter_store = RedisStore.from_url(url, prefix="ahandover", asyncio=True)
    go = asyncio.Event()
    done: list[float] = []

    @cache_aside(ttl=3600, store=holder_store, key="hot:{n}")
    async def holder(n: int) -> dict[str, Any]:
        await go.wait()
        done.append(time.perf_counter())
        return VALUE

    @cache_aside(ttl=3600, store=waiter_store, key="hot:{n}")
    async def waiter(n: int) -> dict[str, Any]:
        raise AssertionError("the waiter computed: it should have been handed the value")

    control = holder_store.client
    gaps = []
    for n in range(rounds):
        go.clear()
        key = holder.key(n)
        h = asyncio.ensure_future(holder(n))
        while not await control.exists(_near(holder_store.prefix, key, "lease")):
            await asyncio.sleep(0.0005)

        async def release(key: str = key) -> None:
            while not await control.scard(_near(holder_store.prefix, key, "waiters")):
                await asyncio.sleep(0.0005)
            go.set()

        r = asyncio.ensure_future(release())
        assert await waiter(n) == VALUE
        returned = time.perf_counter()
        await h
        await r
        gaps.append(returned - done[-1])
    await holder_store.client.aclose()
    await waiter_store.client.aclose()
    return gaps


def _quantiles(gaps: list[float]) -> tuple[float, float, float]:
    ordered = sorted(gaps)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.9)], ordered[int(len(ordered) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing Redis (default: start one on a free port)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--number", type=int, default=500)
    parser.add_argument("--handovers", type=int, default=200)
    args = parser.parse_args()
    server = None if args.url else RedisServer()
    url = args.url or server.url  # type: ignore[union-attr]
    try:
        results = []
        for user_built in (True, False):
            kind = "redis.Redis()" if user_built else "from_url"
            results.append((f"sync, {kind}", sync_case(url, args.rounds, args.number, user_built)))
            results.append((f"asyncio, {kind}", asyncio.run(async_case(url, args.rounds, args.number, user_built))))
        handover = handover_case(url, args.handovers)
        ahandover = asyncio.run(ahandover_case(url, args.handovers))
    finally:
        if server is not None:
            server.stop()
    print(f"cacheaside {cacheaside.__version__}, redis-py {redis.__version__}, msgpack {msgpack.version}, "
          f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
          f"medians of {args.rounds} ABBA rounds of {args.number} calls")
    print(f"{'case':24} {'bare GET+unpackb':>17} {'cacheaside hit':>15} {'ratio':>7}")
    for name, (base, ours, ratio) in results:
        print(f"{name:24} {base * 1e6:14.1f} us {ours * 1e6:12.1f} us {ratio:6.3f}x")
    print(f"hand-over: a waiter returns this long after the holder's computation ends "
          f"({args.handovers} rounds; target about 1 ms)")
    for name, gaps in (("sync", handover), ("asyncio", ahandover)):
        p50, p90, p99 = _quantiles(gaps)
        print(f"{name:10} p50 {p50 * 1e3:.2f} ms  p90 {p90 * 1e3:.2f} ms  p99 {p99 * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
