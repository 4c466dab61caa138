"""``f.clear()``: every entry of one function, whatever its arguments, on memory, Redis and a cluster;
leases revoked, owed while the store is down, and a hit still one ``GET``."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import redis

from cacheaside import MemoryStore, RedisStore, cache_aside

from .conftest import BACKENDS
from .helpers import LOOP, resolve
from .redis_server import RedisCluster, RedisServer
from .test_faults import make_store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pair(mode: str, store: Any) -> tuple[Any, Any, list[Any]]:
    """Two decorated functions on ``store`` (sync or async), and the log of their runs."""
    runs: list[Any] = []
    if mode == "sync":

        @cache_aside(ttl=60, store=store)
        def f(x: int, y: str = "a") -> list[Any]:
            runs.append(("f", x, y))
            return [x, y, len(runs)]

        @cache_aside(ttl=60, store=store, tags=["g:{x}"])
        def g(x: int) -> list[Any]:
            runs.append(("g", x))
            return [x, len(runs)]

        return f, g, runs

    @cache_aside(ttl=60, store=store)
    async def af(x: int, y: str = "a") -> list[Any]:
        runs.append(("f", x, y))
        return [x, y, len(runs)]

    @cache_aside(ttl=60, store=store, tags=["g:{x}"])
    async def ag(x: int) -> list[Any]:
        runs.append(("g", x))
        return [x, len(runs)]

    return af, ag, runs


def test_clear_evicts_every_entry_of_the_function_and_no_other(store: Any, mode: str) -> None:
    f, g, runs = pair(mode, store)
    calls = [(1,), (2,), (3, "b"), (-7, "long " * 50)]
    first = [resolve(f(*c)) for c in calls]
    kept = resolve(g(1))
    assert [resolve(f(*c)) for c in calls] == first and len(runs) == 5  # all hits
    assert resolve(f.clear()) is None
    again = [resolve(f(*c)) for c in calls]
    assert len(runs) == 9 and again != first  # every call of f computed again
    assert resolve(g(1)) == kept and len(runs) == 9  # g's entry (and its own tag) untouched
    assert resolve(f(1)) == again[0] and len(runs) == 9  # stored again after the clear
    resolve(g.clear())
    assert resolve(g(1)) != kept


def test_clear_revokes_a_fill_in_progress(store: Any) -> None:
    """A value computed from data read before the clear is not stored: the next call computes."""
    entered, release = threading.Event(), threading.Event()
    runs: list[int] = []

    @cache_aside(ttl=60, store=store)
    def f(x: int) -> int:
        runs.append(x)
        if len(runs) == 1:
            entered.set()
            assert release.wait(5)
        return len(runs)

    reader = threading.Thread(target=f, args=(1,))
    reader.start()
    assert entered.wait(5)
    f.clear()
    release.set()
    reader.join(5)
    assert f(1) == 2 and f(1) == 2  # the first value was refused; the second one is stored


def test_clear_through_an_instance_and_the_class() -> None:
    store = MemoryStore()

    class Repo:
        def __init__(self) -> None:
            self.runs = 0

        @cache_aside(ttl=60, store=store)
        def get(self, x: int) -> int:
            self.runs += 1
            return x

    repo = Repo()
    repo.get(1), repo.get(2)
    repo.get.clear()
    repo.get(1), repo.get(2)
    assert repo.runs == 4
    Repo.get.clear()
    repo.get(1)
    assert repo.runs == 5 and len(store) == 1


def test_an_async_functions_clear_is_a_coroutine() -> None:
    @cache_aside(ttl=60, store=MemoryStore())
    async def f(x: int) -> int:
        return x

    assert resolve(f(1)) == 1
    cleared = f.clear()
    assert hasattr(cleared, "__await__")
    assert LOOP.run_until_complete(cleared) is None


def test_a_hit_is_still_one_get_and_clear_is_one_round_trip(redis_server: RedisServer) -> None:
    store = make_store(redis_server.url)
    counter = redis.Redis.from_url(redis_server.url)

    def calls(name: str) -> int:
        return int(counter.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0))

    @cache_aside(ttl=60, store=store)
    def f(x: int) -> int:
        return x

    try:
        [f(i) for i in range(20)]
        gets, scripts = calls("get"), calls("evalsha")
        assert [f(i) for i in range(20)] == list(range(20))
        assert calls("get") - gets == 20 and calls("evalsha") == scripts  # a hit: one GET, nothing else
        f.clear()
        assert calls("evalsha") - scripts == 1 and calls("keys") == calls("scan") == 0
        left = {k.decode() for k in counter.keys(f"{store.prefix}*")}  # (KEYS here only to look)
        assert left <= {f"{store.prefix}|tagsets"}, left  # entries, epochs and the function's tag set gone
    finally:
        store.close()
        counter.close()


def test_a_clear_while_the_server_is_down_is_owed_and_applied_first(redis_server: RedisServer) -> None:
    server = RedisServer("--enable-debug-command", "yes")
    store = make_store(server.url)
    value = ["old"]

    @cache_aside(ttl=60, store=store)
    def f(x: int) -> str:
        return value[0]

    try:
        assert [f(i) for i in range(5)] == ["old"] * 5
        value[0] = "new"
        server.pause()
        assert f.clear() is None  # no exception: owed
        assert store.guard is not None and store.guard.owes
        server.resume()
        assert [f(i) for i in range(5)] == ["new"] * 5  # the owed clear went first
    finally:
        server.resume() if server.proc is not None and server.proc.poll() is None else None
        store.close()
        server.stop()


@pytest.mark.slow
def test_clear_reaches_entries_on_every_shard(redis_cluster: RedisCluster) -> None:
    store = RedisStore.from_url(redis_cluster.url, cluster=True, prefix=f"c{uuid.uuid4().hex[:8]}")
    runs: list[int] = []

    @cache_aside(ttl=60, store=store)
    def f(i: int) -> int:
        runs.append(i)
        return i

    try:
        [f(i) for i in range(30)]
        assert len({store.locate(f.key(i))[1] for i in range(30)}) == len(redis_cluster.primaries())
        [f(i) for i in range(30)]
        assert len(runs) == 30
        f.clear()
        [f(i) for i in range(30)]
        assert len(runs) == 60 and f.stats().errors == 0
    finally:
        store.close()


def test_two_functions_of_one_name_told_apart_by_key_clear_apart() -> None:
    store = MemoryStore()

    def make(tag: str) -> Any:
        def f(x: int) -> tuple[str, int]:
            return (tag, x)

        return f

    fa = cache_aside(ttl=60, store=store, key="a:{x}")(make("a"))
    fb = cache_aside(ttl=60, store=store, key="b:{x}")(make("b"))
    assert fa.key(1) != fb.key(1)
    fa(1), fb(1)
    fa.clear()
    assert fb(1) == ("b", 1) and fb.stats().hits == 1  # fb's entry survived fa's clear
    assert fa(1) == ("a", 1) and fa.stats().misses == 2  # fa's did not


def test_no_tag_can_forge_a_functions_own_tag() -> None:
    from cacheaside import invalidate_tags, invalidates

    store = MemoryStore()

    @cache_aside(ttl=60, store=store)
    def victim(x: int) -> int:
        return x

    victim(1)
    with pytest.raises(ValueError, match="reserved"):
        invalidate_tags("\x00" + victim.key(1).split(":")[1], store=store)

    @invalidates(tags=["{slug}"], store=store)
    def write(slug: str) -> None:
        pass

    write("\x00" + victim.key(1).split(":")[1])  # the write runs; the forged tag is refused, logged, counted
    assert victim(1) == 1 and victim.stats().hits == 1
