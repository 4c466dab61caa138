"""MemoryStore: LRU bound, references vs copies, serializer failures, thread safety."""

from __future__ import annotations

import threading

import pytest

from cacheaside import CacheWarning, MemoryStore, MsgpackSerializer, cache_aside


def test_least_recently_used_entries_go_beyond_maxsize() -> None:
    store = MemoryStore(maxsize=2)
    calls = []

    @cache_aside(ttl=60, store=store)
    def f(x: int) -> int:
        calls.append(x)
        return x

    f(1)
    f(2)
    f(1)  # 1 is now more recent than 2
    f(3)  # evicts 2
    f(1)
    f(2)
    assert calls == [1, 2, 3, 2]
    assert len(store) == 2


def test_without_serializer_hits_return_the_same_object() -> None:
    @cache_aside(ttl=60, store=MemoryStore())
    def f(x: int) -> list[int]:
        return [x]

    assert f(1) is f(1)


def test_with_serializer_every_hit_is_an_independent_copy() -> None:
    @cache_aside(ttl=60, store=MemoryStore(serializer=MsgpackSerializer()))
    def f(x: int) -> list[tuple[int, int]]:
        return [(x, x)]

    first = f(1)
    first.append((0, 0))
    assert f(1) == [(1, 1)] and f(1) is not f(1)


def test_unencodable_value_is_returned_uncached_counted_and_warned_once() -> None:
    marker = object()

    @cache_aside(ttl=60, store=MemoryStore(serializer=MsgpackSerializer()))
    def f(x: int) -> object:
        return marker

    with pytest.warns(CacheWarning, match="could not be cached"):
        assert f(1) is marker
    assert f(2) is marker  # no second warning (filterwarnings=error would fail here)
    assert f.stats().errors == 2 and f.stats().misses == 2 and f.stats().hits == 0


@pytest.mark.parametrize("maxsize", [-1, 1.5, True, "10"])
def test_bad_maxsize_is_a_clear_error(maxsize: object) -> None:
    with pytest.raises(ValueError, match="maxsize must be an int >= 0"):
        MemoryStore(maxsize=maxsize)  # type: ignore[arg-type]


def test_concurrent_use_from_threads_is_safe() -> None:
    store = MemoryStore(maxsize=50)

    @cache_aside(ttl=60, store=store, tags=["t:{x}"])
    def f(x: int) -> int:
        return x * 2

    errors = []

    def worker(seed: int) -> None:
        try:
            for i in range(2000):
                x = (i * seed) % 97
                assert f(x) == x * 2
                if i % 50 == 0:
                    f.invalidate(x)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (1, 3, 7, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store) <= 50
