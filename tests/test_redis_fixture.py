"""The suite's own redis-server processes (RedisStore itself arrives with the Redis issue)."""

from __future__ import annotations

import redis

from .redis_server import RedisServer


def test_the_suite_starts_its_own_server_on_a_free_port(redis_server: RedisServer) -> None:
    assert redis_server.port != 6379
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1)
    assert client.ping()
    client.close()
