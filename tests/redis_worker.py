"""A process that shares a Redis with the test: ``python -m tests.redis_worker URL PREFIX [cluster] [invalidate]``.

It waits at a gate (a Redis list the test pushes to once every worker is ready),
calls ``compute(1)`` once and prints the value and its call site's stats as JSON.
``compute`` counts its runs in Redis, so the test counts them from outside.
``cluster``: the URL is a node of a Redis Cluster. ``invalidate``: instead of computing,
print "ready" once its store is made, wait for a line on stdin, evict ``compute(1)`` (owed
while its shard is down), print "owed", and stay alive until the eviction has been applied
(the background replay) or 20 s have passed. ``stale``: call ``refreshed(1)`` instead (the test
stored a stale entry for it), and print once this process's background refresh has ended.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import redis

from cacheaside import RedisStore, cache_aside, configure

control: Any = None
PREFIX = ""


@cache_aside(ttl=60, key="shared:{x}")
def compute(x: int) -> dict[str, Any]:
    control.incr(f"{PREFIX}:calls")
    time.sleep(0.3)
    return {"x": x, "pid": os.getpid()}


@cache_aside(ttl=10, stale_while_revalidate=60, key="stale:{x}")
def refreshed(x: int) -> str:
    control.incr(f"{PREFIX}:calls")
    time.sleep(0.3)
    return "new"


def main(url: str, prefix: str, *flags: str) -> None:
    global control, PREFIX
    PREFIX = prefix
    cluster = "cluster" in flags
    control = (redis.RedisCluster if cluster else redis.Redis).from_url(url, socket_timeout=2,
                                                                          socket_connect_timeout=2)
    store = RedisStore.from_url(url, prefix=prefix, cluster=cluster)
    configure(store=store)
    if "invalidate" in flags:
        print("ready", flush=True)
        sys.stdin.readline()
        compute.invalidate(1)
        print("owed" if store.guard.of(compute.key(1)).owes else "applied", flush=True)
        deadline = time.monotonic() + 20
        while store.guard.of(compute.key(1)).owes and time.monotonic() < deadline:
            time.sleep(0.05)
        print("applied" if not store.guard.of(compute.key(1)).owes else "still owed", flush=True)
        return
    control.incr(f"{prefix}:ready")
    if control.blpop([f"{prefix}:gate"], 10) is None:
        raise SystemExit("the gate never opened")
    if "stale" in flags:
        from cacheaside import _refreshes

        value: Any = refreshed(1)
        deadline = time.monotonic() + 10
        while _refreshes.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        print(json.dumps({"value": value, "stats": dataclasses.asdict(refreshed.stats())}))
        return
    value = compute(1)
    print(json.dumps({"value": value, "stats": dataclasses.asdict(compute.stats())}))


if __name__ == "__main__":
    main(*sys.argv[1:])
