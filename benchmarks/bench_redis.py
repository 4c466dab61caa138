"""RedisStore hit cost against a bare ``GET`` + ``msgpack.unpackb`` of the same payload, sync and async.

Run: make bench-redis  (or .venv/bin/python benchmarks/bench_redis.py [--url redis://...])

Without --url it starts its own redis-server on a free port. Baseline and
cacheaside run in alternating rounds on the same connection pool settings, and
the ratio is the median of per-round ratios, so machine noise hits both alike. The target is at
most 1.10x.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import redis
import redis.asyncio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cacheaside
from cacheaside import RedisStore, cache_aside
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


def sync_case(url: str, rounds: int, number: int) -> tuple[float, float, float]:
    store = RedisStore.from_url(url, prefix="bench")
    client = store.client  # the same client settings for both

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
    assert get_user.stats().misses == 1
    client.close()
    return compare(samples)


async def async_case(url: str, rounds: int, number: int) -> tuple[float, float, float]:
    store = RedisStore.from_url(url, prefix="bench", asyncio=True)
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
    assert get_user.stats().misses == 1
    await client.aclose()
    return compare(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing Redis (default: start one on a free port)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--number", type=int, default=500)
    args = parser.parse_args()
    server = None if args.url else RedisServer()
    url = args.url or server.url  # type: ignore[union-attr]
    try:
        sync = sync_case(url, args.rounds, args.number)
        asyn = asyncio.run(async_case(url, args.rounds, args.number))
    finally:
        if server is not None:
            server.stop()
    print(f"cacheaside {cacheaside.__version__}, redis-py {redis.__version__}, msgpack {msgpack.version}, "
          f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
          f"medians of {args.rounds} ABBA rounds of {args.number} calls")
    print(f"{'case':10} {'bare GET+unpackb':>17} {'cacheaside hit':>15} {'ratio':>7}  (target <= 1.10x)")
    for name, (base, ours, ratio) in (("sync", sync), ("asyncio", asyn)):
        print(f"{name:10} {base * 1e6:14.1f} us {ours * 1e6:12.1f} us {ratio:6.3f}x")


if __name__ == "__main__":
    main()
