"""``@cache_aside``: validate a read function's options, build its call site, wrap it.

Everything is checked here, at decoration, with errors that name the function, the
parameter and the fix; at call time the call site (``_site``), its read policy
(``policy``), key builder (``keys``) and the drivers' hit path (``drivers``) take over.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import math
import weakref
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, overload

from ._binding import Cached
from ._site import CallSite, check_store
from ._types import MAX_SECONDS, to_seconds
from .exceptions import warn
from .keys import KeyBuilder, check_template
from .policy import ReadPolicy
from .stores.base import StoreInfo
from .typing import AsyncCachedFunction, CachedFunction, Decorator

__all__ = ["cache_aside", "describe"]

P = ParamSpec("P")
R = TypeVar("R")

#: namespace -> the function object that uses it, while it lives: two different live functions
#: with one namespace would share entries (closures of one factory, lambdas of one scope).
_namespaces: dict[str, weakref.ref[Any]] = {}


def describe(fn: Any, decorator: str) -> tuple[Any, str, str, bool]:
    """(the callable to call, its binding, its ``module.qualname``, whether it is async), or a clear error.

    ``fn`` may be a function, an ``async def`` function, a ``classmethod`` / ``staticmethod``,
    a ``functools.partial`` (named after the function it wraps) or a callable object (named
    after its class). Classes, generator functions and anything else are refused.
    """
    raw, binding = fn, "function"
    if isinstance(fn, classmethod):
        raw, binding = fn.__func__, "classmethod"
    elif isinstance(fn, staticmethod):
        raw, binding = fn.__func__, "staticmethod"
    if isinstance(raw, (int, float, timedelta)) and not isinstance(raw, bool):
        raise TypeError(f"{decorator} got {raw!r} where a function goes; did you mean {decorator}(ttl={raw!r})?")
    if isinstance(raw, type) or not callable(raw):
        what = "a class" if isinstance(raw, type) else type(raw).__name__
        raise TypeError(f"{decorator} decorates functions and methods, got {what}")
    named: Any = raw
    while isinstance(named, functools.partial):
        named = named.func
    if not inspect.isfunction(named) and not inspect.ismethod(named) and not inspect.isbuiltin(named):
        named = type(named)  # a callable object: named after its class
        call = getattr(named, "__call__", None)  # noqa: B004 - the class's own __call__, not callable()
        is_async = inspect.iscoroutinefunction(call)
        is_gen, is_agen = inspect.isgeneratorfunction(call), inspect.isasyncgenfunction(call)
    else:
        is_async = inspect.iscoroutinefunction(raw)
        is_gen, is_agen = inspect.isgeneratorfunction(raw), inspect.isasyncgenfunction(raw)
    name = f"{named.__module__}.{named.__qualname__}"
    if is_agen:
        raise TypeError(
            f"{decorator}: {name} is an async generator function; an async generator object cannot be cached. "
            "Cache a function that returns a list instead."
        )
    if is_gen:
        raise TypeError(
            f"{decorator}: {name} is a generator function; a generator object cannot be cached. "
            "Cache a function that returns a list instead."
        )
    return raw, binding, name, is_async


def _location(raw: Any) -> tuple[str, int, str] | None:
    """Where the function is defined: its warnings are attributed there."""
    target = inspect.unwrap(raw.func if isinstance(raw, functools.partial) else raw)
    code = getattr(target, "__code__", None) or getattr(vars(type(target)).get("__call__"), "__code__", None)
    if code is None:
        return None
    return code.co_filename, code.co_firstlineno, getattr(target, "__module__", None) or "__main__"


def _sequence(value: Any, name: str, param: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name}: {param}= must be a list of str, got a {type(value).__name__}; write {param}=[{value!r}]"
        )
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name}: {param}= must be a list of str, got {type(value).__name__}") from None
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{name}: {param}= must be a list of str, got an item of type {type(item).__name__}")
    return items


def _ttl(ttl: Any, name: str) -> float | Callable[[Any], Any] | None:
    if ttl is None:
        return None
    if callable(ttl) and not isinstance(ttl, timedelta):
        return ttl  # type: ignore[no-any-return]
    return to_seconds(ttl, owner=name, param="ttl")


def _window(value: Any, name: str, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, timedelta)):
        raise TypeError(f"{name}: {param} must be seconds (int, float or timedelta), got {type(value).__name__}")
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not 0 <= seconds <= MAX_SECONDS:
        raise ValueError(f"{name}: {param} must be zero or a positive, finite number of seconds, got {value!r}")
    return seconds


def _beta(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: early_refresh= must be a number (XFetch's beta, 1.0 is typical), got "
                        f"{type(value).__name__}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name}: early_refresh= must be a positive, finite number (1.0 is typical), got {value!r}")
    return float(value)


def _jitter(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: jitter= must be a fraction (0 to 1), got {type(value).__name__}")
    if not 0 <= value < 1:
        raise ValueError(f"{name}: jitter= must be a fraction from 0 (no jitter) up to, not including, 1; "
                         f"got {value!r}")
    return float(value)


def _claim(namespace: str, raw: Any, name: str) -> None:
    """Warn when another live function object already uses ``namespace``: they would share entries."""
    ref = _namespaces.get(namespace)
    if ref is not None and ref() is not None and ref() is not raw:
        gc.collect()  # an older function in a reference cycle (its class, say) may be dead but not yet collected
    other = ref() if ref is not None else None
    if other is not None and other is not raw:
        warn(
            f"{name}: another live function ({other!r}) already uses the cache namespace {namespace!r}, so the "
            "two would share entries (closures made by one factory, lambdas of one scope, a function "
            "redefined). Give each a version= (e.g. version=<the factory's argument>) or a key= of its own."
        )
    with contextlib.suppress(TypeError):  # an object that takes no weak reference is not tracked
        _namespaces[namespace] = weakref.ref(raw)


@overload
def cache_aside(  # type: ignore[overload-overlap]
    func: Callable[P, Coroutine[Any, Any, R]], /
) -> AsyncCachedFunction[P, R]: ...
@overload
def cache_aside(func: Callable[P, R], /) -> CachedFunction[P, R]: ...
@overload
def cache_aside(
    func: None = None,
    /,
    *,
    ttl: float | timedelta | Callable[[Any], float] | None = None,
    store: StoreInfo | None = None,
    key: str | Callable[..., str] | None = None,
    tags: Sequence[str] = (),
    ignore: Sequence[str] = (),
    version: int | str | None = None,
    cache_none: bool = True,
    unless: Callable[[Any], bool] | None = None,
    stale_while_revalidate: float | timedelta = 0,
    stale_if_error: float | timedelta = 0,
    early_refresh: float | None = None,
    jitter: float = 0,
) -> Decorator: ...
def cache_aside(
    func: Any = None,
    /,
    *,
    ttl: float | timedelta | Callable[[Any], float] | None = None,
    store: StoreInfo | None = None,
    key: str | Callable[..., str] | None = None,
    tags: Sequence[str] = (),
    ignore: Sequence[str] = (),
    version: int | str | None = None,
    cache_none: bool = True,
    unless: Callable[[Any], bool] | None = None,
    stale_while_revalidate: float | timedelta = 0,
    stale_if_error: float | timedelta = 0,
    early_refresh: float | None = None,
    jitter: float = 0,
) -> Any:
    """Cache a read function's results (cache-aside): look up, fall through on a miss, store with a ttl.

    Usable bare (``@cache_aside``) or called (``@cache_aside(ttl=60)``), above functions,
    ``async def`` functions, methods, ``@classmethod`` and ``@staticmethod``, a
    ``functools.partial`` or a callable object.

    Args:
        ttl: seconds, a ``timedelta``, or ``ttl(result) -> seconds`` (0 or less: not stored);
            None means the configured default.
        store: where entries live; None means the configured default store, looked up at call time.
        key: a ``str.format`` template over the parameters, or a callable returning the key's text.
        tags: templates of tags stored with each entry, for ``@invalidates(tags=...)``.
        ignore: parameters left out of the key (``"self"``/``"cls"`` leave the instance or class out).
        version: part of every key; bump it when the function's output changes meaning.
        cache_none: cache ``None`` results (a cached ``None`` is a hit).
        unless: ``unless(result) -> True`` keeps that result out of the cache.
        stale_while_revalidate: seconds past ttl a stale value is served while one refresh runs.
        stale_if_error: seconds past ttl a stale value replaces an exception of the function.
        early_refresh: XFetch beta; recompute before expiry with a rising probability.
        jitter: shorten each stored ttl by a random share of up to this fraction, so entries
            written together do not expire together.

    Raises:
        TypeError, ValueError: at decoration time, for a bad option, template or store.
    """

    def decorate(fn: Any) -> Any:
        raw, binding, name, is_async = describe(fn, "@cache_aside")
        if key is not None and not isinstance(key, str) and not callable(key):
            raise TypeError(f"{name}: key= must be a str.format template or a callable, got {type(key).__name__}")
        if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
            raise TypeError(f"{name}: version= must be an int or a str, got {type(version).__name__}")
        if not isinstance(cache_none, bool):
            raise TypeError(f"{name}: cache_none= must be True or False")
        if unless is not None and not callable(unless):
            raise TypeError(f"{name}: unless= must be a callable unless(result) -> bool")
        tag_templates = _sequence(tags, name, "tags")
        keys = KeyBuilder(
            raw,
            name=name,
            binding=binding,
            ignore=_sequence(ignore, name, "ignore"),
            template=key if isinstance(key, str) else None,
            key_fn=key if callable(key) else None,
            version=version,
        )
        params = [p.name for p in keys.params]
        for t in tag_templates:
            check_template(t, params, name, "tag template")
        if store is not None:
            check_store(store, is_async, name)
        policy = ReadPolicy(
            ttl=_ttl(ttl, name),
            cache_none=cache_none,
            unless=unless,
            stale_while_revalidate=_window(stale_while_revalidate, name, "stale_while_revalidate"),
            stale_if_error=_window(stale_if_error, name, "stale_if_error"),
            early_refresh=_beta(early_refresh, name),
            jitter=_jitter(jitter, name),
        )
        site = CallSite(
            name=name, keys=keys, policy=policy, tags=tag_templates, store=store, is_async=is_async,
            location=_location(raw),
        )
        if keys.template is None and keys.key_fn is None:
            _claim(keys.namespace, raw, name)
        return Cached(fn, site)

    if func is not None:
        return decorate(func)
    return decorate
