"""Stampede: one hot key whose computation takes 50 ms, with a 1 s TTL, read continuously by 32
threads (sync) or 32 asyncio tasks for 10 s, on process memory and on Redis.

For each strategy: computations per expiry (mean and max; computations whose starts lie within
100 ms of each other count as one expiry's), callers that waited on a computation (a call of 25 ms
or more: half a computation; a hit takes microseconds), and p50 / p99 / max call latency. The
baseline is the same workload on a key that never expires (hits only), in the same run.

Strategies: no protection (get, compute, set), cacheaside with single-flight only, with
``early_refresh=1.0`` and with ``stale_while_revalidate=1``; and the peers on the same workload:
dogpile.cache (``cache_on_arguments``, its dogpile lock), cachetools (``cached`` with a
``condition``), cashews (``@cache.early`` and ``@cache(lock=True)``), aiocache
(``cached_stampede``). The peers come from the ``bench`` extra: ``pip install -e '.[bench]'``.

    python benchmarks/bench_stampede.py [--seconds 10] [--only memory|redis] [--write]

``--write`` replaces the "Stampede" section of ``benchmarks/RESULTS.md``.
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
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cachetools
import redis
import redis.asyncio

from cacheaside import MemoryStore, RedisStore, cache_aside
from tests.redis_server import RedisServer

COMPUTE = 0.05
TTL = 1.0
WORKERS = 32
WAITED = COMPUTE / 2
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


class Run:
    """What one strategy did: computation starts and every call's latency."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.latencies: list[float] = []
        self.lock = threading.Lock()

    def computed(self) -> None:
        with self.lock:
            self.starts.append(time.monotonic())

    def row(self, name: str, seconds: float) -> dict[str, Any]:
        groups: list[int] = []
        first = None
        for t in sorted(self.starts):
            if first is None or t - first > 2 * COMPUTE:
                groups.append(0)
                first = t
            groups[-1] += 1
        groups = groups[1:]  # the first fill is no expiry
        lat = sorted(self.latencies)
        waited = sum(1 for x in lat if x >= WAITED)
        return {
            "strategy": name,
            "expiries": len(groups),
            "per_expiry": statistics.mean(groups) if groups else 0.0,
            "max": max(groups) if groups else 0,
            "waited": waited,
            "calls": len(lat),
            "p50": lat[len(lat) // 2] * 1e3,
            "p99": lat[int(len(lat) * 0.99)] * 1e3,
            "max_ms": lat[-1] * 1e3,
            "seconds": seconds,
        }


# -- drivers: 32 threads or 32 tasks calling fn(1) until the deadline ----------------------


def drive_threads(fn: Callable[[int], Any], run: Run, seconds: float) -> None:
    fn(1)  # the first fill, before the clock starts
    deadline = time.monotonic() + seconds
    barrier = threading.Barrier(WORKERS)

    def worker() -> None:
        mine: list[float] = []
        barrier.wait()
        clock = time.perf_counter
        while time.monotonic() < deadline:
            t = clock()
            fn(1)
            mine.append(clock() - t)
        with run.lock:
            run.latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def drive_tasks(fn: Callable[[int], Any], run: Run, seconds: float) -> None:
    await fn(1)
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        clock = time.perf_counter
        while time.monotonic() < deadline:
            t = clock()
            await fn(1)
            run.latencies.append(clock() - t)
            await asyncio.sleep(0)  # a hit that never awaits would starve the other tasks

    await asyncio.gather(*(worker() for _ in range(WORKERS)))


# -- strategies ---------------------------------------------------------------------------


def sync_strategies(kind: str, url: str | None, run: Run) -> dict[str, Callable[[], Callable[[int], Any]]]:
    """Name -> a factory of the function to drive (made fresh for each strategy)."""

    def body(x: int) -> int:
        run.computed()
        time.sleep(COMPUTE)
        return x

    client = redis.Redis.from_url(url) if url else None
    store: Any = (lambda: MemoryStore()) if kind == "memory" else (lambda: RedisStore.from_url(url, prefix=_prefix()))

    def ours(**options: Any) -> Callable[[int], Any]:
        return cache_aside(ttl=TTL, store=store(), version=_prefix(), **options)(body)  # type: ignore[no-any-return]

    def plain(ttl: float) -> Callable[[int], Any]:
        if client is None:
            cache: cachetools.TTLCache[int, int] = cachetools.TTLCache(10, ttl)
            lock = threading.Lock()

            def f(x: int) -> int:
                with lock:
                    hit = cache.get(x)
                if hit is not None:
                    return hit
                value = body(x)
                with lock:
                    cache[x] = value
                return value

            return f
        name = _prefix()

        def g(x: int) -> int:
            hit = client.get(f"{name}:{x}")
            if hit is not None:
                return int(hit)
            value = body(x)
            client.set(f"{name}:{x}", value, px=int(ttl * 1000))
            return value

        return g

    def dogpile() -> Callable[[int], Any]:
        from dogpile.cache import make_region

        if client is None:
            region = make_region().configure("dogpile.cache.memory", expiration_time=TTL)
        else:
            port = client.connection_pool.connection_kwargs["port"]
            region = make_region().configure("dogpile.cache.redis", expiration_time=TTL,
                                             arguments={"host": "127.0.0.1", "port": port})
        return region.cache_on_arguments(namespace=_prefix())(body)  # type: ignore[no-any-return]

    def cachetools_condition() -> Callable[[int], Any]:
        cond = threading.Condition()
        return cachetools.cached(cachetools.TTLCache(10, TTL), lock=cond, condition=cond)(body)  # type: ignore[no-any-return]

    strategies: dict[str, Callable[[], Callable[[int], Any]]] = {
        "baseline: hits only": lambda: plain(3600),
        "no protection": lambda: plain(TTL),
        "cacheaside single-flight": lambda: ours(),
        "cacheaside early_refresh=1.0": lambda: ours(early_refresh=1.0),
        "cacheaside stale_while_revalidate=1": lambda: ours(stale_while_revalidate=1),
        "dogpile.cache (lock)": dogpile,
    }
    if kind == "memory":
        strategies["cachetools cached(condition)"] = cachetools_condition
    return strategies


def async_strategies(kind: str, url: str | None, run: Run) -> dict[str, Callable[[], Callable[[int], Any]]]:
    async def body(x: int) -> int:
        run.computed()
        await asyncio.sleep(COMPUTE)
        return x

    client = redis.asyncio.Redis.from_url(url) if url else None
    store: Any = (lambda: MemoryStore()) if kind == "memory" else (
        lambda: RedisStore.from_url(url, prefix=_prefix(), asyncio=True))

    def ours(**options: Any) -> Callable[[int], Any]:
        return cache_aside(ttl=TTL, store=store(), version=_prefix(), **options)(body)  # type: ignore[no-any-return]

    def plain(ttl: float) -> Callable[[int], Any]:
        if client is None:
            cache: cachetools.TTLCache[int, int] = cachetools.TTLCache(10, ttl)

            async def f(x: int) -> int:
                hit = cache.get(x)
                if hit is not None:
                    return hit
                value = await body(x)
                cache[x] = value
                return value

            return f
        name = _prefix()

        async def g(x: int) -> int:
            hit = await client.get(f"{name}:{x}")
            if hit is not None:
                return int(hit)
            value = await body(x)
            await client.set(f"{name}:{x}", value, px=int(ttl * 1000))
            return value

        return g

    def cashews(option: str) -> Callable[[int], Any]:
        from cashews import Cache

        cache = Cache()
        cache.setup("mem://" if url is None else url)
        prefix = _prefix()
        if option == "early":
            return cache.early(ttl=TTL, early_ttl=TTL * 0.8, prefix=prefix)(body)  # type: ignore[no-any-return]
        return cache(ttl=TTL, lock=True, prefix=prefix)(body)  # type: ignore[no-any-return]

    def aiocache() -> Callable[[int], Any]:
        from aiocache import Cache, cached_stampede

        if url is None:
            return cached_stampede(lease=2, ttl=TTL, cache=Cache.MEMORY, namespace=_prefix())(body)  # type: ignore[no-any-return]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        return cached_stampede(lease=2, ttl=TTL, cache=Cache.REDIS, endpoint="127.0.0.1", port=port,  # type: ignore[no-any-return]
                               namespace=_prefix())(body)

    return {
        "baseline: hits only": lambda: plain(3600),
        "no protection": lambda: plain(TTL),
        "cacheaside single-flight": lambda: ours(),
        "cacheaside early_refresh=1.0": lambda: ours(early_refresh=1.0),
        "cacheaside stale_while_revalidate=1": lambda: ours(stale_while_revalidate=1),
        "cashews @cache.early": lambda: cashews("early"),
        "cashews @cache(lock=True)": lambda: cashews("lock"),
        "aiocache cached_stampede": aiocache,
    }


