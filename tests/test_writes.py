"""API.md "Writes": @invalidates by arguments, tags and keys; invalidate_tags."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheaside import CacheWarning, MemoryStore, ainvalidate_tags, cache_aside, configure, invalidate_tags, invalidates

from .conftest import BACKENDS


@pytest.fixture
def db() -> dict[int, str]:
    return {1: "a", 2: "b"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_writer_evicts_its_targets_by_argument_name(db: dict[int, str], store: MemoryStore) -> None:
    @cache_aside(ttl=60, store=store)
    def get_user(user_id: int, verbose: bool = False) -> str:
        return db[user_id]

    @cache_aside(ttl=60, store=store, key="profile:{user_id}")
    def profile(user_id: int) -> str:
        return db[user_id].upper()

    @invalidates(get_user, profile)
    def update_user(data: str, user_id: int) -> None:
        db[user_id] = data

    assert get_user(1) == "a" and profile(1) == "A" and get_user(2) == "b"
    update_user("z", user_id=1)
    assert get_user(1) == "z" and profile(1) == "Z"
    assert get_user.stats().hits == 0 and get_user(2) == "b" and get_user.stats().hits == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_writer_that_raises_still_evicts_and_the_exception_propagates(db: dict[int, str], store: MemoryStore) -> None:
    @cache_aside(ttl=60, store=store)
    def get(user_id: int) -> str:
        return db[user_id]

    @invalidates(get)
    def half_write(user_id: int) -> None:
        db[user_id] = "half"
        raise RuntimeError("commit failed")

    get(1)
    with pytest.raises(RuntimeError, match="commit failed"):
        half_write(1)
    assert get(1) == "half"


@pytest.mark.parametrize("backend", BACKENDS)
def test_tags_evict_every_entry_stored_with_them(db: dict[int, str], store: MemoryStore) -> None:
    @cache_aside(ttl=60, store=store, tags=["user:{user_id}"])
    def name(user_id: int) -> str:
        return db[user_id]

    @cache_aside(ttl=60, store=store, tags=["user:{uid}", "all"])
    def shout(uid: int, times: int) -> str:
        return db[uid].upper() * times

    @invalidates(tags=["user:{user_id}"], store=store)
    def rename(user_id: int, new: str) -> None:
        db[user_id] = new

    assert name(1) == "a" and shout(1, 2) == "AA" and shout(2, 1) == "B"
    rename(1, "q")
    assert name(1) == "q" and shout(1, 2) == "QQ"
    assert shout.stats().hits == 0
    shout(2, 1)
    assert shout.stats().hits == 1
    db[2] = "c"
    invalidate_tags("all", store=store)
    assert shout(2, 1) == "C"


@pytest.mark.parametrize("backend", BACKENDS)
def test_keys_callable_evicts_explicit_keys(db: dict[int, str], store: MemoryStore) -> None:
    @cache_aside(ttl=60, store=store)
    def get(user_id: int) -> str:
        return db[user_id]

    @invalidates(keys=lambda ids: [get.key(i) for i in ids], store=store)
    def bulk(ids: list[int]) -> None:
        for i in ids:
            db[i] = "bulk"

    get(1)
    get(2)
    bulk([1, 2])
    assert get(1) == get(2) == "bulk"


def test_writer_that_cannot_supply_a_parameter_fails_at_decoration() -> None:
    @cache_aside(ttl=60)
    def get(tenant: str, user_id: int) -> int:
        return user_id

    with pytest.raises(ValueError) as info:
        @invalidates(get)
        def update(user_id: int) -> None:
            pass

    msg = str(info.value)
    assert "'tenant'" in msg and "update" in msg and "get" in msg and "tags" in msg


def test_template_target_needs_its_fields_from_the_writer() -> None:
    @cache_aside(ttl=60, key="t:{tenant}:{user_id}")
    def get(tenant: str, user_id: int) -> int:
        return user_id

    with pytest.raises(ValueError, match="'tenant'"):
        @invalidates(get)
        def update(user_id: int) -> None:
            pass


def test_non_cached_target_is_a_clear_type_error() -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="@cache_aside"):
        @invalidates(plain)
        def w(x: int) -> None:
            pass


def test_async_writer_evicts_sync_and_async_targets(db: dict[int, str], store: MemoryStore) -> None:
    @cache_aside(ttl=60, store=store)
    async def aget(user_id: int) -> str:
        return db[user_id]

    @cache_aside(ttl=60, store=store)
    def get(user_id: int) -> str:
        return db[user_id]

    @invalidates(aget, get, tags=["u:{user_id}"])
    async def update(user_id: int, value: str) -> None:
        db[user_id] = value

    async def scenario() -> None:
        assert await aget(1) == "a" and get(1) == "a"
        await update(1, "new")
        assert await aget(1) == "new" and get(1) == "new"
        await ainvalidate_tags("nothing", store=store)

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", BACKENDS)
def test_methods_evict_their_own_class_entries(store: MemoryStore) -> None:
    class Repo:
        def __init__(self) -> None:
            self.rows = {1: "a"}

        @cache_aside(ttl=60, store=store)
        def get(self, user_id: int) -> str:
            return self.rows[user_id]

        @invalidates(get)
        def put(self, user_id: int, value: str) -> None:
            self.rows[user_id] = value

    repo = Repo()
    assert repo.get(1) == "a"
    repo.put(1, "b")
    assert repo.get(1) == "b"
    repo.rows[1] = "c"
    Repo.get.invalidate(repo, 1)
    assert repo.get(1) == "c"


def test_tags_and_keys_default_to_the_default_store_without_targets(db: dict[int, str], clock: Any) -> None:
    store = MemoryStore(clock=clock)
    configure(store=store)

    @cache_aside(ttl=60, tags=["t"])
    def get(user_id: int) -> str:
        return db[user_id]

    @invalidates(tags=["t"])
    def touch() -> None:
        db[1] = "t"

    get(1)
    touch()
    assert get(1) == "t"


@pytest.mark.redis
def test_an_async_writer_evicts_a_target_on_a_sync_store_without_blocking_its_loop(redis_server: Any) -> None:
    """The eviction runs in a worker thread: it happens, counts no error, and the loop keeps running."""
    from .conftest import redis_store

    db = {1: "old"}
    with redis_store(redis_server) as sync_store:

        @cache_aside(ttl=60, store=sync_store)
        def get(user_id: int) -> str:
            return db[user_id]

        @invalidates(get)
        async def update(user_id: int, value: str) -> None:
            db[user_id] = value

        async def scenario() -> None:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            tick = asyncio.ensure_future(ticker())
            await update(1, "new")
            tick.cancel()
            assert ticks > 0  # the loop ran while the eviction was in flight

        assert get(1) == "old"
        asyncio.run(scenario())
        assert get(1) == "new" and get.stats().errors == 0


def test_writers_that_cannot_supply_a_keys_instance_or_class_are_refused_at_decoration() -> None:
    """A classmethod writer cannot give an instance keyed by __cache_key__; a writer that is not a method
    of the class cannot give the {self...} of a template. Both are refused, not logged on every call."""

    class Tenant:
        def __init__(self, name: str) -> None:
            self.name = name

        def __cache_key__(self) -> str:
            return self.name

        @cache_aside(ttl=60)
        def get(self, uid: int) -> int:
            return uid

    with pytest.raises(ValueError, match=r"its key includes the instance"):
        class Admin(Tenant):
            @invalidates(Tenant.get)
            @classmethod
            def reset(cls, uid: int) -> None: ...

    class Templated:
        tenant = "t"

        @cache_aside(ttl=60, key="t:{self.tenant}:{uid}")
        def get(self, uid: int) -> int:
            return uid

    with pytest.raises(ValueError, match=r"its template uses \{self\}"):
        @invalidates(Templated.get)
        def plain(uid: int) -> None: ...

    with pytest.raises((ValueError, RuntimeError)) as info:  # from __set_name__: wrapped before Python 3.12
        class Other:
            @invalidates(Templated.get)
            def write(self, uid: int) -> None: ...
    error = info.value if isinstance(info.value, ValueError) else info.value.__cause__
    assert isinstance(error, ValueError) and "its template uses {self}" in str(error)


@given(st.integers(), st.text(max_size=5), st.one_of(st.none(), st.booleans()), st.booleans())
def test_a_writer_builds_the_same_key_the_reader_builds(uid: int, region: str, flag: bool | None, by_kw: bool) -> None:
    """What ``@invalidates`` evicts is the key the reader stored: the writer's keys equal ``f.key(...)``."""
    store = MemoryStore()

    @cache_aside(ttl=60, store=store, version=1)
    def read(uid: int, region: str = "eu", *, flag: bool | None = None) -> int:
        return uid

    @cache_aside(ttl=60, store=store, key="r:{region}:{uid}", version=2)
    def templated(uid: int, region: str = "eu") -> int:
        return uid

    evicted: list[str] = []
    real = store.delete
    store.delete = lambda keys, tags=(): (evicted.extend(keys), real(keys, tags))[1]  # type: ignore[method-assign]

    @invalidates(read, templated)
    def write(region: str, uid: int, flag: bool | None = None) -> None: ...

    if by_kw:
        write(uid=uid, region=region, flag=flag)
    else:
        write(region, uid, flag)
    assert evicted == [read.key(uid, region, flag=flag), templated.key(uid, region)]


