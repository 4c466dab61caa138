"""Shared fixtures: a fake clock, fresh stores, and redis-server processes the suite starts itself."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cacheaside import MemoryStore, RedisStore
from cacheaside._settings import settings

from .helpers import LOOP, MODES
from .redis_server import REDIS_SERVER, RedisCluster, RedisServer


class FakeClock:
    """Wall-clock seconds that move only when told to."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


#: Parametrize ``backend`` with this (``pytest.mark.parametrize("backend", BACKENDS)``) to run a
#: test on both stores; the ``store`` fixture follows it, and the test's ``mode`` when it has one.
BACKENDS = ["memory", "redis"]


@pytest.fixture
def backend() -> str:
    return "memory"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Sync and async functions (for the modules that ask for it)."""
    return str(request.param)


@pytest.fixture
def store(backend: str, clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[Any]:
    if backend == "memory":
        yield MemoryStore(clock=clock)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    mode = request.getfixturevalue("mode") if "mode" in request.fixturenames else "sync"
    with redis_store(server, asyncio=mode == "async", clock=clock) as made:
        yield made


@contextlib.contextmanager
def redis_store(server: RedisServer, *, asyncio: bool = False, **options: Any) -> Iterator[RedisStore]:
    """A RedisStore on a fresh client to ``server``, under a prefix of its own; closed afterwards."""
    options.setdefault("prefix", f"t{uuid.uuid4().hex[:8]}")
    made = RedisStore.from_url(server.url, asyncio=asyncio, **options)
    try:
        yield made
    finally:
        if asyncio:
            LOOP.run_until_complete(made.client.aclose())
        else:
            made.client.close()


@pytest.fixture(autouse=True)
def _isolated_defaults() -> Iterator[None]:
    """Every test starts with the built-in defaults and a fresh default store."""
    saved = (settings.ttl, settings.prefix, settings.store, settings.builtin, settings.disabled)
    settings.store = settings.builtin = None
    yield
    settings.ttl, settings.prefix, settings.store, settings.builtin, settings.disabled = saved


# -- redis-server processes ------------------------------------------------------

REQUIRE_REDIS = os.environ.get("CACHEASIDE_REQUIRE_REDIS") == "1"


def _need_redis_server(what: str) -> None:
    """Skip (or, under CACHEASIDE_REQUIRE_REDIS=1, fail) when there is no redis-server binary."""
    if REDIS_SERVER is None:
        if REQUIRE_REDIS:
            pytest.fail("CACHEASIDE_REQUIRE_REDIS=1 but no redis-server binary is on PATH")
        pytest.skip(f"redis-server is not installed: {what} need the binary (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    _need_redis_server("Redis tests")
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 primaries, each with a replica, shared by the cluster tests that break nothing."""
    _need_redis_server("Redis Cluster tests")
    cluster = RedisCluster(primaries=3, replicas=1)
    yield cluster
    cluster.stop()
