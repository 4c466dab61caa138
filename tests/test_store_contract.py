"""The store contract (``cacheaside.stores.base``), one suite run against every store, dogpile-style.

Each store is driven through an adapter that calls its sync methods, or its ``a``-methods
on the suite's event loop, so the same assertions hold for ``MemoryStore``, ``RedisStore``
on a ``redis.Redis`` and ``RedisStore`` on a ``redis.asyncio.Redis``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cacheaside import MemoryStore, RedisStore
from cacheaside._types import Entry, Lease
from cacheaside.policy import fresh
from cacheaside.stores import redis_scripts as lua

from .conftest import redis_store
from .helpers import resolve
from .redis_server import RedisServer


class Driven:
    """A store's contract methods, sync whatever the store's kind."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.is_async = isinstance(store, RedisStore) and store.serves_async

    def __getattr__(self, name: str) -> Any:
        if self.is_async:
            method = getattr(self.store, "a" + name)
            return lambda *args: resolve(method(*args))
        return getattr(self.store, name)

    def leased(self, key: str) -> bool:
        """Whether a fill of ``key`` holds a lease now (bookkeeping the contract says is bounded)."""
        if isinstance(self.store, MemoryStore):
            return key in self.store._leases
        admin = redis.Redis.from_url(self.url)
        try:
            return bool(admin.hexists(lua.lease_key(self.store.prefix, key), "h"))
        finally:
            admin.close()

    url = ""


#: Stores shared by processes, whose leases another process can hold (a MemoryStore's never are).
SHARED = ["redis", "redis-async"]


@pytest.fixture(params=["memory", *SHARED])
def driven(request: pytest.FixtureRequest) -> Iterator[Driven]:
    if request.param == "memory":
        yield Driven(MemoryStore())
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    with redis_store(server, asyncio=request.param == "redis-async") as store:
        d = Driven(store)
        d.url = server.url
        yield d


@pytest.fixture
def other(driven: Driven, request: pytest.FixtureRequest) -> Iterator[Driven]:
    """The same store seen from another process (for Redis: a second store on the same prefix)."""
    if isinstance(driven.store, MemoryStore):
        yield driven
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    with redis_store(server, asyncio=driven.is_async, prefix=driven.store.prefix) as store:
        d = Driven(store)
        d.url = server.url
        yield d


def key(driven: Driven, name: str) -> str:
    return f"{driven.store.prefix}:contract:{name}"


def entry(value: Any, *tags: str, ttl: float = 60.0) -> Entry:
    return Entry(value, time.time(), ttl, 0.0, 0.0, tags)


def fill(d: Driven, k: str, value: Any, *tags: str) -> Lease:
    lease = d.acquire(k, tags)
    assert lease.owner and lease.entry is None
    assert d.set(k, entry(value, *tags), lease) is True
    return lease


def test_a_missing_key_reads_as_none(driven: Driven) -> None:
    assert driven.get(key(driven, "missing")) is None


def test_a_fill_under_its_lease_is_stored_and_its_lease_let_go(driven: Driven) -> None:
    k = key(driven, "fill")
    fill(driven, k, {"a": 1})
    found = driven.get(k)
    assert found is not None and found.value == {"a": 1} and fresh(found, time.time())
    assert not driven.leased(k)


def test_concurrent_misses_in_one_process_share_one_lease(driven: Driven) -> None:
    k = key(driven, "share")
    first, second = driven.acquire(k, ()), driven.acquire(k, ())
    assert first.owner and second.owner and first.token == second.token


def test_acquire_over_a_fresh_entry_returns_it_and_takes_no_lease(driven: Driven) -> None:
    k = key(driven, "fresh")
    fill(driven, k, 7)
    for _ in range(3):
        lease = driven.acquire(k, ())
        assert lease.entry is not None and lease.entry.value == 7
    assert not driven.leased(k)


def test_refresh_takes_a_lease_even_over_a_fresh_entry(driven: Driven) -> None:
    k = key(driven, "refresh")
    fill(driven, k, 1)
    lease = driven.acquire(k, (), True)
    assert lease.entry is None and lease.owner and driven.leased(k)
    assert driven.set(k, entry(2), lease) and driven.get(k).value == 2


