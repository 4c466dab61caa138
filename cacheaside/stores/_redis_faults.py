"""What a Redis error means for the cache: a fault (count it against the breaker), a transient
one (worth one quick retry), or a misconfiguration (say what is missing); and which client
settings would let an outage stall callers. All through redis-py's public API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio

__all__ = [
    "RIGHTS",
    "aconfig_policy",
    "client_options",
    "config_policy",
    "connect",
    "diagnose",
    "is_async_client",
    "is_cluster_client",
    "is_fault",
    "is_transient",
    "moved_away",
    "stall_risks",
    "tag_policy_risk",
]

_SYNC_CLIENTS: tuple[type, ...] = (redis.Redis, redis.RedisCluster)
_ASYNC_CLIENTS: tuple[type, ...] = (redis.asyncio.Redis, redis.asyncio.RedisCluster)

#: Replies that mean the server cannot do its job now (not that the request was wrong).
_FAULT_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "MISCONF", "CLUSTERDOWN", "TRYAGAIN")


#: How redis-py words a command it refuses to send to a cluster (not an outage).
_CLUSTER_REFUSALS = ("same key slot", "same slot", "is blocked")

#: How a cluster node words a script's access to a key it no longer (or never) served.
_MOVED_AWAY = "non local key"


def moved_away(exc: BaseException) -> bool:
    """A script sent to one node of a cluster touched a key that node does not serve (the topology changed)."""
    return isinstance(exc, redis.ResponseError) and _MOVED_AWAY in str(exc)


def is_async_client(client: object) -> bool:
    if isinstance(client, _ASYNC_CLIENTS):
        return True
    if isinstance(client, _SYNC_CLIENTS):
        return False
    raise TypeError(
        f"RedisStore: client must be a redis.Redis or redis.asyncio.Redis (or a cluster client), "
        f"got {type(client).__name__}; or use RedisStore.from_url(url)."
    )


def is_cluster_client(client: object) -> bool:
    return isinstance(client, (redis.RedisCluster, redis.asyncio.RedisCluster))


def client_options(client: Any) -> dict[str, Any] | None:
    """The connection settings of ``client`` (its nodes' on a cluster), or None when they can't be read."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        return getattr(pool, "connection_kwargs", None)
    options = getattr(client, "connection_kwargs", None)  # redis.asyncio.RedisCluster: every node's
    if isinstance(options, dict):
        return options
    try:  # redis.RedisCluster: each node has a client of its own, made with the same settings
        node = client.get_default_node()
        return node.redis_connection.connection_pool.connection_kwargs  # type: ignore[no-any-return]
    except Exception:
        return None


def is_fault(exc: BaseException) -> bool:
    """A store fault, which counts against the breaker: unreachable, too slow, or unable to serve."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)):
        return True
    if isinstance(exc, redis.exceptions.MaxConnectionsError):
        return False  # this process's pool is full (a burst of calls), not the store failing
    if isinstance(exc, redis.exceptions.RedisClusterException) and any(w in str(exc) for w in _CLUSTER_REFUSALS):
        return False  # refused by redis-py before sending: the store cannot do this on a cluster (see diagnose)
    if isinstance(exc, (redis.exceptions.ClusterError, redis.exceptions.RedisClusterException)):
        return True  # a cluster that is down, failing over or resharding, or that no node of answers
    if isinstance(exc, redis.exceptions.TryAgainError) or moved_away(exc):
        return True  # a slot in migration, or one that moved between reading the topology and running a script
    return isinstance(exc, redis.ResponseError) and str(exc).split(" ", 1)[0] in _FAULT_REPLIES


def is_transient(exc: BaseException) -> bool:
    """A fault worth one more quick try: the connection failed (a timeout already spent the budget)."""
    return isinstance(exc, (redis.ConnectionError, ConnectionError)) and not isinstance(exc, redis.TimeoutError)


#: The rights the store's user needs, on its keys (``<prefix>:*`` and ``<prefix>|*``); see the README.
RIGHTS = "+@read +@write +@scripting +@keyspace +time"

#: How Redis words a refusal by ACL of a command run inside a script (a plain ResponseError).
_SCRIPT_NOPERM = ("can't run this command", "no permissions")


def diagnose(exc: BaseException) -> str | None:
    """What is wrong with the server's setup when ``exc`` says it refused the store's commands, else None."""
    message = str(exc)
    if isinstance(exc, TypeError) and "unexpected keyword argument" in message:
        return (
            f"its client was made with an option redis-py does not take ({message}); every command fails. "
            "Check the keyword arguments given to RedisStore.from_url or to the client."
        )
    if isinstance(exc, redis.exceptions.RedisClusterException) and any(w in message for w in _CLUSTER_REFUSALS):
        return (
            f"redis-py refused a command of the store on Redis Cluster ({message}). A key that holds '}}' "
            "without a hash tag before it (e.g. 'search:{}') cannot keep its lease in its own slot, so it is "
            "never cached on a cluster: give the key a hash tag ('search:{q}:...') or keep '}' out of it."
        )
    if isinstance(exc, redis.exceptions.NoPermissionError) or (
        isinstance(exc, redis.ResponseError) and any(words in message for words in _SCRIPT_NOPERM)
    ):
        return (
            f"the Redis user may not run a command the store needs ({message}). Grant it {RIGHTS} on the "
            "store's keys, e.g. ACL SETUSER <user> ~<prefix>:* ~<prefix>|* " + RIGHTS + " (see the README)."
        )
    refused = isinstance(exc, redis.ResponseError) and not message.startswith(("WRONGTYPE", "NOSCRIPT"))
    if refused and not is_fault(exc):
        return (
            f"the Redis server refused a command of the store ({message}). The store needs Redis 6.2 or newer "
            "(ZADD GT, float BLPOP timeouts) with scripting (EVALSHA) allowed."
        )
    return None


def client_retries(client: Any) -> int:
    """How many times redis-py itself retries a failed command on ``client`` (0 also when it can't tell).

    ``Retry.get_retries()`` is public from redis-py 6; on 5.x the count is not readable
    through the public API, and the store does not warn about it.
    """
    get_retry = getattr(client, "get_retry", None)
    try:
        retry = get_retry() if get_retry is not None else getattr(client, "retry", None)  # a cluster's own
    except AttributeError:  # redis-py 5.0's RedisCluster.get_retry() reads an attribute it never sets
        retry = getattr(client, "retry", None)
    get_retries = getattr(retry, "get_retries", None)
    return int(get_retries()) if get_retries is not None else 0


def stall_risks(client: Any) -> list[str]:
    """Client settings under which an outage would hold callers for seconds."""
    risks = []
    kwargs = client_options(client)
    if kwargs is not None and kwargs.get("socket_timeout") is None:
        risks.append("no socket_timeout (a hung server holds a call forever)")
    retries = client_retries(client)
    if retries:
        risks.append(f"redis-py's own retries on ({retries}, each up to the socket timeout)")
    return risks


#: The maxmemory policies under which Redis never evicts a tag set: noeviction (writes fail instead of
#: evicting) and the ``volatile-*`` ones, which evict only keys with an expiry (a tag set has none).
SAFE_FOR_TAGS = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")


def tag_policy_risk(reply: Any) -> str | None:
    """What is wrong with the server's ``maxmemory-policy`` (a ``CONFIG GET`` reply, or one per node
    from a cluster) for tag sets, or None. Under an ``allkeys-*`` policy Redis may evict a tag set while
    entries it lists live on, and an eviction by that tag then misses them (until their TTL)."""
    replies = [reply]
    if isinstance(reply, dict) and reply and all(isinstance(v, dict) for v in reply.values()):
        replies = list(reply.values())
    for one in replies:
        if not isinstance(one, dict):
            continue
        policy = one.get("maxmemory-policy", one.get(b"maxmemory-policy"))
        if isinstance(policy, bytes):
            policy = policy.decode()
        if policy is not None and policy not in SAFE_FOR_TAGS:
            return (
                f"the server's maxmemory-policy is {policy}: when memory is full Redis may evict a tag set while "
                "entries it lists stay, and an eviction by that tag (or f.clear(), which evicts a function's own "
                "tag) then misses them until their TTL. Use a volatile-* maxmemory-policy or noeviction (see the "
                "README, 'Redis in production')."
            )
    return None


def config_policy(config_get: Any) -> Any:
    """The server's ``maxmemory-policy`` (a ``CONFIG GET`` reply), or None when CONFIG is refused."""
    try:
        return config_get("maxmemory-policy")
    except Exception:
        return None  # managed services and ACLs often refuse CONFIG: nothing to check against


async def aconfig_policy(config_get: Any) -> Any:
    """``config_policy`` on an asyncio client."""
    try:
        return await config_get("maxmemory-policy")
    except Exception:
        return None


def connect(factory: Any, url: str, options: dict[str, Any]) -> Any:
    """``factory.from_url(url, **options)``. A sync cluster client reads the topology and the command
    table from some node as it is made: a hung node among them fails it, so it is tried a few times."""
    attempts = 3 if factory is redis.RedisCluster else 1
    for attempt in range(1, attempts + 1):
        try:
            return factory.from_url(url, **options)
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException):
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover



