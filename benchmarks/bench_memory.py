"""Memory-store hit and miss against a plain call, functools.lru_cache and cachetools.cached.

Run: make bench  (or .venv/bin/python benchmarks/bench_memory.py)

Prints per-call medians (of several rounds) and ratios against the baselines,
all measured in the same run, with the machine and versions beside them.
"""

from __future__ import annotations

import functools
import itertools
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import cachetools

import cacheaside
from cacheaside import MemoryStore, cache_aside


def per_call(fn: Callable[[], Any], number: int, rounds: int = 7) -> float:
    """Median over rounds of the mean seconds per call."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def main() -> None:
    n = 100_000

    def source(user_id: int, verbose: bool = False) -> dict[str, Any]:
        return {"id": user_id, "verbose": verbose}

    lru = functools.lru_cache(maxsize=100_000)(source)
    ct = cachetools.cached(cachetools.TTLCache(maxsize=100_000, ttl=60), lock=threading.Lock())(source)
    store = MemoryStore()
    ca = cache_aside(ttl=60, store=store)(source)
    ca_kw = ca

    for f in (lru, ct, ca):
        f(1)
    hits = {
        "plain call": per_call(lambda: source(1), n),
        "functools.lru_cache hit": per_call(lambda: lru(1), n),
        "cachetools.cached(TTLCache, lock) hit": per_call(lambda: ct(1), n),
        "cacheaside MemoryStore hit": per_call(lambda: ca(1), n),
        "cacheaside MemoryStore hit (keywords)": per_call(lambda: ca_kw(user_id=1, verbose=False), n),
    }

    exporters = exporter_cost(lambda: ca(1), n)

    counter = itertools.count(10**6)
    miss_n = 20_000
    misses = {
        "cachetools.cached(TTLCache, lock) miss": per_call(lambda: ct(next(counter)), miss_n, rounds=5),
        "cacheaside MemoryStore miss": per_call(lambda: ca(next(counter)), miss_n, rounds=5),
    }

    print(f"cacheaside {cacheaside.__version__}, cachetools {cachetools.__version__}, "
          f"Python {platform.python_version()} ({sys.implementation.name}), {platform.machine()}, "
          f"{platform.processor() or platform.platform()}")
    print(f"{'case':44} {'median/call':>12}")
    for name, t in {**hits, **misses}.items():
        print(f"{name:44} {t * 1e6:9.3f} us")
    hit = hits["cacheaside MemoryStore hit"]
    print()
    print(f"hit / plain call:              {hit / hits['plain call']:6.2f}x")
    print(f"hit / lru_cache hit:           {hit / hits['functools.lru_cache hit']:6.2f}x")
    print(f"hit / cachetools hit:          {hit / hits['cachetools.cached(TTLCache, lock) hit']:6.2f}x")
    print(f"miss / cachetools miss:        "
          f"{misses['cacheaside MemoryStore miss'] / misses['cachetools.cached(TTLCache, lock) miss']:6.2f}x")
    if exporters is not None:
        print(f"hit with the Prometheus collector and OpenTelemetry instruments on / off: {exporters:6.2f}x "
              "(median of 7 interleaved rounds)")


def exporter_cost(hit: Callable[[], Any], n: int) -> float | None:
    """The hit's cost with both metrics exporters on, over the same hit with none, per interleaved round."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from prometheus_client import CollectorRegistry

        from cacheaside.metrics import instrument_opentelemetry, register_prometheus
    except ImportError:
        return None
    ratios = []
    for _ in range(7):
        off = per_call(hit, n, rounds=1)
        registry = CollectorRegistry()
        collector = register_prometheus(registry)
        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        otel = instrument_opentelemetry(provider.get_meter("bench"))
        on = per_call(hit, n, rounds=1)
        otel.close()
        provider.shutdown()
        registry.unregister(collector)
        ratios.append(on / off)
    return statistics.median(ratios)


if __name__ == "__main__":
    main()
