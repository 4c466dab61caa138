"""One behaviour suite for every shape: sync/async x function/method/classmethod/staticmethod."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from cacheaside import cache_aside

SHAPES = ["function", "method", "classmethod", "staticmethod"]
MODES = ["sync", "async"]


#: One event loop for every ``resolve``: asyncio Redis clients stay bound to the loop they first ran on.
LOOP = asyncio.new_event_loop()


def resolve(value: Any) -> Any:
    """Run a coroutine to its result (on ``LOOP``); pass anything else through."""
    if inspect.isawaitable(value):
        return LOOP.run_until_complete(_await(value))
    return value


async def _await(value: Any) -> Any:
    return await value


class Made:
    """A decorated read function in one shape and mode, with a call log."""

    def __init__(self, shape: str, mode: str, source: Callable[..., Any], **options: Any) -> None:
        self.calls: list[tuple[Any, ...]] = []
        calls = self.calls

        if mode == "sync":
            def body(x: Any, y: Any = 0) -> Any:
                calls.append((x, y))
                return source(x, y)
        else:
            async def body(x: Any, y: Any = 0) -> Any:  # type: ignore[misc]
                calls.append((x, y))
                return source(x, y)

        deco = cache_aside(**options)
        if shape == "function":
            self.fn = deco(body)
            self.owner = None
        else:
            if mode == "async" and shape != "staticmethod":
                # the wrapped method itself is async, so the decorator sees a coroutine function
                async def am(self: Any, x: Any, y: Any = 0) -> Any:
                    return await body(x, y)

                async def ac(cls: Any, x: Any, y: Any = 0) -> Any:
                    return await body(x, y)

                wrapped: Any = deco(am) if shape == "method" else deco(classmethod(ac))
            elif shape == "method":
                def m(self: Any, x: Any, y: Any = 0) -> Any:
                    return body(x, y)
                wrapped = deco(m)
            elif shape == "classmethod":
                def c(cls: Any, x: Any, y: Any = 0) -> Any:
                    return body(x, y)
                wrapped = deco(classmethod(c))
            else:
                wrapped = deco(staticmethod(body))
            owner = type("Owner", (), {"get": wrapped})
            self.owner = owner
            self.fn = owner().get if shape == "method" else owner.get

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return resolve(self.fn(*args, **kwargs))
