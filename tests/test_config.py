"""API.md "Process-wide" and decoration-time errors."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from cacheaside import (
    CacheError,
    CacheKeyError,
    CacheWarning,
    MemoryStore,
    SerializationError,
    cache_aside,
    configure,
    disabled,
)
from cacheaside._settings import settings


def test_bare_decorator_takes_the_configured_default_ttl(clock) -> None:  # type: ignore[no-untyped-def]
    calls = []

    @cache_aside
    def f(x: int) -> int:
        calls.append(x)
        return x

    configure(store=MemoryStore(clock=clock), ttl=timedelta(seconds=30))
    f(1)
    clock.advance(29)
    f(1)
    clock.advance(2)
    f(1)
    assert calls == [1, 1]


def test_builtin_defaults() -> None:
    assert settings.ttl == 300 and settings.prefix == "cacheaside"
    assert isinstance(settings.default_store(), MemoryStore)
    assert settings.default_store() is settings.default_store()


def test_configured_prefix_applies_to_stores_created_afterwards() -> None:
    configure(prefix="myapp")

    @cache_aside(ttl=1)
    def f(x: int) -> int:
        return x

    assert f.key(1).startswith("myapp:")
    assert MemoryStore(prefix="other").prefix == "other"


def test_disabled_as_context_async_context_and_decorator() -> None:
    calls = []

    @cache_aside(ttl=60, store=MemoryStore())
    def f(x: int) -> int:
        calls.append(x)
        return x

    @cache_aside(ttl=60, store=MemoryStore())
    async def g(x: int) -> int:
        calls.append(x)
        return x

    f(1)
    with disabled():
        f(1)
        f(1)
    f(1)
    assert calls == [1, 1, 1]

    @disabled()
    def under_test() -> None:
        f(1)

    under_test()
    assert calls == [1, 1, 1, 1]

    async def scenario() -> None:
        await g(2)
        async with disabled():
            await g(2)
        await g(2)

    asyncio.run(scenario())
    assert calls == [1, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), timedelta(0)])
def test_bad_ttl_values_fail_at_decoration(ttl: object) -> None:
    with pytest.raises(ValueError, match=r"f: ttl"):
        @cache_aside(ttl=ttl)  # type: ignore[arg-type]
        def f() -> None:
            pass


@pytest.mark.parametrize("ttl", ["60", True, [1]])
def test_non_numeric_ttl_is_a_type_error(ttl: object) -> None:
    with pytest.raises(TypeError, match=r"f: ttl must be seconds"):
        @cache_aside(ttl=ttl)  # type: ignore[arg-type]
        def f() -> None:
            pass


def test_unknown_ignore_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"ignore= names 'nope'"):
        @cache_aside(ttl=1, ignore=["nope"])
        def f(x: int) -> None:
            pass


def test_error_tree() -> None:
    assert issubclass(CacheKeyError, CacheError) and issubclass(CacheKeyError, TypeError)
    assert issubclass(SerializationError, CacheError) and issubclass(SerializationError, TypeError)
    assert issubclass(CacheWarning, UserWarning)


def test_sync_only_store_refuses_async_functions_at_decoration() -> None:
    class SyncOnly(MemoryStore):
        serves_async = False

    with pytest.raises(TypeError, match=r"async function.*serves sync functions only"):
        @cache_aside(ttl=1, store=SyncOnly())
        async def f() -> None:
            pass


def test_wrapped_function_keeps_its_metadata() -> None:
    @cache_aside(ttl=1)
    def documented(x: int, y: str = "a") -> int:
        """Docs."""
        return x

    import inspect

    assert documented.__name__ == "documented" and documented.__doc__ == "Docs."
    assert list(inspect.signature(documented).parameters) == ["x", "y"]


def test_the_builtin_default_store_follows_the_configured_prefix() -> None:
    """configure(prefix=) after the built-in default store was used still applies to it (API.md "Stores")."""

    @cache_aside(ttl=60)
    def f(x: int) -> int:
        return x

    assert f(1) == 1 and f.key(1).startswith("cacheaside:")
    configure(prefix="p2")
    assert f.key(1).startswith("p2:")
    assert f(1) == 1 and f.stats().misses == 2  # a new store under the new prefix
    assert settings.default_store().prefix == "p2"


@pytest.mark.parametrize("prefix", [5, b"x"])
def test_a_prefix_that_is_not_a_str_is_a_type_error(prefix: object) -> None:
    with pytest.raises(TypeError, match="prefix must be a non-empty str"):
        configure(prefix=prefix)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MemoryStore: prefix"):
        MemoryStore(prefix=prefix)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [10**20, 1e10, float("inf")])
def test_a_ttl_past_what_a_store_can_keep_fails_at_decoration(ttl: float) -> None:
    """Redis refuses an expiry of 10**20 s on every SET; such a ttl is refused where it is written."""
    with pytest.raises(ValueError, match=r"f: ttl must be a positive, finite number of seconds \(at most 1e\+09\)"):
        @cache_aside(ttl=ttl)
        def f() -> None:
            pass