@pytest.mark.redis
def test_a_sync_writer_whose_target_uses_an_async_default_store_writes_and_reports_it(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The configured default store is async-only: the sync writer cannot evict from it. The write runs, the
    failure is logged and counted on the target, and nothing pretends to have evicted."""
    from .conftest import redis_store

    db = {1: "old"}
    with redis_store(redis_server, asyncio=True) as astore:
        configure(store=astore)

        @cache_aside(ttl=60)
        async def get(user_id: int) -> str:
            return db[user_id]

        @invalidates(get)
        def update(user_id: int, value: str) -> None:
            db[user_id] = value

        update(1, "new")
        assert db[1] == "new" and get.stats().errors == 1
        assert any("could not work out the key of" in r.getMessage() for r in caplog.records)


def test_keys_returned_by_keys_are_each_evicted_and_odd_ones_reported(caplog: pytest.LogCaptureFixture) -> None:
    """One bad element does not keep the good keys from being evicted; a key without the store's prefix warns."""
    store = MemoryStore()
    db = {1: "a", 2: "b"}

    @cache_aside(ttl=60, store=store)
    def get(i: int) -> str:
        return db[i]

    @invalidates(get, keys=lambda i: [None, get.key(2)])
    def write(i: int) -> None:
        db[i] = db[2] = "z"

    get(1), get(2)
    write(1)
    assert get(1) == "z" and get(2) == "z"  # both evicted: its own key, and the good explicit key
    assert get.stats().errors == 1 and any("keys=" in r.getMessage() for r in caplog.records)

    @invalidates(keys=lambda i: f"get:{i}", store=store)  # not a full key name
    def bare(i: int) -> None: ...

    with pytest.warns(CacheWarning, match=r"keys= returned a key outside"):
        bare(1)
    bare(2)  # once per writer


@pytest.mark.redis
def test_a_sync_writer_with_only_tags_on_an_async_default_store_says_why_it_cannot(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from .conftest import redis_store

    with redis_store(redis_server, asyncio=True) as astore:
        configure(store=astore)

        @invalidates(tags=["t"])
        def update() -> None:
            pass

        update()
        lines = [r.getMessage() for r in caplog.records if "could not work out" in r.getMessage()]
        assert lines and "serves async code only: make" in lines[0]
        assert not [r for r in caplog.records if "store failed" in r.getMessage()]  # not an outage
