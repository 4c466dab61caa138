"""``RedisStore``: entries in Redis (arrives with the Redis issue; see docs/design.md)."""

from __future__ import annotations

from typing import Any

__all__ = ["RedisStore"]

NOT_YET = (
    "RedisStore is not available yet in this version of cacheaside: it arrives with the Redis "
    "issue (#3). Use MemoryStore() meanwhile."
)


class RedisStore:
    """A store on a ``redis.Redis`` / ``redis.asyncio.Redis`` client. Not implemented yet."""

    def __init__(self, client: Any, **kwargs: Any) -> None:
        raise NotImplementedError(NOT_YET)

    @classmethod
    def from_url(cls, url: str, *, asyncio: bool = False, **kwargs: Any) -> RedisStore:
        raise NotImplementedError(NOT_YET)
