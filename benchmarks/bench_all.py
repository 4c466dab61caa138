"""Every per-call scenario side by side with the peers: writes benchmarks/RESULTS.md and PNG charts.

    python benchmarks/bench_all.py [--quick]      (or: make bench-all [ARGS=--quick])

Each scenario measures its candidates in interleaved rounds (the order alternates, ABBA), each
round a tight loop of calls timed with ``perf_counter``; a candidate's figure is its median per-call
time over the rounds, its spread the lowest and highest round, and its ratio the median of its
per-round ratios to the scenario's baseline (so machine noise hits both alike). ``--quick`` takes
fewer calls and rounds and leaves the 1e6-entry case out (under a minute).

The peers come from the ``bench`` extra (``pip install -e '.[bench]'``): cachetools, cachebox,
dogpile.cache, Flask-Caching, theine, cashews, aiocache; a missing one is left out and said so. The Redis
scenarios start their own redis-server on a free port. Charts go to ``benchmarks/charts/`` (one per
scenario: each candidate's ratio to the baseline); the README shows the memory-hit one. Last, the
consistency benchmark runs with the peers (``bench_consistency.py --peers``): stale reads per 10k reads
and throughput, cacheaside against a plain cache-aside, dogpile.cache, cashews and aiocache.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import os
import platform
import random
import statistics
import sys
import threading
import time
import tracemalloc
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cachetools
import msgpack
import redis
import redis.asyncio

from cacheaside import MemoryStore, RedisStore, cache_aside, invalidates

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")
CHARTS = os.path.join(HERE, "charts")
VALUE = ("user", 1, "user1@example.com", ("admin", "dev"), 12.5)  # immutable: no peer copies it

Samples = dict[str, list[float]]


class Scenario:
    """One scenario's figures: per candidate, seconds per call in each round."""

    def __init__(self, title: str, baseline: str, samples: Samples, note: str = "", unit: str = "us") -> None:
        self.title, self.baseline, self.samples, self.note, self.unit = title, baseline, samples, note, unit

    def rows(self) -> list[tuple[str, float, float, float, float]]:
        """(candidate, median, lowest, highest, ratio to the baseline)."""
        base = self.samples[self.baseline]
        out = []
        for name, s in self.samples.items():
            ratio = statistics.median(a / b for a, b in zip(s, base, strict=True))
            out.append((name, statistics.median(s), min(s), max(s), ratio))
        return out


def interleaved(candidates: dict[str, Callable[[], Any]], number: int, rounds: int) -> Samples:
    samples: Samples = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn = candidates[name]
            for _ in range(min(number, 1000)):  # warm-up
                fn()
            gc.disable()
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
            gc.enable()
    return samples


async def ainterleaved(candidates: dict[str, Callable[[], Awaitable[Any]]], number: int, rounds: int) -> Samples:
    samples: Samples = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn = candidates[name]
            for _ in range(min(number, 1000)):
                await fn()
            gc.disable()
            start = time.perf_counter()
            for _ in range(number):
                await fn()
            samples[name].append((time.perf_counter() - start) / number)
            gc.enable()
    return samples


def _optional(make: Callable[[], Any], name: str, missing: list[str]) -> Any:
    try:
        return make()
    except ImportError:
        missing.append(name)
        return None


# -- memory scenarios ------------------------------------------------------------------------------


