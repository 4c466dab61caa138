"""The demo: a slow in-memory "database", cached reads, invalidating writes, and what happened."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from typing import Any

from . import MemoryStore, RedisStore, cache_aside, configure, invalidates
from .stores.base import StoreInfo

QUERY_SECONDS = 0.020


class SlowDatabase:
    """A dict of users behind a ~20 ms query, like a remote database."""

    def __init__(self, users: int) -> None:
        self.rows = {uid: {"id": uid, "name": f"user{uid}", "visits": 0} for uid in range(users)}
        self.queries = 0
        self._lock = threading.Lock()

    def select(self, uid: int) -> dict[str, Any]:
        time.sleep(QUERY_SECONDS)
        with self._lock:
            self.queries += 1
            return dict(self.rows[uid])

    def update(self, uid: int, **changes: Any) -> None:
        time.sleep(QUERY_SECONDS)
        with self._lock:
            self.queries += 1
            self.rows[uid].update(changes)


def build(db: SlowDatabase, store: StoreInfo) -> tuple[Any, Any, Any]:
    @cache_aside(ttl=60, store=store, tags=["user:{uid}"])
    def get_user(uid: int) -> dict[str, Any]:
        return db.select(uid)

    @cache_aside(ttl=60, store=store, key="greeting:{uid}", tags=["user:{uid}"])
    def greeting(uid: int) -> str:
        return f"Hello, {db.select(uid)['name']}!"

    @invalidates(get_user, greeting)
    def rename(uid: int, name: str) -> None:
        db.update(uid, name=name)

    return get_user, greeting, rename


def workload(ops: int, users: int, seed: int) -> list[tuple[str, int]]:
    """Mostly reads over a skewed (Zipf-like) key set, some writes."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** 1.1 for rank in range(users)]
    uids = rng.choices(range(users), weights=weights, k=ops)
    return [("write" if rng.random() < 0.05 else rng.choice(["user", "greeting"]), uid) for uid in uids]


def _progress(done: int, total: int, started: float) -> None:
    """A counter once the run passes ~2 s: in place on a terminal, a line per 100 operations elsewhere."""
    if time.monotonic() - started < 2:
        return
    if sys.stdout.isatty():
        sys.stdout.write(f"\r  {done}/{total} operations")
        sys.stdout.flush()
    elif done % 100 == 0:
        print(f"  ... {done}/{total} operations", flush=True)


def run(store_url: str | None = None, ops: int = 400, users: int = 50, seed: int = 7, cluster: bool = False) -> int:
    """Run the demo; returns a process exit code."""
    store: Any
    if store_url is None:
        store = MemoryStore()
    else:
        import redis

        # A prefix of this run's own, so entries left by an earlier run don't turn misses into hits.
        try:
            store = RedisStore.from_url(store_url, prefix=f"cacheaside-demo-{os.getpid()}-{int(time.time())}",
                                        cluster=cluster)
            store.client.ping()
        except redis.RedisError as exc:
            what = "Redis Cluster" if cluster else "Redis server"
            print(f"--redis: cannot reach the {what} ({type(exc).__name__}); is it running at that URL?")
            return 2
    configure(store=store)
    plan = workload(ops, users, seed)

    print(f"cacheaside demo: {ops} operations on {users} users, a {QUERY_SECONDS * 1000:.0f} ms query each, "
          f"on {type(store).__name__}{' (Redis Cluster)' if cluster else ''}")

    # Without the cache: every read is a query.
    bare = SlowDatabase(users)
    started = time.monotonic()
    reads = [op for op in plan if op[0] != "write"]
    uncached_estimate = len(plan) * QUERY_SECONDS
    for i, (kind, uid) in enumerate(plan[: ops // 8]):
        (bare.update(uid, name=f"n{i}") if kind == "write" else bare.select(uid))
    per_op = (time.monotonic() - started) / max(1, ops // 8)
    uncached_estimate = per_op * len(plan)

    db = SlowDatabase(users)
    get_user, greeting, rename = build(db, store)
    started = time.monotonic()
    writes = 0
    for i, (kind, uid) in enumerate(plan):
        if kind == "write":
            rename(uid, f"renamed{i}")
            writes += 1
        elif kind == "user":
            get_user(uid)
        else:
            greeting(uid)
        if i % 20 == 0:
            _progress(i, len(plan), started)
    cached_seconds = time.monotonic() - started
    if sys.stdout.isatty() and cached_seconds > 2:
        sys.stdout.write("\r" + " " * 40 + "\r")

    stats = [get_user.stats(), greeting.stats()]
    hits = sum(s.hits for s in stats)
    misses = sum(s.misses for s in stats)
    print(f"  calls:      {len(reads)} reads, {writes} writes")
    print(f"  hits:       {hits} ({hits / max(1, hits + misses):.0%} of reads)")
    print(f"  misses:     {misses} (each one query)")
    print(f"  evictions:  {writes * 2} (each write evicted get_user and greeting for its user)")
    print(f"  queries:    {db.queries} with the cache, {len(plan)} without")
    print(f"  time:       {cached_seconds:.2f} s with the cache, ~{uncached_estimate:.2f} s without "
          f"({uncached_estimate / max(cached_seconds, 1e-9):.1f}x faster)")

    # Read-after-write: a read right after a write sees the new value.
    uid = plan[0][1]
    before = get_user(uid)["name"]
    rename(uid, "fresh-name")
    after = get_user(uid)["name"]
    greet = greeting(uid)
    ok = after == "fresh-name" and greet == "Hello, fresh-name!"
    print(f"  read-after-write: user {uid} was {before!r}; after rename, get_user -> {after!r}, "
          f"greeting -> {greet!r}: {'fresh, as expected' if ok else 'STALE (bug)'}")
    return 0 if ok else 1
