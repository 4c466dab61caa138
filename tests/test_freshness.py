"""stale_while_revalidate and stale_if_error on the memory store and on Redis, sync and async
(more with the hot-key issue)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from cacheaside import MemoryStore, cache_aside

from .conftest import BACKENDS, FakeClock
from .helpers import LOOP, resolve


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)



def decorate(mode: str, body: Any, **options: Any) -> Any:
    """``body`` decorated as a sync or an async function; calls are made sync with ``resolve``."""
    if mode == "sync":
        return cache_aside(**options)(body)

    async def async_body(x: int) -> Any:
        return body(x)

    return cache_aside(**options)(async_body)


def test_stale_if_error_returns_the_expired_value_instead_of_the_exception(
    clock: FakeClock, store: Any, mode: str
) -> None:
    fail = False

    def body(x: int) -> int:
        if fail:
            raise ConnectionError("source down")
        return x

    f = decorate(mode, body, ttl=10, stale_if_error=30, store=store)
    assert resolve(f(1)) == 1
    clock.advance(20)
    fail = True
    assert resolve(f(1)) == 1 and f.stats().stale == 1
    with pytest.raises(ConnectionError):
        resolve(f.refresh(1))
    clock.advance(30)
    with pytest.raises(ConnectionError):
        resolve(f(1))


def test_stale_while_revalidate_serves_stale_and_refreshes_in_background(
    clock: FakeClock, store: Any, mode: str
) -> None:
    runs: list[int] = []
    refreshed = threading.Event()

    def body(x: int) -> int:
        runs.append(x)
        if len(runs) > 1:
            refreshed.set()
        return len(runs) - 1

    f = decorate(mode, body, ttl=10, stale_while_revalidate=30, store=store)
    assert resolve(f(1)) == 0
    clock.advance(15)
    assert resolve(f(1)) == 0 and f.stats().stale == 1  # served stale at once
    if mode == "async":  # the refresh is a task on the suite's loop: let it run until it stored
        assert LOOP.run_until_complete(_astored(store, f.key(1), 1))
    assert refreshed.wait(2)
    assert _wait_until(lambda: _stored(store, f.key(1)) == 1)  # the refresh stored its value
    assert resolve(f(1)) == 1 and f.stats().hits == 1
    assert len(runs) == 2  # one refresh


def _stored(store: Any, key: str) -> Any:
    entry = resolve(store.aget(key)) if not store.serves_sync else store.get(key)
    return None if entry is None else entry.value


def _wait_until(predicate: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


async def _astored(store: Any, key: str, value: Any, timeout: float = 2.0) -> bool:
    """Whether ``value`` is stored under ``key`` within ``timeout``, letting the loop's tasks run meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = await store.aget(key)
        if entry is not None and entry.value == value:
            return True
        await asyncio.sleep(0.001)
    return False


def test_jitter_shortens_each_stored_ttl_by_up_to_its_fraction(clock: Any) -> None:
    """jitter=0.5, ttl=100: every entry keeps 50 to 100 s, and entries written together differ."""
    store = MemoryStore(clock=clock)  # jitter is the policy's: one store shows it

    @cache_aside(ttl=100, jitter=0.5, store=store)
    def f(x: int) -> int:
        return x

    ttls = set()
    for i in range(30):
        f(i)
        entry = store.get(f.key(i))
        assert entry is not None
        ttls.add(entry.ttl)
    assert all(50 <= t <= 100 for t in ttls) and len(ttls) > 1


@pytest.mark.parametrize("jitter, error", [(1, ValueError), (-0.1, ValueError), ("0.1", TypeError), (True, TypeError)])
def test_bad_jitter_fails_at_decoration(jitter: Any, error: type) -> None:
    with pytest.raises(error, match=r"jitter= must be a fraction"):
        cache_aside(ttl=1, jitter=jitter)(lambda x: x)
