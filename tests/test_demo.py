"""The demo runs and shows hits, misses, evictions and a fresh read after a write."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .redis_server import RedisCluster, RedisServer, free_port


def test_demo_output() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cacheaside", "demo", "--ops", "120"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for word in ("hits:", "misses:", "evictions:", "time:", "read-after-write"):
        assert word in text
    assert "fresh, as expected" in text


@pytest.mark.redis
def test_demo_runs_on_redis(redis_server: RedisServer) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cacheaside", "demo", "--ops", "120", "--redis", redis_server.url],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "on RedisStore" in out.stdout and "fresh, as expected" in out.stdout


def test_demo_on_an_unreachable_redis_says_so() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cacheaside", "demo", "--redis", f"redis://127.0.0.1:{free_port()}/0"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "cannot reach the Redis server" in out.stdout


@pytest.mark.redis
def test_demo_runs_on_a_redis_cluster(redis_cluster: RedisCluster) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cacheaside", "demo", "--ops", "120", "--redis", redis_cluster.url, "--cluster"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "on RedisStore (Redis Cluster)" in out.stdout and "fresh, as expected" in out.stdout
