"""assert_type checks that decorated functions keep their signatures; run by mypy in CI (.ci/run)."""

from __future__ import annotations

import redis
from typing_extensions import assert_type

from cacheaside import CacheStats, MemoryStore, RedisStore, cache_aside, configure


@cache_aside(ttl=1)
def f(x: int, y: str = "a") -> list[int]:
    return [x]


@cache_aside
async def g(x: int) -> str:
    return ""


class C:
    @cache_aside(ttl=1)
    def m(self, x: int) -> int:
        return x


assert_type(f(1), list[int])
assert_type(f.key(1, y="b"), str)
assert_type(f.stats(), CacheStats)
assert_type(C().m(1), int)
assert_type(C().m.key(1), str)


async def main() -> None:
    assert_type(await g(1), str)
    assert_type(await g.refresh(1), str)
    await g.invalidate(1)


# A store of each kind is a store to configure() (StoreInfo's members are read-only).
configure(store=MemoryStore())
configure(store=RedisStore(redis.Redis()))
configure(store=RedisStore.from_url("redis://localhost:6379/0"))


# A decorated function keeps its name, like functools.wraps.
assert_type(f.__name__, str)
assert_type(f.__qualname__, str)
assert_type(g.__name__, str)

