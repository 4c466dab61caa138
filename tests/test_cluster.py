"""RedisStore on a real local Redis Cluster (3 primaries with a replica each, started by the suite).

The tests that break nodes (SIGKILL, SIGSTOP) start a cluster of their own and are ``slow``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from cacheaside import RedisStore, cache_aside, invalidate_tags, invalidates
from cacheaside.shards import ShardBreakers

from .conftest import LOOP, REDIS_SERVER, REQUIRE_REDIS
from .redis_server import RedisCluster


def _prefix() -> str:
    return f"c{uuid.uuid4().hex[:8]}"


def _store(cluster: RedisCluster, asyncio: bool = False, **options: Any) -> RedisStore:
    options.setdefault("prefix", _prefix())
    return RedisStore.from_url(cluster.url, cluster=True, asyncio=asyncio, **options)


def _close(store: RedisStore) -> None:
    if store.serves_async:
        LOOP.run_until_complete(store.aclose())
    else:
        store.close()


def _gets(cluster: RedisCluster) -> int:
    """GETs served so far by the cluster's primaries."""
    total = 0
    for node in cluster.primaries():
        c = redis.Redis(port=node.port)
        stats = c.info("commandstats")
        c.close()
        total += int(stats.get("cmdstat_get", {}).get("calls", 0))
    return total


# -- every feature, as on one server ---------------------------------------------------


def test_keys_spread_over_every_primary_and_a_hit_is_one_get(redis_cluster: RedisCluster) -> None:
    store = _store(redis_cluster)
    runs: list[int] = []

    @cache_aside(ttl=60, store=store, tags=["item:{i}"])
    def get(i: int) -> dict[str, int]:
        runs.append(i)
        return {"i": i}

    try:
        assert [get(i) for i in range(30)] == [{"i": i} for i in range(30)]
        assert {store.locate(get.key(i))[1] for i in range(30)} == {
            f"127.0.0.1:{n.port}" for n in redis_cluster.primaries()}
        before = _gets(redis_cluster)
        assert [get(i) for i in range(30)] == [{"i": i} for i in range(30)]
        assert _gets(redis_cluster) - before == 30  # one GET per hit, nothing else
        assert len(runs) == 30 and get.stats().hits == 30 and get.stats().errors == 0
    finally:
        _close(store)


def test_tag_and_invalidates_evictions_reach_every_shard(redis_cluster: RedisCluster) -> None:
    store = _store(redis_cluster)
    version = {"v": 1}

    @cache_aside(ttl=60, store=store, key="item:{i}", tags=["all", "item:{i}"])
    def item(i: int) -> tuple[int, int]:
        return (i, version["v"])

    @cache_aside(ttl=60, store=store, key="other:{i}")
    def other(i: int) -> tuple[str, int]:
        return ("o", version["v"])

    @invalidates(item, other)
    def write(i: int) -> None:
        version["v"] += 1

    try:
        assert [item(i) for i in range(20)] == [(i, 1) for i in range(20)]
        assert len({store.locate(item.key(i))[1] for i in range(20)}) == 3
        version["v"] = 2
        invalidate_tags("all", store=store)
        assert [item(i) for i in range(20)] == [(i, 2) for i in range(20)]  # every shard's entries went
        i = next(i for i in range(100) if store.locate(item.key(i))[1] != store.locate(other.key(i))[1])
        assert other(i) == ("o", 2)
        write(i)  # two targets on two shards
        assert item(i) == (i, 3) and other(i) == ("o", 3)
        assert item.stats().errors == 0 and other.stats().errors == 0
    finally:
        _close(store)


