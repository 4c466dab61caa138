"""What type checkers see of decorated functions: the ``CachedFunction`` / ``AsyncCachedFunction`` protocols.

``@cache_aside`` returns wrapt proxies; these protocols describe them, ``ParamSpec`` kept
through (async overloads first), so ``f(1)``, ``f.key(1)`` and ``await g.invalidate(1)``
type-check as the undecorated function's signature says.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

from .stats import CacheStats

__all__ = ["AsyncCachedFunction", "CachedFunction", "Decorator"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R2 = TypeVar("R2")
T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)
F = TypeVar("F", bound=Callable[..., Any])

class CachedFunction(Protocol[P, R_co]):
    """A sync function decorated with ``@cache_aside``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def key(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None: ...
    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def clear(self) -> None: ...
    def stats(self) -> CacheStats: ...
    __name__: str
    __qualname__: str
    __wrapped__: Callable[..., Any]
    # Methods: reached through an instance, ``self`` is bound (as wrapt's own stubs do it).
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None, /) -> CachedFunction[P, R_co]: ...
    @overload
    def __get__(
        self: CachedFunction[Concatenate[T, P2], R2], instance: T, owner: type[Any] | None = None, /
    ) -> CachedFunction[P2, R2]: ...


class AsyncCachedFunction(Protocol[P, R_co]):
    """An ``async def`` function decorated with ``@cache_aside``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...
    def key(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None: ...
    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    async def clear(self) -> None: ...
    def stats(self) -> CacheStats: ...
    __name__: str
    __qualname__: str
    __wrapped__: Callable[..., Any]
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None, /) -> AsyncCachedFunction[P, R_co]: ...
    @overload
    def __get__(
        self: AsyncCachedFunction[Concatenate[T, P2], R2], instance: T, owner: type[Any] | None = None, /
    ) -> AsyncCachedFunction[P2, R2]: ...


class Decorator(Protocol):
    """What ``@cache_aside(...)`` returns: a decorator for sync or async functions, classmethods, staticmethods."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R], /) -> CachedFunction[P, R]: ...
    @overload
    def __call__(self, func: classmethod[Any, P, R], /) -> CachedFunction[P, R]: ...
    @overload
    def __call__(self, func: staticmethod[P, R], /) -> CachedFunction[P, R]: ...


