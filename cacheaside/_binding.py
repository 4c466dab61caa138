"""The wrappers of decorated read functions: wrapt ``FunctionWrapper`` / ``BoundFunctionWrapper`` subclasses.

Binding to instances and classes (methods, classmethods, staticmethods) is wrapt's; the
bound wrappers carry ``.key/.invalidate/.refresh/.stats`` through instances and classes
(``repo.get_user.invalidate(7)``, ``Repo.get_user.invalidate(7)``). Which instance or class
a bound wrapper is for is read from what it wraps (a bound method's ``__self__``), and its
call site from wrapt's documented ``_self_parent``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import wrapt

from . import flow
from ._site import CallSite
from .drivers import akept_out, arun, kept_out, make_areader, make_reader, run, tags_of
from .evictions import aevict, evict
from .guard import guard_of
from .stats import CacheStats

__all__ = ["BoundCached", "Cached", "site_of"]


def site_of(obj: Any) -> CallSite | None:
    """The call site of a decorated function, or of one reached through an instance or class; else None.

    A bound wrapper reaches its function's wrapper through ``_self_parent``, the one attribute of
    wrapt's that wrapt documents for subclasses of ``BoundFunctionWrapper``; only this function reads it.
    """
    if isinstance(obj, Cached):
        return obj._self_site
    if isinstance(obj, BoundCached):
        return obj._self_parent._self_site  # type: ignore[no-any-return]
    return None


def _key(site: CallSite, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    store = site.resolve_store()
    return site.keys.build(store.prefix, instance, skip, args, kwargs)


def _evict(site: CallSite, store: Any, keys: list[str], tags: list[str]) -> Any:
    """Evict ``keys`` and ``tags`` from ``store`` for ``site`` (a coroutine for an async site)."""

    def failed(failure: flow.Failure) -> None:
        site.store_failed(failure.exc)

    if site.is_async:
        return _done(aevict(store, keys, tags, failed, where=site.name))
    evict(store, keys, tags, failed, where=site.name)
    return None


def _invalidate(site: CallSite, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    store = site.resolve_store()
    key = site.keys.build(store.prefix, instance, skip, args, kwargs)
    site.counters.evictions += 1
    return _evict(site, store, [key], [])


def _clear(site: CallSite) -> Any:
    """Evict every entry of the function on its store: its own tag (``CallSite.clear_tag``)."""
    site.counters.clears += 1
    return _evict(site, site.resolve_store(), [], [site.clear_tag])


async def _done(eviction: Awaitable[bool]) -> None:
    await eviction


def _refresh(
    site: CallSite, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any], call: Callable[[], Any]
) -> Any:
    store = site.resolve_store()
    key = site.keys.build(store.prefix, instance, skip, args, kwargs)
    tags = tags_of(site, instance, skip, args, kwargs)
    guard = guard_of(store, key)
    if site.is_async:

        async def go() -> Any:
            if guard is not None and not guard.clear and await akept_out(site, store, guard):
                return await call()
            refresh = flow.refresh(site, store, key, tags, asyncio.get_running_loop(), background=False)
            return (await arun(refresh, site, store, key, call)).unwrap()

        return go()
    if guard is not None and not guard.clear and kept_out(site, store, guard):
        return call()
    return run(flow.refresh(site, store, key, tags, None, background=False), site, store, key, call).unwrap()


class BoundCached(wrapt.BoundFunctionWrapper[..., Any]):
    """``obj.method`` / ``Cls.method`` of a cached function: the helpers with ``self``/``cls`` bound."""

    def _parts(self, args: tuple[Any, ...]) -> tuple[CallSite, Any, bool, tuple[Any, ...]]:
        site = site_of(self)
        assert site is not None
        keys = site.keys
        if keys.binding == "staticmethod":
            return site, None, False, args
        instance = getattr(self.__wrapped__, "__self__", None)  # a bound method's instance or class
        if instance is not None:
            return site, instance, True, args
        if args and keys.owns(args[0]):  # Cls.method.key(obj, ...)
            return site, args[0], True, args[1:]
        if keys.first is None:
            return site, None, False, args
        why = keys.keyed_by_instance()
        if why is not None:
            raise TypeError(
                f"{site.name}: its key includes {why}; reached through the class, pass the instance first "
                "(Cls.method.invalidate(obj, ...), .key(obj, ...), .refresh(obj, ...))"
            )
        return site, None, True, args  # Cls.method.invalidate(7): the key leaves the instance out

    def key(self, *args: Any, **kwargs: Any) -> str:
        site, instance, skip, args = self._parts(args)
        return _key(site, instance, skip, args, kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        site, instance, skip, args = self._parts(args)
        return _invalidate(site, instance, skip, args, kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        site, instance, skip, rest = self._parts(args)
        call = self.__wrapped__
        # Reached through the class with the instance as an argument, the function is unbound.
        call_args = (instance, *rest) if instance is not None and getattr(call, "__self__", None) is None else rest
        return _refresh(site, instance, skip, rest, kwargs, lambda: call(*call_args, **kwargs))

    def clear(self) -> Any:
        site = site_of(self)
        assert site is not None
        return _clear(site)

    def stats(self) -> CacheStats:
        site = site_of(self)
        assert site is not None
        return site.counters.snapshot()


class Cached(wrapt.FunctionWrapper[..., Any]):
    """A function decorated with ``@cache_aside``."""

    __bound_function_wrapper__ = BoundCached

    def __init__(self, wrapped: Any, site: CallSite) -> None:
        static = site.keys.binding == "staticmethod"
        wrapper = make_areader(site, static) if site.is_async else make_reader(site, static)
        super().__init__(wrapped, wrapper)
        self._self_site = site
        # A plain function is called straight through: wrapt's generic call path costs more than a
        # whole in-memory hit. Bound methods, classmethods and staticmethods keep wrapt's binding.
        self._self_direct = wrapper if site.keys.binding == "function" else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        direct = self._self_direct
        if direct is not None:
            return direct(self.__wrapped__, None, args, kwargs)
        return super().__call__(*args, **kwargs)

    def __set_name__(self, owner: type, name: str) -> None:
        super().__set_name__(owner, name)  # type: ignore[misc]  # wrapt's, missing from its stubs
        keys = self._self_site.keys
        if keys.owner == owner.__qualname__:
            keys.owner_class = owner  # the class exists now: whether keys include instances is known

    def key(self, *args: Any, **kwargs: Any) -> str:
        return _key(self._self_site, None, False, args, kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        return _invalidate(self._self_site, None, False, args, kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        call = self.__wrapped__
        return _refresh(self._self_site, None, False, args, kwargs, lambda: call(*args, **kwargs))

    def clear(self) -> Any:
        """Evict every entry of this function on its store, whatever the arguments (a coroutine for an
        async function); owed, like any eviction, while the store is down."""
        return _clear(self._self_site)

    def stats(self) -> CacheStats:
        return self._self_site.counters.snapshot()