@pytest.mark.parametrize("use_async", [False, True])
def test_tag_sets_on_a_cluster_are_indexed_and_swept(redis_cluster: RedisCluster, use_async: bool) -> None:
    """A cluster indexes its tag sets with INDEX (on the index's node) and reaps the dead ones on their
    own nodes: a set whose members all died goes, a due set with a live member is kept."""
    from cacheaside.stores.redis_scripts import index_key, tag_key

    store = _store(redis_cluster, asyncio=use_async)
    admin = redis.RedisCluster.from_url(redis_cluster.url)

    async def af(x: int) -> int:
        return x

    def sf(x: int) -> int:
        return x

    cached: Any = cache_aside(ttl=60, store=store, tags=["t:{x}"])(af if use_async else sf)

    def f(x: int) -> int:
        return LOOP.run_until_complete(cached(x)) if use_async else int(cached(x))

    key = cached.key
    try:
        index = index_key(store.prefix)
        sets = [tag_key(store.prefix, f"t:{x}") for x in range(40)]
        for x in range(40):
            f(x)
        assert len({store.locate(s)[1] for s in sets}) == 3
        assert all(admin.zscore(index, s) for s in sets) and all(admin.pttl(s) == -1 for s in sets)
        for x in (0, 1):
            admin.zadd(sets[x], {key(x): 1}, xx=True)
        admin.zadd(index, {sets[0]: 1, sets[1]: 1, sets[2]: 2})
        live = admin.zscore(sets[2], key(2))
        f(100)  # INDEX returns up to two due sets: 0 and 1, dropped on their nodes
        f(101)  # and 2, indexed again at its member's time
        assert not admin.exists(sets[0]) and not admin.exists(sets[1])
        assert admin.zscore(index, sets[0]) is None and admin.zscore(index, sets[1]) is None
        assert admin.zscore(index, sets[2]) == live and admin.exists(sets[2])
    finally:
        admin.close()
        _close(store)


def test_an_entry_stored_again_without_the_tag_is_spared_on_a_cluster(redis_cluster: RedisCluster) -> None:
    store = _store(redis_cluster)

    @cache_aside(ttl=60, store=store, key="t:{i}", tags=["t"])
    def tagged(i: int) -> int:
        return i

    @cache_aside(ttl=60, store=store, key="t:{i}", version=None)
    def plain(i: int) -> int:
        return i

    try:
        assert tagged.key(1) == plain.key(1)
        tagged(1)
        tagged.invalidate(1)
        plain(1)  # stored again under the same key, without the tag
        invalidate_tags("t", store=store)
        before = plain.stats().hits
        plain(1)
        assert plain.stats().hits == before + 1  # still a hit
    finally:
        _close(store)


def test_async_cluster_client_hits_evicts_and_tags(redis_cluster: RedisCluster) -> None:
    store = _store(redis_cluster, asyncio=True)
    version = {"v": 1}

    @cache_aside(ttl=60, store=store, key="a:{i}", tags=["all"])
    async def item(i: int) -> tuple[int, int]:
        return (i, version["v"])

    @invalidates(item)
    async def write(i: int) -> None:
        version["v"] += 1

    async def scenario() -> None:
        assert [await item(i) for i in range(20)] == [(i, 1) for i in range(20)]
        assert [await item(i) for i in range(20)] == [(i, 1) for i in range(20)]
        assert item.stats().hits == 20
        await write(3)
        assert await item(3) == (3, 2)
        version["v"] = 5
        from cacheaside import ainvalidate_tags

        await ainvalidate_tags("all", store=store)
        assert [await item(i) for i in range(20)] == [(i, 5) for i in range(20)]
        assert item.stats().errors == 0

    try:
        LOOP.run_until_complete(scenario())
    finally:
        _close(store)


def test_a_user_built_cluster_client_works_and_is_warned_about_its_retries(redis_cluster: RedisCluster) -> None:
    from cacheaside import CacheWarning

    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.port, socket_timeout=0.25)
    if int(redis.__version__.split(".")[0]) >= 6:  # 5.x does not show its cluster retries through public API
        with pytest.warns(CacheWarning, match="redis-py's own retries on"):
            store = RedisStore(client, prefix=_prefix())
    else:
        store = RedisStore(client, prefix=_prefix())

    @cache_aside(ttl=60, store=store, tags=["x"])
    def f(i: int) -> int:
        return i

    assert f(1) == 1 and f(1) == 1 and f.stats().hits == 1
    assert isinstance(store.breaker, ShardBreakers) and store.breaker.state == "closed"
    assert next(iter(store.breaker.shards.values())).state == "closed"
    client.close()


def test_a_key_with_a_brace_and_no_hash_tag_is_not_cached_on_a_cluster_and_says_why(
        redis_cluster: RedisCluster) -> None:
    """'search:{}' cannot keep its lease in its slot on a cluster: served by the function, said once,
    and not an outage (a regression: it opened its shard's breaker and bypassed healthy keys)."""
    from cacheaside import CacheWarning

    store = _store(redis_cluster)

    @cache_aside(ttl=60, store=store, key=lambda q: f"search:{q}")
    def search(q: str) -> str:
        return q

    with pytest.warns(CacheWarning, match="hash tag"):
        assert search("{}") == "{}"
    for _ in range(8):
        assert search("{}") == "{}"
    assert store.breaker is not None and store.breaker.state == "closed"
    _close(store)


