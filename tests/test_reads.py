"""API.md "Reads" and "On the decorated function", for every shape and mode."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cacheaside import MemoryStore, configure

from .conftest import BACKENDS
from .helpers import SHAPES, Made, resolve

pytestmark = pytest.mark.parametrize("shape", SHAPES)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that takes ``store`` runs on the memory store and on Redis."""
    return str(request.param)


def value_of(x, y):  # type: ignore[no-untyped-def]
    return {"x": x, "y": y}



def test_a_hit_does_not_call_the_function(shape: str, mode: str, store: MemoryStore) -> None:
    f = Made(shape, mode, value_of, ttl=60, store=store)
    assert f(1) == {"x": 1, "y": 0}
    assert f(1) == {"x": 1, "y": 0}
    assert f.calls == [(1, 0)]
    assert f.fn.stats().hits == 1 and f.fn.stats().misses == 1


def test_positional_keyword_and_default_calls_share_one_entry(shape: str, mode: str, store: MemoryStore) -> None:
    f = Made(shape, mode, value_of, ttl=60, store=store)
    f(1)
    f(x=1)
    f(1, 0)
    f(1, y=0)
    f(y=0, x=1)
    assert f.calls == [(1, 0)]
    assert f.fn.key(1) == f.fn.key(x=1) == f.fn.key(1, 0) == f.fn.key(y=0, x=1)


def test_different_arguments_are_different_entries(shape: str, mode: str, store: MemoryStore) -> None:
    f = Made(shape, mode, value_of, ttl=60, store=store)
    f(1)
    f(2)
    f(1, 1)
    f("1")
    assert len(f.calls) == 4


def test_entries_expire_after_ttl(shape: str, mode: str, store: MemoryStore, clock) -> None:  # type: ignore[no-untyped-def]
    f = Made(shape, mode, value_of, ttl=timedelta(seconds=10), store=store)
    f(1)
    clock.advance(9.9)
    f(1)
    assert len(f.calls) == 1
    clock.advance(0.2)
    f(1)
    assert len(f.calls) == 2


def test_ttl_callable_gets_the_result(shape: str, mode: str, store: MemoryStore, clock) -> None:  # type: ignore[no-untyped-def]
    f = Made(shape, mode, value_of, ttl=lambda result: 5 if result["x"] == 1 else 50, store=store)
    f(1)
    f(2)
    clock.advance(10)
    f(1)
    f(2)
    assert f.calls == [(1, 0), (2, 0), (1, 0)]


def test_exceptions_propagate_unchanged_and_are_not_cached(shape: str, mode: str, store: MemoryStore) -> None:
    boom = LookupError("boom")

    def fail(x, y):  # type: ignore[no-untyped-def]
        raise boom

    f = Made(shape, mode, fail, ttl=60, store=store)
    for _ in range(2):
        with pytest.raises(LookupError) as info:
            f(1)
        assert info.value is boom
    assert len(f.calls) == 2


@pytest.mark.parametrize("empty", [None, [], {}, "", 0, False])
def test_none_and_empty_values_are_cached_hits(shape: str, mode: str, store: MemoryStore, empty: object) -> None:
    f = Made(shape, mode, lambda x, y: empty, ttl=60, store=store)
    assert f(1) == empty
    assert f(1) == empty and type(f(1)) is type(empty)
    assert len(f.calls) == 1
    assert f.fn.stats().hits == 2


def test_cache_none_false_stores_nothing_for_none(shape: str, mode: str, store: MemoryStore) -> None:
    f = Made(shape, mode, lambda x, y: None if x == 1 else x, ttl=60, store=store, cache_none=False)
    f(1)
    f(1)
    f(2)
    f(2)
    assert f.calls == [(1, 0), (1, 0), (2, 0)]


def test_unless_keeps_matching_results_out(shape: str, mode: str, store: MemoryStore) -> None:
    f = Made(shape, mode, value_of, ttl=60, store=store, unless=lambda r: r["x"] > 5)
    f(9)
    f(9)
    f(1)
    f(1)
    assert f.calls == [(9, 0), (9, 0), (1, 0)]


def test_invalidate_evicts_that_call_only(shape: str, mode: str, store: MemoryStore) -> None:
    f = Made(shape, mode, value_of, ttl=60, store=store)
    f(1)
    f(2)
    assert resolve(f.fn.invalidate(x=1)) is None
    f(1)
    f(2)
    assert f.calls == [(1, 0), (2, 0), (1, 0)]


def test_refresh_calls_stores_and_returns(shape: str, mode: str, store: MemoryStore) -> None:
    n = iter(range(100))
    f = Made(shape, mode, lambda x, y: next(n), ttl=60, store=store)
    assert f(1) == 0
    assert resolve(f.fn.refresh(1)) == 1
    assert f(1) == 1
    assert len(f.calls) == 2


def test_key_has_prefix_namespace_and_no_argument_values(shape: str, mode: str, store: MemoryStore) -> None:
    f = Made(shape, mode, value_of, ttl=60, store=store)
    key = f.fn.key("s3cret-password")
    prefix, namespace, digest = key.split(":")
    assert prefix == store.prefix
    inner = {"function": "body", "staticmethod": "body", "method": "m", "classmethod": "c"}[shape]
    if mode == "async" and shape in ("method", "classmethod"):
        inner = "a" + inner
    assert namespace == f"tests.helpers.Made.__init__.<locals>.{inner}"  # the function's module.qualname
    assert len(digest) == 32 and "s3cret" not in key


def test_default_store_and_ttl_are_read_at_call_time(shape: str, mode: str, clock) -> None:  # type: ignore[no-untyped-def]
    f = Made(shape, mode, value_of)
    later = MemoryStore(clock=clock)
    configure(store=later, ttl=5)
    f(1)
    assert len(later) == 1
    clock.advance(6)
    f(1)
    assert len(f.calls) == 2

