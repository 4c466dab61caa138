"""Process-wide defaults (``configure``) and the test switch (``disabled``).

Defaults are read at call time, so ``configure()`` after decoration still counts. This is
the only module that builds a store of its own: the built-in default ``MemoryStore``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from ._settings import settings
from ._types import check_prefix, to_seconds
from .stores.base import StoreInfo
from .stores.memory import MemoryStore

__all__ = ["configure", "disabled"]

F = TypeVar("F", bound=Callable[..., Any])

settings.make_builtin = lambda prefix: MemoryStore(prefix=prefix)


def configure(
    store: StoreInfo | None = None,
    ttl: float | timedelta | None = None,
    prefix: str | None = None,
) -> None:
    """Set process-wide defaults; ``None`` leaves a setting unchanged.

    Args:
        store: the store of call sites that name none (built-in: a ``MemoryStore()``).
        ttl: the ttl of call sites that give none (built-in: 300 s).
        prefix: the key prefix of stores created afterwards without one, and of the
            built-in default store (built-in: ``"cacheaside"``).

    Raises:
        TypeError, ValueError: for a value of the wrong type or out of range.
    """
    if store is not None and not isinstance(store, StoreInfo):
        raise TypeError(
            f"configure(): store must be a store (MemoryStore(), RedisStore.from_url(url)), "
            f"got {type(store).__name__}"
        )
    seconds = None if ttl is None else to_seconds(ttl, owner="configure()", param="ttl")
    if prefix is not None:
        settings.prefix = check_prefix(prefix, "configure()")
    if seconds is not None:
        settings.ttl = seconds
    if store is not None:
        settings.store = store


class disabled(contextlib.ContextDecorator):
    """Inside it, every decorated call runs its function and touches no store. For tests.

    Use as ``with disabled():``, ``async with disabled():`` or ``@disabled()``.
    The switch is process-wide (all threads and tasks), like the other settings.
    """

    _lock = threading.Lock()

    def __enter__(self) -> disabled:
        with self._lock:
            settings.disabled += 1
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            settings.disabled -= 1

    async def __aenter__(self) -> disabled:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def inner(*args: Any, **kwargs: Any) -> Any:
                async with self._recreate():
                    return await func(*args, **kwargs)

            return inner  # type: ignore[return-value]
        return super().__call__(func)

    def _recreate(self) -> disabled:
        return disabled()