@pytest.mark.parametrize("evict_from_other", [False, True], ids=["same-process", "other-process"])
def test_the_stale_set_race_is_closed_on_a_cluster(redis_cluster: RedisCluster, evict_from_other: bool) -> None:
    """A value computed from data read before an eviction is not stored, in one process and across two."""
    store = _store(redis_cluster)
    other = RedisStore.from_url(redis_cluster.url, cluster=True, prefix=store.prefix)  # another process
    entered, gate = threading.Event(), threading.Event()
    runs: list[int] = []

    @cache_aside(ttl=60, store=store, key="race:{i}", tags=["race"])
    def f(i: int) -> int:
        runs.append(i)
        entered.set()
        gate.wait(5)
        return len(runs)

    @cache_aside(ttl=60, store=other, key="race:{i}", tags=["race"])
    def g(i: int) -> int:
        return -1

    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(f(1)))
    t.start()
    assert entered.wait(5)
    if evict_from_other:
        invalidate_tags("race", store=other)
    else:
        f.invalidate(1)
    entered.clear()
    gate.set()
    t.join(5)
    assert out == [1]  # the caller still gets its value
    assert f(1) == 2  # but it was not stored: computed again
    _close(store)
    _close(other)


def _workers(cluster: RedisCluster, prefix: str, *flags: str, count: int = 4) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, "-m", "tests.redis_worker", cluster.url, prefix, "cluster", *flags],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(count)]


