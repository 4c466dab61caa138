"""Process-wide defaults (``configure``) and the test switch (``disabled``).

Defaults are read at call time, so ``configure()`` after decoration still counts.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .stores.base import StoreInfo

__all__ = ["configure", "disabled", "settings", "to_seconds"]

F = TypeVar("F", bound=Callable[..., Any])


def to_seconds(value: object, *, owner: str, param: str) -> float:
    """A positive finite duration in seconds from an int, float or timedelta, else a clear error."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{owner}: {param} must be seconds (int or float) or a datetime.timedelta, "
            f"got {type(value).__name__}"
        )
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{owner}: {param} must be a positive, finite number of seconds, got {value!r}")
    return seconds


class _Settings:
    """The live defaults; one instance, ``settings``."""

    def __init__(self) -> None:
        self.ttl = 300.0
        self.prefix = "cacheaside"
        self._store: StoreInfo | None = None
        self._lock = threading.Lock()
        self.disabled = 0  # > 0 inside ``disabled()``

    @property
    def store(self) -> StoreInfo:
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    from .stores.memory import MemoryStore

                    self._store = MemoryStore()
                store = self._store
        return store


settings = _Settings()


def configure(
    store: StoreInfo | None = None,
    ttl: float | timedelta | None = None,
    prefix: str | None = None,
) -> None:
    """Set process-wide defaults; ``None`` leaves a setting unchanged.

    Args:
        store: the store of call sites that name none (built-in: a ``MemoryStore()``).
        ttl: the ttl of call sites that give none (built-in: 300 s).
        prefix: the key prefix of stores created afterwards without one (built-in: ``"cacheaside"``).
    """
    if ttl is not None:
        settings.ttl = to_seconds(ttl, owner="configure()", param="ttl")
    if prefix is not None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"configure(): prefix must be a non-empty str, got {prefix!r}")
        settings.prefix = prefix
    if store is not None:
        from .stores.base import StoreInfo

        if not isinstance(store, StoreInfo):
            raise TypeError(f"configure(): store must be a store (e.g. MemoryStore()), got {type(store).__name__}")
        settings._store = store


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
        import inspect

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def inner(*args: Any, **kwargs: Any) -> Any:
                async with self._recreate():
                    return await func(*args, **kwargs)

            return inner  # type: ignore[return-value]
        return super().__call__(func)

    def _recreate(self) -> disabled:
        return disabled()