def test_an_eviction_revokes_a_fill_in_progress(driven: Driven, other: Driven) -> None:
    k = key(driven, "revoke")
    lease = driven.acquire(k, ())
    other.delete([k])
    assert driven.set(k, entry("late"), lease) is False
    assert driven.get(k) is None


def test_a_tag_eviction_revokes_a_fill_carrying_the_tag(driven: Driven, other: Driven) -> None:
    k = key(driven, "tag-revoke")
    lease = driven.acquire(k, ("t1",))
    other.delete([], ["t1"])
    assert driven.set(k, entry("late", "t1"), lease) is False


def test_a_tag_eviction_evicts_every_entry_carrying_it_and_no_other(driven: Driven) -> None:
    a, b, c = key(driven, "ta"), key(driven, "tb"), key(driven, "tc")
    fill(driven, a, 1, "team:1", "all")
    fill(driven, b, 2, "team:2", "all")
    fill(driven, c, 3)
    driven.delete([], ["team:1"])
    assert driven.get(a) is None and driven.get(b) is not None and driven.get(c) is not None
    driven.delete([], ["all"])
    assert driven.get(b) is None and driven.get(c) is not None


def test_tags_are_names_whatever_their_characters(driven: Driven) -> None:
    k = key(driven, "odd-tag")
    tag = "email:ada@example.com {x}|y,z ü"
    fill(driven, k, 1, tag)
    driven.delete([], ["email:ada@example.com"])  # a different tag
    assert driven.get(k) is not None
    driven.delete([], [tag])
    assert driven.get(k) is None


def test_an_entry_stored_again_without_a_tag_is_not_evicted_by_it(driven: Driven) -> None:
    k = key(driven, "retag")
    fill(driven, k, "tagged", "t")
    refill = driven.acquire(k, (), True)
    assert driven.set(k, entry("untagged"), refill)
    driven.delete([], ["t"])
    found = driven.get(k)
    assert found is not None and found.value == "untagged"


def test_release_lets_the_lease_go(driven: Driven, other: Driven) -> None:
    k = key(driven, "release")
    lease = driven.acquire(k, ())
    driven.release(k, lease)
    assert not driven.leased(k)
    taken = other.acquire(k, ())
    assert taken.owner and taken.entry is None


@pytest.mark.parametrize("driven", SHARED, indirect=True)
def test_another_process_waits_for_the_holder_and_receives_its_value(driven: Driven, other: Driven) -> None:
    k = key(driven, "wait")
    lease = driven.acquire(k, ())
    waiting = other.acquire(k, ())
    assert not waiting.owner
    driven.set(k, entry("value"), lease)
    found = other.watch(k, waiting, 2.0)
    assert found is not None and found.value == "value"


@pytest.mark.parametrize("driven", SHARED, indirect=True)
def test_a_waiter_may_take_the_lease_over_after_waiting(driven: Driven, other: Driven) -> None:
    k = key(driven, "take-over")
    held = driven.acquire(k, ())
    assert not other.acquire(k, ()).owner
    taken = other.acquire(k, (), False, True)
    assert taken.owner
    assert other.set(k, entry("waiter"), taken)
    assert driven.set(k, entry("holder"), held)  # the same epoch: no eviction happened
    assert driven.get(k).value == "holder"


def test_purge_evicts_everything_under_the_prefix(driven: Driven) -> None:
    a, b = key(driven, "pa"), key(driven, "pb")
    fill(driven, a, 1, "t")
    lease = driven.acquire(b, ())
    driven.purge()
    assert driven.get(a) is None and not driven.leased(b)
    assert driven.set(b, entry(2), lease) is False


def test_an_empty_tag_is_a_tag(driven: Driven) -> None:
    """``tags=["{region}"]`` with ``region=""`` gives the tag "": it is evicted by ``invalidate_tags("")``."""
    k, other_key = key(driven, "empty-tag"), key(driven, "no-tag")
    fill(driven, k, 1, "")
    fill(driven, other_key, 2)
    driven.delete([], [""])
    assert driven.get(k) is None and driven.get(other_key) is not None