@pytest.mark.slow
def test_four_processes_missing_one_key_on_a_cluster_run_it_once(redis_cluster: RedisCluster) -> None:
    import json

    prefix = _prefix()
    control = redis.RedisCluster.from_url(redis_cluster.url)
    procs = _workers(redis_cluster, prefix)
    deadline = time.monotonic() + 20
    while int(control.get(f"{prefix}:ready") or 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    control.rpush(f"{prefix}:gate", *["go"] * 4)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert int(control.get(f"{prefix}:calls")) == 1
    assert len({json.dumps(r["value"]) for r in results}) == 1
    control.close()


# -- failover and sick shards (each on a cluster of its own) --------------------------------


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    if REDIS_SERVER is None:
        if REQUIRE_REDIS:
            pytest.fail("CACHEASIDE_REQUIRE_REDIS=1 but no redis-server binary is on PATH")
        pytest.skip("redis-server is not installed")
    # Healthy shards keep answering while one is down (the default refuses every key then).
    cluster = RedisCluster(3, 1, "--cluster-require-full-coverage", "no")
    yield cluster
    cluster.stop()


def _keys_by_shard(store: RedisStore, f: Any, cluster: RedisCluster, n: int = 60) -> dict[int, list[int]]:
    by: dict[int, list[int]] = {}
    for i in range(n):
        by.setdefault(cluster.primary_of(f.key(i)).port, []).append(i)
    return by


@pytest.mark.slow
def test_a_failover_under_load_never_reaches_a_caller(own_cluster: RedisCluster) -> None:
    store = _store(own_cluster)
    errors: list[BaseException] = []
    wrong: list[Any] = []
    served: list[tuple[float, int, bool]] = []  # (time, key, was it a hit)

    @cache_aside(ttl=60, store=store, key="fo:{i}")
    def f(i: int) -> dict[str, int]:
        return {"i": i}

    by = _keys_by_shard(store, f, own_cluster)
    victim_port = next(iter(by))
    victim_keys = set(by[victim_port])
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            i = n % 60
            n += 1
            try:
                hits = f.stats().hits
                value = f(i)
                if value != {"i": i}:
                    wrong.append(value)
                served.append((time.monotonic(), i, f.stats().hits > hits))
            except BaseException as exc:  # any exception reaching a caller fails the test
                errors.append(exc)

    for i in range(60):
        f(i)
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    victim = next(n for n in own_cluster.nodes if n.port == victim_port)
    killed = time.monotonic()
    victim.kill()
    promoted = time.monotonic() + 20
    while own_cluster.primary_of(f.key(min(victim_keys))).port == victim_port and time.monotonic() < promoted:
        time.sleep(0.05)  # until the replica is promoted
    own_cluster.wait_ok()
    healthy_again = time.monotonic()
    assert healthy_again < promoted, "the replica was never promoted"
    # Calls on the failed shard's keys hit again once the cluster answers.
    deadline = healthy_again + 10
    while time.monotonic() < deadline:
        recent = [hit for t, i, hit in served[-400:] if i in victim_keys and t > time.monotonic() - 0.3]
        if recent and all(recent):
            break
        time.sleep(0.05)
    back = time.monotonic()
    stop.set()
    for t in threads:
        t.join(5)
    store.close()
    assert errors == [] and wrong == []
    assert time.monotonic() <= deadline, "the failed shard's keys never hit again"
    others = [hit for t, i, hit in served if i not in victim_keys and killed + 0.5 < t < healthy_again]
    print(f"\nfailover: cluster ok {healthy_again - killed:.2f}s after the kill; failed shard hits again "
          f"{back - killed:.2f}s after; other shards' hit share meanwhile {sum(others) / max(1, len(others)):.2f}")


@pytest.mark.slow
def test_a_sick_shard_is_bypassed_alone_and_its_owed_evictions_land_when_it_returns(
        own_cluster: RedisCluster) -> None:
    store = _store(own_cluster)
    version = {"v": 1}

    @cache_aside(ttl=60, store=store, key="sick:{i}")
    def f(i: int) -> tuple[int, int]:
        return (i, version["v"])

    @invalidates(f)
    def write(i: int) -> None:
        version["v"] += 1

    by = _keys_by_shard(store, f, own_cluster)
    sick_port = own_cluster.primary_of(f"{store.prefix}:shared:1").port  # the other process's key is there too
    sick_tag = next(f"s{n}" for n in range(100) if own_cluster.primary_of(store.tag_set(f"s{n}")).port == sick_port)

    @cache_aside(ttl=60, store=store, key="tagged:{i}", tags=[sick_tag])
    def g(i: int) -> int:
        return i
    sick_keys = by[sick_port]
    healthy = [i for port, keys in by.items() if port != sick_port for i in keys]
    for i in range(60):
        f(i)
    worker_key = f"{store.prefix}:shared:1"
    raw = redis.RedisCluster.from_url(own_cluster.url, socket_timeout=1, socket_connect_timeout=1)
    raw.set(worker_key, b"old")  # what the other process's eviction must remove
    # The other process makes its store (and redis-py's client, which reads the topology) while all is well.
    worker = _workers(own_cluster, store.prefix, "invalidate", count=1)[0]
    assert worker.stdin is not None and worker.stdout is not None
    assert worker.stdout.readline().strip() == "ready", worker.communicate(timeout=30)[1][:1500]
    primary = next(n for n in own_cluster.nodes if n.port == sick_port)
    replica_port = _replica_of(own_cluster, primary)
    replica = next(n for n in own_cluster.nodes if n.port == replica_port)
    primary.pause()
    replica.pause()
    try:
        for _ in range(8):  # the sick shard's breaker opens; nothing reaches the caller
            assert f(sick_keys[0]) == (sick_keys[0], 1)
        shard = store.guard.of(f.key(sick_keys[0]))  # type: ignore[union-attr]
        assert shard.breaker is not None and shard.breaker.state == "open"
        hits = f.stats().hits
        started = time.monotonic()
        assert [f(i) for i in healthy] == [(i, 1) for i in healthy]
        assert f.stats().hits - hits == len(healthy)  # healthy shards keep their hits
        assert time.monotonic() - started < 1.0  # and pay nothing for the sick one
        assert store.breaker is not None and store.breaker.state == "open"
        # Evictions made during the outage, here and from another process, are owed.
        write(sick_keys[0])
        assert store.guard.of(f.key(sick_keys[0])).owes  # type: ignore[union-attr]
        # Evictions by tag during the outage leave the healthy shards alone (a regression: a cluster
        # pipeline failed whole when any node was down, and charged the tag sets' healthy shards).
        tag = next(f"g{n}" for n in range(100) if own_cluster.primary_of(store.tag_set(f"g{n}")).port != sick_port)
        for _ in range(8):
            invalidate_tags(tag, store=store)
        hits = f.stats().hits
        assert [f(i) for i in healthy] == [(i, 1) for i in healthy] and f.stats().hits - hits == len(healthy)
        # A fill on a healthy shard whose tag set is on the sick one: served by the function, at once
        # (the tag set's shard is bypassed, so no lease is taken), and charged to the sick shard only
        # (a regression: the failed TAG was charged to the key's shard, and opened its breaker).
        fresh = [i for i in range(1000, 1200) if own_cluster.primary_of(g.key(i)).port != sick_port][:8]
        started = time.monotonic()
        assert [g(i) for i in fresh] == fresh
        assert time.monotonic() - started < 1.0 and g.stats().errors == len(fresh)
        assert [b.state for name, b in store.breaker.shards.items() if not name.endswith(str(sick_port))] == \
            ["closed", "closed"]
        # The other process owes compute(1) of its own call site (tests.redis_worker) on the same prefix.
        worker.stdin.write("go\n")
        worker.stdin.flush()
        first = worker.stdout.readline().strip()
        assert first == "owed", worker.communicate(timeout=30)[1][:1500]
    finally:
        primary.resume()
        replica.resume()
    resumed = time.monotonic()
    reader = RedisStore.from_url(own_cluster.url, cluster=True, prefix=store.prefix)  # a third process reads
    deadline = resumed + 10
    while time.monotonic() < deadline and reader.client.get(f.key(sick_keys[0])) is not None:
        time.sleep(0.02)
    applied = time.monotonic() - resumed
    assert reader.client.get(f.key(sick_keys[0])) is None, "the owed eviction never landed"
    out, _ = worker.communicate(timeout=25)
    assert "applied" in out
    assert raw.get(worker_key) is None
    print(f"\nsick shard: owed eviction applied {applied:.2f}s after the shard was resumed")
    assert applied < 5  # about a second after the shard answers (Redis itself needs a moment)
    assert f(sick_keys[0]) == (sick_keys[0], 2)
    raw.close()
    reader.close()
    store.close()


def _replica_of(cluster: RedisCluster, primary: Any) -> int:
    for n in cluster.live():
        c = redis.Redis(port=n.port, decode_responses=True)
        info = c.info("replication")
        c.close()
        if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
            return n.port
    raise AssertionError("no replica")


def test_from_url_cluster_settings_and_asyncio_client_kind(redis_cluster: RedisCluster) -> None:
    sync_store = _store(redis_cluster)
    assert isinstance(sync_store.client, redis.RedisCluster) and sync_store.serves_sync
    async_store = _store(redis_cluster, asyncio=True)
    assert isinstance(async_store.client, redis.asyncio.RedisCluster) and async_store.serves_async
    assert "cluster" in repr(sync_store)
    _close(sync_store)
    _close(async_store)
    asyncio.run(asyncio.sleep(0))


# -- tag sets under memory pressure ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "volatile-ttl", "noeviction"])
def test_tags_under_a_small_maxmemory(policy: str) -> None:
    """Under an ``allkeys-*`` policy the store warns at the first tagged fill (Redis may drop tag sets);
    under ``volatile-*`` (tag sets have no TTL, so Redis never picks them) and noeviction no tag
    eviction misses an entry, however full the server is."""
    from cacheaside import CacheWarning

    from .redis_server import RedisServer

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer("--maxmemory", "2mb", "--maxmemory-policy", policy)
    store = RedisStore.from_url(server.url, prefix=_prefix())
    version: dict[int, int] = {}

    @cache_aside(ttl=600, store=store, tags=["item:{i}"])
    def get(i: int) -> tuple[int, bytes]:
        return (version.get(i, 0), b"x" * 200)

    @invalidates(tags=["item:{i}"], store=store)
    def bump(i: int) -> None:
        version[i] = version.get(i, 0) + 1

    try:
        if policy.startswith("allkeys"):
            with pytest.warns(CacheWarning, match=f"maxmemory-policy is {policy}"):
                get(0)
            return
        for i in range(6000):
            get(i)
        assert redis.Redis.from_url(server.url).info("stats")["evicted_keys"] > 0 or policy == "noeviction"
        stale = 0
        for i in range(0, 6000, 20):
            bump(i)
            stale += get(i)[0] != version[i]
        assert stale == 0
    finally:
        store.close()
        server.stop()
