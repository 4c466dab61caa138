"""assert_type checks that decorated functions keep their signatures; run by mypy in CI (.ci/run)."""

from __future__ import annotations

from typing_extensions import assert_type

from cacheaside import CacheStats, cache_aside


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