def _peers(source: Callable[..., Any], missing: list[str]) -> dict[str, Callable[..., Any]]:
    """``source`` cached by each library that caches a sync function in memory."""
    peers: dict[str, Callable[..., Any]] = {
        "functools.lru_cache": functools.lru_cache(maxsize=100_000)(source),
        "cachetools.cached(TTLCache, RLock)": cachetools.cached(cachetools.TTLCache(100_000, 600),
                                                                lock=threading.RLock())(source),
    }

    def cachebox_peer() -> Any:
        import cachebox

        return cachebox.cached(cachebox.TTLCache(100_000, 600))(source)

    def dogpile_peer() -> Any:
        from dogpile.cache import make_region

        region = make_region().configure("dogpile.cache.memory", expiration_time=600)
        return region.cache_on_arguments()(source)

    def flask_peer() -> Any:
        from flask import Flask
        from flask_caching import Cache

        app = Flask("bench")
        cache = Cache(app, config={"CACHE_TYPE": "SimpleCache", "CACHE_THRESHOLD": 100_000})
        app.app_context().push()
        return cache.memoize(600)(source)

    def theine_peer() -> Any:
        from datetime import timedelta

        from theine import Memoize

        memoized = Memoize(100_000, timedelta(seconds=600))(source)

        @memoized.key
        def _key(a: int, b: str = "x") -> str:  # theine asks for a key function
            return f"{a}:{b}"

        return memoized

    for name, make in (("cachebox.cached(TTLCache)", cachebox_peer), ("dogpile.cache memory", dogpile_peer),
                       ("Flask-Caching SimpleCache", flask_peer), ("theine Memoize", theine_peer)):
        made = _optional(make, name, missing)
        if made is not None:
            peers[name] = made
    peers["cacheaside MemoryStore"] = cache_aside(ttl=600, store=MemoryStore())(source)
    return peers


def memory_hits(number: int, rounds: int, missing: list[str]) -> list[Scenario]:
    def source(a: int, b: str = "x") -> tuple[Any, ...]:
        return VALUE

    peers = _peers(source, missing)
    for f in peers.values():
        f(1)
        f(1, b="x")
    positional = {"plain call": lambda: source(1)}
    positional.update({name: (lambda f=f: f(1)) for name, f in peers.items()})
    keyword = {"plain call": lambda: source(a=1, b="x")}
    keyword.update({name: (lambda f=f: f(a=1, b="x")) for name, f in peers.items()
                    if not name.startswith("dogpile")})  # dogpile's keys take no keyword arguments

    class Repo:
        def plain(self, a: int, b: str = "x") -> tuple[Any, ...]:
            return VALUE

        lru = functools.lru_cache(maxsize=100_000)(plain)
        ct = cachetools.cached(cachetools.TTLCache(100_000, 600), lock=threading.RLock())(plain)
        ours = cache_aside(ttl=600, store=MemoryStore())(plain)

    repo = Repo()
    method = {"plain call": lambda: repo.plain(1), "functools.lru_cache": lambda: repo.lru(1),
              "cachetools.cached(TTLCache, RLock)": lambda: repo.ct(1), "cacheaside MemoryStore": lambda: repo.ours(1)}
    return [
        Scenario("Memory hit, f(1) positional", "plain call", interleaved(positional, number, rounds)),
        Scenario("Memory hit, f(a=1, b=\"x\") by keyword", "plain call", interleaved(keyword, number, rounds)),
        Scenario("Memory hit, as a method", "plain call", interleaved(method, number, rounds)),
    ]


def memory_miss(number: int, rounds: int, missing: list[str]) -> Scenario:
    def source(a: int, b: str = "x") -> tuple[Any, ...]:
        return VALUE

    peers = _peers(source, missing)
    counters = {name: itertools.count(10**9 * i) for i, name in enumerate(peers, 1)}
    plain = itertools.count()
    candidates = {"plain call": lambda: source(next(plain))}
    candidates.update({name: (lambda f=f, c=counters[name]: f(next(c))) for name, f in peers.items()})
    return Scenario("Memory miss (new arguments each call)", "cachetools.cached(TTLCache, RLock)",
                    interleaved(candidates, number, rounds))


def memory_sizes(number: int, rounds: int, sizes: list[int]) -> Scenario:
    candidates: dict[str, Callable[[], Any]] = {}
    keep = []
    for size in sizes:
        f = cache_aside(ttl=3600, store=MemoryStore(maxsize=None), version=size)(lambda a: VALUE)
        for i in range(size):
            f(i)
        picks = [random.randrange(size) for _ in range(number)]
        cycle = itertools.cycle(picks)
        candidates[f"hot key, {size:.0e} entries"] = lambda f=f: f(1)
        candidates[f"random key, {size:.0e} entries"] = lambda f=f, c=cycle: f(next(c))
        keep.append(f)
    return Scenario("cacheaside memory hit by number of entries", f"hot key, {sizes[0]:.0e} entries",
                    interleaved(candidates, number, rounds))


