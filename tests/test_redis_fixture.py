"""The suite's own redis-server processes."""

from __future__ import annotations

import redis

from .redis_server import RedisServer


def test_the_suite_starts_its_own_server_on_a_free_port(redis_server: RedisServer) -> None:
    """The server answering on the fixture's port is the process the suite started (not one on 6379)."""
    assert redis_server.proc is not None and redis_server.proc.poll() is None
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1)
    assert client.ping()
    assert int(client.info("server")["process_id"]) == redis_server.proc.pid
    client.close()
