"""stale_while_revalidate and stale_if_error on the memory store and on Redis (more with the hot-key issue)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cacheaside import cache_aside

from .conftest import BACKENDS, FakeClock


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_stale_if_error_returns_the_expired_value_instead_of_the_exception(clock: FakeClock, store: Any) -> None:
    fail = False

    @cache_aside(ttl=10, stale_if_error=30, store=store)
    def f(x: int) -> int:
        if fail:
            raise ConnectionError("source down")
        return x

    assert f(1) == 1
    clock.advance(20)
    fail = True
    assert f(1) == 1 and f.stats().stale == 1
    with pytest.raises(ConnectionError):
        f.refresh(1)
    clock.advance(30)
    with pytest.raises(ConnectionError):
        f(1)


def test_stale_while_revalidate_serves_stale_and_refreshes_once_in_background(clock: FakeClock, store: Any) -> None:
    n = iter(range(100))
    refreshed = threading.Event()

    @cache_aside(ttl=10, stale_while_revalidate=30, store=store)
    def f(x: int) -> int:
        value = next(n)
        if value:
            refreshed.set()
        return value

    assert f(1) == 0
    clock.advance(15)
    assert f(1) == 0 and f.stats().stale == 1
    assert refreshed.wait(2)
    for _ in range(50):
        if f(1) == 1:
            break
    assert f(1) == 1