def memory_per_entry(count: int) -> list[tuple[str, float, float]]:
    """Bytes per cached entry (tracemalloc), each library caching ``count`` calls of an int argument."""

    def source(a: int) -> tuple[Any, ...]:
        return VALUE

    rows = []
    for name, make in (
        ("cachetools.cached(TTLCache, RLock)",
         lambda: cachetools.cached(cachetools.TTLCache(count + 1, 600), lock=threading.RLock())(source)),
        ("functools.lru_cache", lambda: functools.lru_cache(maxsize=count + 1)(source)),
        ("cacheaside MemoryStore", lambda: cache_aside(ttl=600, store=MemoryStore(maxsize=count + 1),
                                                       version=f"m{count}")(source)),
    ):
        f = make()
        f(0)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, count + 1):
            f(i)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        rows.append((name, used / count, 0.0))
        del f
    base = rows[0][1]
    return [(name, per, per / base) for name, per, _ in rows]


# -- async and Redis -----------------------------------------------------------------------------


def async_memory_hit(number: int, rounds: int, missing: list[str]) -> Scenario:
    async def source(a: int, b: str = "x") -> tuple[Any, ...]:
        return VALUE

    def sync_source(a: int, b: str = "x") -> tuple[Any, ...]:
        return VALUE

    ours = cache_aside(ttl=600, store=MemoryStore())(source)
    ours_sync = cache_aside(ttl=600, store=MemoryStore())(sync_source)

    async def sync_hit() -> Any:
        return ours_sync(1)

    candidates: dict[str, Callable[[], Awaitable[Any]]] = {
        "plain await": lambda: source(1),
        "cacheaside MemoryStore, sync hit (from a coroutine)": sync_hit,
        "cacheaside MemoryStore": lambda: ours(1),
    }

    def cashews_peer() -> Any:
        from cashews import Cache

        cache = Cache()
        cache.setup("mem://")
        return cache(ttl=600)(source)

    def aiocache_peer() -> Any:
        from aiocache import Cache, cached

        return cached(ttl=600, cache=Cache.MEMORY)(source)

    for name, make in (("cashews mem://", cashews_peer), ("aiocache SimpleMemoryCache", aiocache_peer)):
        made = _optional(make, name, missing)
        if made is not None:
            candidates[name] = lambda f=made: f(1)

    async def run() -> Samples:
        for fn in candidates.values():
            await fn()
        return await ainterleaved(candidates, number, rounds)

    return Scenario("Async memory hit", "cacheaside MemoryStore, sync hit (from a coroutine)", asyncio.run(run()))