_serial = iter(range(1, 1_000_000))


def _prefix() -> str:
    return f"st{os.getpid()}x{next(_serial)}"


# -- the run --------------------------------------------------------------------------------


def measure(kind: str, mode: str, url: str | None, seconds: float) -> list[dict[str, Any]]:
    rows = []
    names = list((sync_strategies if mode == "sync" else async_strategies)(kind, url, Run()))
    for name in names:
        run = Run()
        make = (sync_strategies if mode == "sync" else async_strategies)(kind, url, run)[name]
        try:
            fn = make()
        except ImportError as exc:
            print(f"  {name}: skipped ({exc}; install the bench extra)", flush=True)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if mode == "sync":
                drive_threads(fn, run, seconds)
            else:
                asyncio.run(drive_tasks(fn, run, seconds))
        row = run.row(name, seconds)
        rows.append(row)
        print(f"  {_line(row)}", flush=True)
    return rows


HEADER = ("| strategy | computations per expiry (mean / max) | callers that waited | p50 ms | p99 ms | max ms |\n"
          "|---|---|---|---|---|---|")


def _line(row: dict[str, Any]) -> str:
    return (f"| {row['strategy']} | {row['per_expiry']:.2f} / {row['max']} ({row['expiries']} expiries) | "
            f"{row['waited']} of {row['calls']} | {row['p50']:.3f} | {row['p99']:.3f} | {row['max_ms']:.1f} |")


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("cacheaside", "redis", "cachetools", "dogpile.cache", "cashews", "aiocache"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", choices=["memory", "redis"])
    parser.add_argument("--write", action="store_true", help="replace the Stampede section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    server = None if args.only == "memory" else RedisServer()
    sections = []
    try:
        for kind in ("memory", "redis"):
            if args.only and kind != args.only:
                continue
            url = None if kind == "memory" else server.url.split("?")[0]  # type: ignore[union-attr]
            for mode in ("sync", "async"):
                who = f"{WORKERS} threads" if mode == "sync" else f"{WORKERS} asyncio tasks"
                title = f"### {'MemoryStore' if kind == 'memory' else 'RedisStore'}, {who}"
                print(title, flush=True)
                rows = measure(kind, mode, url, args.seconds)
                sections.append("\n".join([title, "", HEADER, *(_line(r) for r in rows), ""]))
    finally:
        if server is not None:
            server.stop()
    body = "\n".join([
        "## Stampede",
        "",
        f"`python benchmarks/bench_stampede.py --write` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {_versions()}.",
        f"One hot key, a {COMPUTE * 1000:.0f} ms computation, a {TTL:.0f} s TTL, read continuously for "
        f"{args.seconds:.0f} s. \"Waited\": calls of {WAITED * 1000:.0f} ms or more.",
        "",
        *sections,
    ])
    print(body)
    if args.write:
        _write_section(body)


def _write_section(body: str) -> None:
    text = "# Benchmark results\n"
    if os.path.exists(RESULTS):
        with open(RESULTS) as existing:
            text = existing.read()
    start = text.find("## Stampede")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + text[end + 1:] if end >= 0 else text[:start]
    with open(RESULTS, "w") as out:
        out.write(text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
