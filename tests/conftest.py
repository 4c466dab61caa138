"""Shared fixtures: a fake clock, fresh stores, and redis-server processes the suite starts itself."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cacheaside import MemoryStore, RedisStore, configure
from cacheaside.config import settings

from .helpers import LOOP


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
    saved = (settings.ttl, settings.prefix, settings._store, settings.disabled)
    settings._store = None
    yield
    settings.ttl, settings.prefix, settings._store, settings.disabled = saved
    configure(ttl=saved[0])


# -- redis-server processes ------------------------------------------------------

REDIS_SERVER = shutil.which("redis-server")
REQUIRE_REDIS = os.environ.get("CACHEASIDE_REQUIRE_REDIS") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server on a free port, in its own directory; never the one on 6379."""

    def __init__(self, *extra: str) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cacheaside-redis-")
        self.args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", self.dir, *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        if REQUIRE_REDIS:
            pytest.fail("CACHEASIDE_REQUIRE_REDIS=1 but no redis-server binary is on PATH")
        pytest.skip("redis-server is not installed: Redis tests need the binary (apt-get install redis-server)")
    server = RedisServer()
    yield server
    server.stop()