def _redis_sync(url: str, built: str, number: int, rounds: int) -> list[Scenario]:
    payload = msgpack.packb(VALUE)
    client = redis.Redis.from_url(url) if built == "user-built client" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a user-built client's redis-py defaults: the store warns
        store = RedisStore(client, prefix=f"b{built[0]}") if client else RedisStore.from_url(url, prefix="bf")
    client = store.client
    client.set("bench:hit", payload)

    @cache_aside(ttl=600, store=store, version=built)
    def get(a: int) -> tuple[Any, ...]:
        return VALUE

    get(1)
    miss = itertools.count()
    raw = itertools.count()

    def bare_miss() -> Any:
        k = f"bench:miss:{built}:{next(raw)}"
        if client.get(k) is None:
            client.set(k, payload, ex=600)

    hit = interleaved({"bare GET + unpackb": lambda: msgpack.unpackb(client.get("bench:hit")),
                       "cacheaside": lambda: get(1)}, number, rounds)
    missed = interleaved({"bare GET + SET EX": bare_miss, "cacheaside": lambda: get(10**9 + next(miss))},
                         max(1, number // 4), rounds)
    return [Scenario(f"Redis hit, sync, {built}", "bare GET + unpackb", hit),
            Scenario(f"Redis miss + store, sync, {built}", "bare GET + SET EX", missed)]


def redis_scenarios(url: str, number: int, rounds: int) -> list[Scenario]:
    out = []
    payload = msgpack.packb(VALUE)
    for built in ("user-built client", "from_url"):
        out += _redis_sync(url, built, number, rounds)

    async def arun(built: str) -> tuple[Samples, Samples]:
        client = redis.asyncio.Redis.from_url(url) if built == "user-built client" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store = (RedisStore(client, prefix=f"ab{built[0]}") if client
                     else RedisStore.from_url(url, prefix="abf", asyncio=True))
        client = store.client
        await client.set("bench:ahit", payload)

        @cache_aside(ttl=600, store=store, version=f"a{built}")
        async def get(a: int) -> tuple[Any, ...]:
            return VALUE

        await get(1)
        miss = itertools.count()
        raw = itertools.count()

        async def bare_hit() -> Any:
            return msgpack.unpackb(await client.get("bench:ahit"))

        async def bare_miss() -> Any:
            k = f"bench:amiss:{built}:{next(raw)}"
            if await client.get(k) is None:
                await client.set(k, payload, ex=600)

        hit = await ainterleaved({"bare GET + unpackb": bare_hit, "cacheaside": lambda: get(1)}, number, rounds)
        missed = await ainterleaved({"bare GET + SET EX": bare_miss, "cacheaside": lambda: get(10**9 + next(miss))},
                                    max(1, number // 4), rounds)
        await client.aclose()
        return hit, missed

    for built in ("user-built client", "from_url"):
        hit, missed = asyncio.run(arun(built))
        out.append(Scenario(f"Redis hit, asyncio, {built}", "bare GET + unpackb", hit))
        out.append(Scenario(f"Redis miss + store, asyncio, {built}", "bare GET + SET EX", missed))
    return out


def invalidation(url: str, number: int, rounds: int) -> tuple[Scenario, dict[str, int]]:
    """A write with ``@invalidates`` over 3 targets and 2 tags, against the bare write."""
    store = RedisStore.from_url(url, prefix="binv")
    readers = [cache_aside(ttl=600, store=store, key=f"r{i}:{{user_id}}", tags=["user:{user_id}", "all"],
                           version=i)(lambda user_id: VALUE) for i in range(3)]

    def write(user_id: int) -> None:
        return None

    writer = invalidates(*readers, tags=["user:{user_id}", "all"])(write)
    for r in readers:
        r(1)
    writer(1)  # loads the store's scripts (the first EVALSHA of each is refused, loaded and sent again)
    for r in readers:
        r(1)
    counter = redis.Redis.from_url(url)
    before = counter.info("commandstats")
    writer(1)
    after = counter.info("commandstats")
    sent = {k: v["calls"] - before.get(k, {}).get("calls", 0) for k, v in after.items()}
    keys = [r.key(1) for r in readers]
    client = store.client
    samples = interleaved({"bare DEL of the 3 keys": lambda: client.delete(*keys),
                           "with @invalidates": lambda: writer(1)}, max(1, number // 10), rounds)
    counter.close()
    return (Scenario("Write with @invalidates (3 targets, 2 tags), Redis", "bare DEL of the 3 keys", samples),
            {"scripts": sent.get("cmdstat_evalsha", 0), "inside": sum(sent.values()) - sent.get("cmdstat_evalsha", 0)
             - sent.get("cmdstat_info", 0)})


# -- consistency -------------------------------------------------------------------------------------

#: What each consistency variant is, for the table.
VARIANT_NAMES = {
    "plain-sync": "plain redis-py get/compute/set, DEL after a write (sync)",
    "cacheaside-sync": "cacheaside `@cache_aside` + `@invalidates` (sync)",
    "dogpile-sync": "dogpile.cache `cache_on_arguments`, `.invalidate()` after a write (sync)",
    "plain-async": "plain redis-py get/compute/set, DEL after a write (async)",
    "cacheaside-async": "cacheaside `@cache_aside` + `@invalidates` (async)",
    "cashews-async": "cashews `@cache`, `cache.delete()` after a write (async)",
    "aiocache-async": "aiocache `@cached`, `cache.delete()` after a write (async)",
}


def consistency(quick: bool) -> list[str]:
    """The consistency benchmark with the peers (``bench_consistency.py --peers``), as a table and a chart."""
    import json
    import subprocess
    import tempfile

    seconds, rounds = ("1", "1") if quick else ("4", "3")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "consistency.json")
        subprocess.run([sys.executable, os.path.join(HERE, "bench_consistency.py"), "--peers", "--seconds", seconds,
                        "--rounds", rounds, "--json", out], check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            report = json.load(f)
    variants = report["variants"]
    lines = ["### Consistency under concurrency: stale reads and throughput", ""]
    picture = stale_chart(variants)
    if picture is not None:
        lines += [f"![stale reads per 10k]({picture})", ""]
    lines += [
        f"`benchmarks/bench_consistency.py --peers`: {report['procs']} processes on one Redis and one SQLite file, "
        f"{report['seconds']:g} s per variant and round, {report['rounds']} round(s); 90% reads, 10% writes of 20 "
        "Zipf-skewed rows, 0-5 ms per computation. A read is stale if it started after a write to its row had "
        "returned and it gave an older version. Throughput is the median per-round ratio to the plain variant "
        "of the same kind (sync or async).", "",
        "| variant | reads | stale reads | per 10k reads | throughput (ops/s) | ratio to plain |",
        "|---|---|---|---|---|---|"]
    for name, r in variants.items():
        per10k = r["stale"] / max(1, r["reads"]) * 10_000
        lines.append(f"| {VARIANT_NAMES.get(name, name)} | {r['reads']:,} | {r['stale']:,} | {per10k:.1f} | "
                     f"{r['throughput']:,.0f} | {r['ratio']:.2f}x |")
    return [*lines, ""]


def stale_chart(variants: dict[str, Any]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(variants)
    per10k = [variants[n]["stale"] / max(1, variants[n]["reads"]) * 10_000 for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    colors = ["#d62728" if n.startswith("cacheaside") else "#9f9f9f" for n in names]
    ax.barh(names[::-1], per10k[::-1], color=colors[::-1])
    for i, (n, v) in enumerate(zip(names[::-1], per10k[::-1], strict=True)):
        ax.text(v, i, f" {v:.1f}  ({variants[n]['ratio']:.2f}x plain's throughput)", va="center", fontsize=8)
    ax.set_xlim(right=max(max(per10k), 1.0) * 1.6)
    ax.set_xlabel("stale reads per 10,000 reads (4 processes, 10% writes); lower is better")
    ax.set_title("Stale reads under concurrent writes, one Redis", fontsize=10)
    fig.tight_layout()
    os.makedirs(CHARTS, exist_ok=True)
    path = os.path.join(CHARTS, "consistency-stale-reads.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.path.relpath(path, HERE)


# -- output ------------------------------------------------------------------------------------------


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-").replace("--", "-")


def chart(scenario: Scenario) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = scenario.rows()
    names = [r[0] for r in rows]
    times = [r[1] * 1e6 for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    colors = ["#d62728" if n.startswith("cacheaside") else "#1f77b4" if n == scenario.baseline else "#9f9f9f"
              for n in names]
    ax.barh(names[::-1], times[::-1], color=colors[::-1])
    ax.set_xscale("log")
    for i, (t, r) in enumerate(zip(times[::-1], [r[4] for r in rows][::-1], strict=True)):
        ax.text(t, i, f" {t:.3g} us ({r:.2f}x)", va="center", fontsize=8)
    ax.set_xlim(right=max(times) * 8)
    ax.set_xlabel(f"median time per call, log scale (ratio to {scenario.baseline}); lower is faster")
    ax.set_title(scenario.title, fontsize=10)
    fig.tight_layout()
    os.makedirs(CHARTS, exist_ok=True)
    path = os.path.join(CHARTS, _slug(scenario.title) + ".png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.path.relpath(path, HERE)


def table(scenario: Scenario) -> list[str]:
    lines = [f"### {scenario.title}", ""]
    picture = chart(scenario)
    if picture is not None:
        lines += [f"![{scenario.title}]({picture})", ""]
    lines += ["| candidate | median per call | spread (rounds) | ratio |", "|---|---|---|---|"]
    for name, median, low, high, ratio in scenario.rows():
        mark = " (baseline)" if name == scenario.baseline else ""
        lines.append(f"| {name}{mark} | {median * 1e6:.3f} us | {low * 1e6:.3f}-{high * 1e6:.3f} us | {ratio:.2f}x |")
    if scenario.note:
        lines += ["", scenario.note]
    return [*lines, ""]


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("cacheaside", "redis", "msgpack", "wrapt", "cachetools", "cachebox", "dogpile.cache",
                 "Flask-Caching", "theine", "cashews", "aiocache", "matplotlib"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def write_section(heading: str, body: str) -> None:
    """Replace (or add) the ``## heading`` section of RESULTS.md, keeping the others."""
    text = "# Benchmark results\n"
    if os.path.exists(RESULTS):
        with open(RESULTS) as existing:
            text = existing.read()
    start = text.find(f"## {heading}")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + (text[end + 1:] if end >= 0 else "")
    head, _, rest = text.partition("\n## ")
    rest = ("## " + rest) if rest else ""
    with open(RESULTS, "w") as out:
        out.write(head.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n" + ("\n" + rest if rest else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds, no 1e6 entries (under a minute)")
    args = parser.parse_args()
    number, rounds = (20_000, 5) if args.quick else (100_000, 9)
    sizes = [1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000]
    missing: list[str] = []
    started = time.monotonic()

    def progress(what: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {what}", file=sys.stderr, flush=True)

    scenarios = memory_hits(number, rounds, missing)
    progress("memory hits")
    # Fewer unique arguments than every peer's bound (100,000 entries): no peer pays its eviction
    # (Flask-Caching's SimpleCache prunes by scanning all its entries on every set past its threshold).
    scenarios.append(memory_miss(min(number // 2, 90_000 // (rounds + 1)), rounds, missing))
    progress("memory miss")
    scenarios.append(memory_sizes(number, rounds, sizes))
    progress("entries")
    scenarios.append(async_memory_hit(number, rounds, missing))
    progress("async memory hit")
    per_entry = memory_per_entry(20_000 if args.quick else 100_000)
    progress("memory per entry")
    from tests.redis_server import RedisServer

    server = RedisServer()
    try:
        url = server.url.split("?")[0]
        scenarios += redis_scenarios(url, number // 10, rounds)
        progress("redis")
        write_scenario, write_cost = invalidation(url, number // 10, rounds)
        scenarios.append(write_scenario)
    finally:
        server.stop()
    consistency_lines = consistency(args.quick)
    progress("consistency")
    lines = [
        "## Per-call costs, side by side with the peers",
        "",
        f"`python benchmarks/bench_all.py{' --quick' if args.quick else ''}` on {platform.machine()}, "
        f"{os.cpu_count()} cores (a shared machine), Python {platform.python_version()}, in "
        f"{time.monotonic() - started:.0f} s; {_versions()}.",
        f"Each scenario: {rounds} interleaved rounds of {number:,} calls (Redis: a tenth; misses: fewer); the ratio is "
        "the median of per-round ratios to the scenario's baseline.",
    ]
    if missing:
        lines.append(f"Left out (not installed): {', '.join(sorted(set(missing)))}.")
    lines.append("")
    for scenario in scenarios:
        lines += table(scenario)
    lines += ["### Memory per cached entry (tracemalloc)", "",
              "| library | bytes per entry | ratio to cachetools |", "|---|---|---|"]
    lines += [f"| {name} | {per:.0f} | {ratio:.2f}x |" for name, per, ratio in per_entry]
    lines += ["", f"One write with `@invalidates`, after a warm-up, sent {write_cost['scripts']} `EVALSHA`, "
              f"which ran {write_cost['inside']} commands on the server (INFO commandstats).", ""]
    lines += consistency_lines
    body = "\n".join(lines)
    print(body)
    write_section("Per-call costs, side by side with the peers", body)


if __name__ == "__main__":
    main()
