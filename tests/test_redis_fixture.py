"""The suite's own redis-server processes."""

from __future__ import annotations

import redis

from .redis_server import PROTOCOL, RedisServer


def test_the_suite_starts_its_own_server_on_a_free_port(redis_server: RedisServer) -> None:
    """The server answering on the fixture's port is the process the suite started (not one on 6379)."""
    assert redis_server.proc is not None and redis_server.proc.poll() is None
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1)
    assert client.ping()
    assert int(client.info("server")["process_id"]) == redis_server.proc.pid
    client.close()


def test_clients_made_from_the_servers_url_speak_the_requested_protocol(redis_server: RedisServer) -> None:
    """CI runs the suite with CACHEASIDE_TEST_PROTOCOL=2 or 3 on some redis-py versions: the stores' clients
    then speak that protocol; without it, the installed redis-py's default (RESP3 from redis-py 8)."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1)
    default = getattr(redis.Connection(), "protocol", None) or 2
    assert int(client.client_info()["resp"]) == int(PROTOCOL or default)  # as the server sees the connection
    client.close()
