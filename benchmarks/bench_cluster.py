"""RedisStore on Redis Cluster: a hit against a bare ``RedisCluster.get`` + ``msgpack.unpackb`` of the
same payload, and an eviction by tag of 100 entries on 3 shards against 100 single deletes.

Run: make bench-cluster  (or .venv/bin/python benchmarks/bench_cluster.py)

It starts its own cluster (3 primaries, 3 replicas, on free ports). Baseline and cacheaside share one
client (``RedisStore.from_url(url, cluster=True)``'s) and run in alternating rounds (ABBA); the ratio
is the median of per-round ratios. Round trips are counted from the primaries' ``INFO commandstats``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Any

import msgpack
import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_redis import VALUE, per_call
from cacheaside import RedisStore, cache_aside, invalidate_tags
from tests.redis_server import RedisCluster


def commands(cluster: RedisCluster) -> int:
    total = 0
    for node in cluster.primaries():
        c = redis.Redis(port=node.port)
        for name, stat in c.info("commandstats").items():
            if name.startswith("cmdstat_") and name not in ("cmdstat_info", "cmdstat_cluster|info",
                                                             "cmdstat_cluster|slots", "cmdstat_command"):
                total += int(stat["calls"])
        c.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--number", type=int, default=500)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cluster = RedisCluster(3, 1)
    try:
        store = RedisStore.from_url(cluster.url, cluster=True, prefix="bench")
        client = store.client

        @cache_aside(ttl=600, store=store)
        def get_user(user_id: int) -> dict[str, Any]:
            return VALUE

        get_user(1)
        raw_key = "bench-raw"
        client.set(raw_key, msgpack.packb(VALUE))

        def bare() -> Any:
            return msgpack.unpackb(client.get(raw_key))

        def cached() -> Any:
            return get_user(1)

        samples: dict[str, list[float]] = {"bare": [], "cached": []}
        for r in range(args.rounds):
            order = [("bare", bare), ("cached", cached)]
            if r % 2:
                order.reverse()
            for name, fn in order:
                samples[name].append(per_call(fn, args.number))
        ratios = [c / b for b, c in zip(samples["bare"], samples["cached"], strict=True)]
        print(f"machine: {platform.machine()}, Python {platform.python_version()}, redis-py {redis.__version__}")
        print(f"cluster hit: bare GET+unpack {statistics.median(samples['bare']) * 1e6:.1f} us, "
              f"cacheaside {statistics.median(samples['cached']) * 1e6:.1f} us, "
              f"ratio {statistics.median(ratios):.3f}x (median of {args.rounds} ABBA rounds)")

        # An eviction by tag over 100 entries on 3 shards, against 100 single deletes.
        @cache_aside(ttl=600, store=store, key="item:{i}", tags=["group"])
        def item(i: int) -> int:
            return i

        times: dict[str, list[float]] = {"tag": [], "single": []}
        trips: dict[str, list[int]] = {"tag": [], "single": []}
        for _ in range(10):
            for i in range(100):
                item(i)
            assert len({store.locate(item.key(i))[1] for i in range(100)}) == 3
            before = commands(cluster)
            start = time.perf_counter()
            invalidate_tags("group", store=store)
            times["tag"].append(time.perf_counter() - start)
            trips["tag"].append(commands(cluster) - before)
            for i in range(100):
                item(i)
            before = commands(cluster)
            start = time.perf_counter()
            for i in range(100):
                client.delete(item.key(i))
            times["single"].append(time.perf_counter() - start)
            trips["single"].append(commands(cluster) - before)
        print(f"eviction by tag of 100 entries on 3 shards: {statistics.median(times['tag']) * 1e3:.2f} ms, "
              f"{statistics.median(trips['tag'])} server commands, scripts' inner calls included "
              "(round trips: 1 ZRANGE + 1 script per node = 4); "
              f"100 single DELs: {statistics.median(times['single']) * 1e3:.2f} ms, "
              f"{statistics.median(trips['single'])} commands")
        store.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
