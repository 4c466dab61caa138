"""``@cache_aside`` for reads, ``@invalidates`` for writes, ``invalidate_tags`` outside decorators.

The wrappers are wrapt ``FunctionWrapper`` subclasses, so binding to instances
and classes (methods, classmethods, staticmethods) is wrapt's, and
``.key/.invalidate/.refresh/.stats`` travel with the bound wrappers
(``repo.get_user.invalidate(7)``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

import wrapt

from . import flow
from ._settings import settings
from ._types import to_seconds
from .drivers import acall_again, aevict, arun, call_again, evict, run
from .flow import CallSite, Failure
from .guard import BYPASS, REPLAY
from .keys import _FORMATTER, ArgMap, KeyBuilder, template_fields
from .stats import CacheStats

__all__ = [
    "AsyncCachedFunction",
    "CachedFunction",
    "ainvalidate_tags",
    "cache_aside",
    "invalidate_tags",
    "invalidates",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R2 = TypeVar("R2")
T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)
F = TypeVar("F", bound=Callable[..., Any])

_UNSET: Any = object()


class CachedFunction(Protocol[P, R_co]):
    """A sync function decorated with ``@cache_aside``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def key(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None: ...
    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
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


class _Decorator(Protocol):
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


# --------------------------------------------------------------------------- reads


def _is_method(func: Callable[..., Any]) -> bool:
    """Whether a plain function was defined in a class body (its qualname's parent is a class)."""
    parts = getattr(func, "__qualname__", "").split(".")
    return len(parts) > 1 and parts[-2] != "<locals>"


class _Reader:
    """Everything one ``@cache_aside`` needs at call time."""

    def __init__(self, func: Any, site: CallSite, store: Any, is_async: bool, binding: str) -> None:
        self.func = func
        self.site = site
        self.store = store
        self.is_async = is_async
        self.binding = binding  # "function", "classmethod" or "staticmethod"
        self.checked: Any = store

    def resolve_store(self) -> Any:
        store = self.store if self.store is not None else settings.default_store()
        if store is not self.checked:
            _check_store(store, self.is_async, self.site.name)
            self.checked = store
        return store

    def tags(self, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
        if not self.site.tags:
            return ()
        mapping = self.site.keys.mapping(instance, skip, args, kwargs)
        return tuple(_FORMATTER.vformat(t, (), mapping) for t in self.site.tags)

    def skip_for_writer(self) -> bool:
        if self.binding == "classmethod":
            return True
        return self.binding == "function" and _is_method(self.func)


def _check_store(store: Any, is_async: bool, name: str) -> None:
    if is_async and not getattr(store, "serves_async", False):
        raise TypeError(
            f"{name} is an async function but its store {store!r} serves sync functions only; "
            "give it an async store, e.g. RedisStore.from_url(url, asyncio=True), or a MemoryStore()."
        )
    if not is_async and not getattr(store, "serves_sync", False):
        raise TypeError(
            f"{name} is a sync function but its store {store!r} serves async functions only; "
            "give it a sync store, e.g. RedisStore.from_url(url), or a MemoryStore()."
        )


def _no_tags() -> tuple[str, ...]:
    return ()


def _calls(
    reader: _Reader, wrapped: Callable[..., Any], instance: Any, skip: bool, args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Callable[[], tuple[str, ...]], Callable[[], Any]]:
    """The call's tags (rendered when asked) and the call itself, for a flow.

    Made here, off the hit path: a wrapper that made these closures itself would
    allocate a cell for each captured name on every call, hits included.
    """
    tags = (lambda: reader.tags(instance, skip, args, kwargs)) if reader.site.tags else _no_tags
    return tags, lambda: wrapped(*args, **kwargs)


def _read(
    reader: _Reader, store: Any, key: str, entry: Any, now: float, wrapped: Callable[..., Any], instance: Any,
    skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any],
) -> Any:
    """A sync call whose lookup gave no fresh value: the read flow."""
    tags, call = _calls(reader, wrapped, instance, skip, args, kwargs)
    return run(flow.read(reader.site, store, key, entry, now, tags, None), store, call).unwrap()


def _refresh_early(
    reader: _Reader, store: Any, key: str, wrapped: Callable[..., Any], instance: Any, skip: bool,
    args: tuple[Any, ...], kwargs: dict[str, Any],
) -> None:
    tags, call = _calls(reader, wrapped, instance, skip, args, kwargs)
    run(_spawn(reader.site, store, key, tags, None), store, call)


async def _aread(
    reader: _Reader, store: Any, key: str, entry: Any, now: float, wrapped: Callable[..., Any], instance: Any,
    skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any],
) -> Any:
    """An async call whose lookup gave no fresh value: the read flow."""
    tags, call = _calls(reader, wrapped, instance, skip, args, kwargs)
    loop = asyncio.get_running_loop()
    return (await arun(flow.read(reader.site, store, key, entry, now, tags, loop), store, call)).unwrap()


async def _arefresh_early(
    reader: _Reader, store: Any, key: str, wrapped: Callable[..., Any], instance: Any, skip: bool,
    args: tuple[Any, ...], kwargs: dict[str, Any],
) -> None:
    tags, call = _calls(reader, wrapped, instance, skip, args, kwargs)
    await arun(_spawn(reader.site, store, key, tags, asyncio.get_running_loop()), store, call)


def _make_sync_wrapper(reader: _Reader) -> Callable[..., Any]:
    # The hit path is inlined here (no helper calls but the key and the lookup, and no
    # closures: see ``_calls``): on a remote store a hit is a round trip plus this, and
    # every frame shows in the ratio.
    site = reader.site
    build = site.keys.build
    counters = site.counters
    fixed = reader.store  # checked at decoration; None: the configured default, checked per call
    static = reader.binding == "staticmethod"

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if settings.disabled:
            return wrapped(*args, **kwargs)
        store = fixed if fixed is not None else reader.resolve_store()
        if static:
            instance = None
        skip = instance is not None
        key = build(store.prefix, instance, skip, args, kwargs)
        guard = store.guard
        if guard is not None and not guard.clear and _kept_out(store, site):
            return wrapped(*args, **kwargs)
        try:
            entry = store.get(key)
        except Exception as exc:
            try:
                if guard is None:
                    raise
                entry = call_again(store, guard, "get", (key,), exc, time.monotonic())
            except Exception as final:
                if guard is not None:
                    guard.failed(final)
                site.store_failed(Failure(final), "get")
                counters.misses += 1
                return wrapped(*args, **kwargs)
        now = store.clock()
        if entry is not None and now < entry.stored_at + entry.ttl:
            counters.hits += 1
            if guard is not None and not guard.clear:
                guard.ok()
            if site.early_refresh is not None and site.refresh_early(entry, now):
                _refresh_early(reader, store, key, wrapped, instance, skip, args, kwargs)
            return entry.value
        return _read(reader, store, key, entry, now, wrapped, instance, skip, args, kwargs)

    return wrapper


def _make_async_wrapper(reader: _Reader) -> Callable[..., Any]:
    site = reader.site
    build = site.keys.build
    counters = site.counters
    fixed = reader.store
    static = reader.binding == "staticmethod"

    async def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if settings.disabled:
            return await wrapped(*args, **kwargs)
        store = fixed if fixed is not None else reader.resolve_store()
        if static:
            instance = None
        skip = instance is not None
        key = build(store.prefix, instance, skip, args, kwargs)
        guard = store.guard
        if guard is not None and not guard.clear and await _akept_out(store, site):
            return await wrapped(*args, **kwargs)
        try:
            entry = store.get(key) if store.nonblocking else await store.aget(key)
        except Exception as exc:
            try:
                if guard is None:
                    raise
                entry = await acall_again(store, guard, "get", (key,), exc, time.monotonic())
            except Exception as final:
                if guard is not None:
                    guard.failed(final)
                site.store_failed(Failure(final), "get")
                counters.misses += 1
                return await wrapped(*args, **kwargs)
        now = store.clock()
        if entry is not None and now < entry.stored_at + entry.ttl:
            counters.hits += 1
            if guard is not None and not guard.clear:
                guard.ok()
            if site.early_refresh is not None and site.refresh_early(entry, now):
                await _arefresh_early(reader, store, key, wrapped, instance, skip, args, kwargs)
            return entry.value
        return await _aread(reader, store, key, entry, now, wrapped, instance, skip, args, kwargs)

    return wrapper


def _kept_out(store: Any, site: CallSite) -> bool:
    """Whether a call must not use the store now; asked only when its guard is not clear.

    The breaker is open (the call counts as ``bypassed``), or evictions owed to the
    store could not be paid first (an error, counted by the failed eviction).
    """
    verdict = store.guard.admit()
    if verdict == BYPASS:
        site.counters.bypassed += 1
        return True
    return verdict == REPLAY and not evict(store, (), (), site.replay_failed, verdict)


async def _akept_out(store: Any, site: CallSite) -> bool:
    """``_kept_out`` with awaits."""
    verdict = store.guard.admit()
    if verdict == BYPASS:
        site.counters.bypassed += 1
        return True
    return verdict == REPLAY and not await aevict(store, (), (), site.replay_failed, verdict)


def _spawn(site: CallSite, store: Any, key: str, tags: Callable[[], tuple[str, ...]], loop: Any) -> flow.Flow:
    yield (flow.SPAWN, lambda: flow.refresh(site, store, key, tags, loop, background=True))
    return flow.Outcome()


class _BoundCached(wrapt.BoundFunctionWrapper[..., Any]):
    """``obj.method`` / ``Cls.method`` of a cached function: the helpers with ``self``/``cls`` bound."""

    def _parts(self, args: tuple[Any, ...]) -> tuple[_Reader, Any, bool, tuple[Any, ...]]:
        reader: _Reader = self._self_parent._self_reader
        binding = self._self_binding
        instance = self._self_instance
        if binding == "classmethod":
            return reader, getattr(self.__wrapped__, "__self__", instance), True, args
        if binding == "staticmethod":
            return reader, None, False, args
        if instance is None and args:  # Cls.method.key(obj, ...)
            return reader, args[0], True, args[1:]
        return reader, instance, instance is not None, args

    def key(self, *args: Any, **kwargs: Any) -> str:
        reader, instance, skip, args = self._parts(args)
        return _key(reader, instance, skip, args, kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        reader, instance, skip, args = self._parts(args)
        return _invalidate(reader, instance, skip, args, kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        reader, instance, skip, args = self._parts(args)
        call = self.__wrapped__
        return _refresh(reader, instance, skip, args, kwargs, lambda: call(*args, **kwargs))

    def stats(self) -> CacheStats:
        return self._self_parent._self_reader.site.counters.snapshot()  # type: ignore[no-any-return]


class _Cached(wrapt.FunctionWrapper[..., Any]):
    """A function decorated with ``@cache_aside``."""

    __bound_function_wrapper__ = _BoundCached

    def __init__(self, wrapped: Any, reader: _Reader) -> None:
        wrapper = _make_async_wrapper(reader) if reader.is_async else _make_sync_wrapper(reader)
        super().__init__(wrapped, wrapper)
        self._self_reader = reader
        # A plain function is called straight through: wrapt's generic call path costs more than a
        # whole in-memory hit. Bound methods, classmethods and staticmethods keep wrapt's binding.
        self._self_direct = wrapper if reader.binding == "function" else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        direct = self._self_direct
        if direct is not None:
            return direct(self.__wrapped__, None, args, kwargs)
        return super().__call__(*args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> str:
        return _key(self._self_reader, None, False, args, kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        return _invalidate(self._self_reader, None, False, args, kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        call = self.__wrapped__
        return _refresh(self._self_reader, None, False, args, kwargs, lambda: call(*args, **kwargs))

    def stats(self) -> CacheStats:
        return self._self_reader.site.counters.snapshot()


def _key(reader: _Reader, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    store = reader.resolve_store()
    return reader.site.keys.build(store.prefix, instance, skip, args, kwargs)


def _invalidate(reader: _Reader, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    store = reader.resolve_store()
    key = reader.site.keys.build(store.prefix, instance, skip, args, kwargs)
    def failed(f: Failure) -> None:
        reader.site.store_failed(f, "delete")

    if reader.is_async:
        return _adone(aevict(store, [key], [], failed))
    evict(store, [key], [], failed)
    return None


def _refresh(
    reader: _Reader,
    instance: Any,
    skip: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call: Callable[[], Any],
) -> Any:
    store = reader.resolve_store()
    site = reader.site
    key = site.keys.build(store.prefix, instance, skip, args, kwargs)
    tags = (lambda: reader.tags(instance, skip, args, kwargs)) if site.tags else _no_tags
    guard = store.guard
    if reader.is_async:

        async def go() -> Any:
            if guard is not None and not guard.clear and await _akept_out(store, site):
                return await call()
            loop = asyncio.get_running_loop()
            return (await arun(flow.refresh(site, store, key, tags, loop, background=False), store, call)).unwrap()

        return go()
    if guard is not None and not guard.clear and _kept_out(store, site):
        return call()
    return run(flow.refresh(site, store, key, tags, None, background=False), store, call).unwrap()


async def _adone(awaitable: Any) -> None:
    await awaitable


def _check_ttl(ttl: Any, name: str) -> float | Callable[[Any], float] | None:
    if ttl is None:
        return None
    if callable(ttl) and not isinstance(ttl, timedelta):
        return ttl  # type: ignore[no-any-return]
    return to_seconds(ttl, owner=name, param="ttl")


def _check_window(value: Any, name: str, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, timedelta)):
        raise TypeError(f"{name}: {param} must be seconds (int, float or timedelta), got {type(value).__name__}")
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{name}: {param} must be zero or a positive number of seconds, got {value!r}")
    return seconds


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
    store: Any = None,
    key: str | Callable[..., str] | None = None,
    tags: Sequence[str] = (),
    ignore: Sequence[str] = (),
    version: int | str | None = None,
    cache_none: bool = True,
    unless: Callable[[Any], bool] | None = None,
    stale_while_revalidate: float | timedelta = 0,
    stale_if_error: float | timedelta = 0,
    early_refresh: float | None = None,
) -> _Decorator: ...
def cache_aside(
    func: Any = None,
    /,
    *,
    ttl: float | timedelta | Callable[[Any], float] | None = None,
    store: Any = None,
    key: str | Callable[..., str] | None = None,
    tags: Sequence[str] = (),
    ignore: Sequence[str] = (),
    version: int | str | None = None,
    cache_none: bool = True,
    unless: Callable[[Any], bool] | None = None,
    stale_while_revalidate: float | timedelta = 0,
    stale_if_error: float | timedelta = 0,
    early_refresh: float | None = None,
) -> Any:
    """Cache a read function's results (cache-aside): look up, fall through on a miss, store with a ttl.

    Usable bare (``@cache_aside``) or called (``@cache_aside(ttl=60)``), above
    functions, ``async def`` functions, methods, ``@classmethod`` and ``@staticmethod``.

    Args:
        ttl: seconds, a ``timedelta``, or ``ttl(result) -> seconds``; None means the configured default.
        store: where entries live; None means the configured default store, looked up at call time.
        key: a ``str.format`` template over the parameters, or a callable returning the key's text.
        tags: templates of tags stored with each entry, for ``@invalidates(tags=...)``.
        ignore: parameters left out of the key.
        version: part of every key; bump it when the function's output changes meaning.
        cache_none: cache ``None`` results (a cached ``None`` is a hit).
        unless: ``unless(result) -> True`` keeps that result out of the cache.
        stale_while_revalidate: seconds past ttl a stale value is served while one refresh runs.
        stale_if_error: seconds past ttl a stale value replaces an exception of the function.
        early_refresh: XFetch beta; recompute before expiry with a rising probability.

    Raises:
        ValueError, TypeError: at decoration time, for a bad ttl, window, template or store.
    """

    def decorate(fn: Any) -> Any:
        raw = fn
        binding = "function"
        if isinstance(fn, classmethod):
            raw, binding = fn.__func__, "classmethod"
        elif isinstance(fn, staticmethod):
            raw, binding = fn.__func__, "staticmethod"
        if not callable(raw):
            raise TypeError(f"@cache_aside decorates functions and methods, got {type(fn).__name__}")
        name = f"{raw.__module__}.{raw.__qualname__}"
        is_async = inspect.iscoroutinefunction(raw)
        if key is not None and not isinstance(key, str) and not callable(key):
            raise TypeError(f"{name}: key= must be a str.format template or a callable, got {type(key).__name__}")
        if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
            raise TypeError(f"{name}: version= must be an int or a str, got {type(version).__name__}")
        if early_refresh is not None and (
            isinstance(early_refresh, bool) or not isinstance(early_refresh, (int, float)) or early_refresh <= 0
        ):
            raise ValueError(f"{name}: early_refresh= must be a positive float (XFetch beta, 1.0 is typical)")
        for what, value in (("cache_none", cache_none),):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: {what}= must be True or False")
        if unless is not None and not callable(unless):
            raise TypeError(f"{name}: unless= must be a callable unless(result) -> bool")
        keys = KeyBuilder(
            raw,
            name=name,
            ignore=list(ignore),
            template=key if isinstance(key, str) else None,
            key_fn=key if callable(key) else None,
            version=version,
        )
        param_names = [p.name for p in keys.params]
        for t in tags:
            for fld in template_fields(t):
                if fld not in param_names:
                    raise ValueError(
                        f"{name}: tag template {t!r} has the field {{{fld}}}, which names no parameter; "
                        f"use one of {param_names}."
                    )
        if store is not None:
            _check_store(store, is_async, name)
        site = CallSite(
            name=name,
            keys=keys,
            ttl=_check_ttl(ttl, name),
            cache_none=cache_none,
            unless=unless,
            tags=tuple(tags),
            stale_while_revalidate=_check_window(stale_while_revalidate, name, "stale_while_revalidate"),
            stale_if_error=_check_window(stale_if_error, name, "stale_if_error"),
            early_refresh=None if early_refresh is None else float(early_refresh),
        )
        return _Cached(fn, _Reader(raw, site, store, is_async, binding))

    if func is not None:
        return decorate(func)
    return decorate


# --------------------------------------------------------------------------- writes


class _Target:
    """One read function a writer evicts, and how the writer supplies its key parameters."""

    def __init__(self, reader: _Reader, owner: Any) -> None:
        self.reader = reader
        self.owner = owner  # the class a classmethod target was reached through, if any
        self.skip = reader.skip_for_writer()

    def key(self, store: Any, writer_instance: Any, mapping: dict[str, Any]) -> str:
        instance = None
        if self.skip:
            if self.reader.binding == "classmethod":
                instance = self.owner
                if instance is None and writer_instance is not None:
                    instance = writer_instance if isinstance(writer_instance, type) else type(writer_instance)
            else:
                instance = writer_instance
        keys = self.reader.site.keys
        if keys.template is not None:
            values = dict(mapping)
            if self.skip and keys.params:
                values[keys.params[0].name] = instance
            for p in keys.params:
                if p.name not in values and p.default is not p.empty:
                    values[p.name] = p.default
            return keys.render(store.prefix, values)
        return keys.build_from_mapping(store.prefix, instance, self.skip and instance is not None, mapping)


def _as_target(obj: Any, writer: str) -> _Target:
    if isinstance(obj, _Cached):
        return _Target(obj._self_reader, None)
    if isinstance(obj, _BoundCached):
        owner = getattr(obj.__wrapped__, "__self__", None) if obj._self_binding == "classmethod" else None
        return _Target(obj._self_parent._self_reader, owner)
    raise TypeError(
        f"{writer}: @invalidates targets must be functions decorated with @cache_aside, "
        f"got {type(obj).__name__}; evict other entries with tags= or keys=."
    )


def _check_target(target: _Target, writer: str, writer_params: set[str], writer_is_async: bool) -> None:
    reader = target.reader
    keys = reader.site.keys
    tname = reader.site.name
    if keys.key_fn is not None:
        needed = [
            p.name
            for p in inspect.signature(keys.key_fn).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    elif keys.template is not None:
        defaults = {p.name for p in keys.params if p.default is not p.empty}
        first = keys.params[0].name if target.skip and keys.params else None
        needed = [f for f in template_fields(keys.template) if f not in defaults and f != first]
    else:
        needed = [
            p.name
            for p in keys.key_params(target.skip)
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    for pname in needed:
        if pname not in writer_params:
            raise ValueError(
                f"{writer} cannot supply parameter {pname!r} of its target {tname}: the writer has no "
                f"parameter of that name. Add it to the writer, or evict by tags (tags= on both "
                f"decorators) or explicit keys (keys=)."
            )
    if not writer_is_async and reader.store is not None and not getattr(reader.store, "serves_sync", False):
        raise ValueError(
            f"{writer} is a sync function but its target {tname} lives on an async-only store, which "
            "a sync writer cannot evict from; make the writer async, or give the target a store that "
            "serves sync code."
        )


class _Writer:
    def __init__(
        self,
        func: Callable[..., Any],
        binding: str,
        targets: list[_Target],
        tags: tuple[str, ...],
        keys_fn: Callable[..., Iterable[str]] | None,
        store: Any,
        is_async: bool,
    ) -> None:
        self.name = f"{func.__module__}.{func.__qualname__}"
        self.arguments = ArgMap(inspect.signature(func))
        self.binding = binding
        self.targets = targets
        self.tags = tags
        self.keys_fn = keys_fn
        self.store = store
        self.is_async = is_async

    def plan(
        self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[Any, tuple[list[str], list[str]]]:
        """What to evict, per store: built before the write runs, from the arguments as passed."""
        if self.binding == "staticmethod":
            instance = None
        mapping = self.arguments(instance is not None, args, kwargs)
        evictions: dict[Any, tuple[list[str], list[str]]] = {}
        for target in self.targets:
            store = target.reader.resolve_store()
            if not self.is_async and not getattr(store, "serves_sync", False):
                raise TypeError(
                    f"{self.name} is a sync function but its target {target.reader.site.name} lives on an "
                    "async-only store; make the writer async."
                )
            evictions.setdefault(store, ([], []))[0].append(target.key(store, instance, mapping))
        extra_keys = list(self.keys_fn(*args, **kwargs)) if self.keys_fn is not None else []
        tags = [_FORMATTER.vformat(t, (), mapping) for t in self.tags]
        if tags or extra_keys:
            stores = [self.store] if self.store is not None else (list(evictions) or [settings.default_store()])
            for store in stores:
                keys, tag_list = evictions.setdefault(store, ([], []))
                keys.extend(extra_keys)
                tag_list.extend(tags)
        return evictions

    def on_failure(self, failure: Failure) -> None:
        for target in self.targets:
            target.reader.site.store_failed(failure, "delete")
            return
        flow.logger.warning("%s: eviction failed (%s)", self.name, type(failure.exc).__name__)


def _make_writer_wrapper(writer: _Writer) -> Callable[..., Any]:
    if writer.is_async:

        async def awrapper(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if settings.disabled:
                return await wrapped(*args, **kwargs)
            evictions = writer.plan(instance, args, kwargs)
            try:
                return await wrapped(*args, **kwargs)
            finally:
                for store, (keys, tags) in evictions.items():
                    await aevict(store, keys, tags, writer.on_failure)

        return awrapper

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if settings.disabled:
            return wrapped(*args, **kwargs)
        evictions = writer.plan(instance, args, kwargs)
        try:
            return wrapped(*args, **kwargs)
        finally:
            for store, (keys, tags) in evictions.items():
                evict(store, keys, tags, writer.on_failure)

    return wrapper


def invalidates(
    *targets: Any,
    tags: Sequence[str] = (),
    keys: Callable[..., Iterable[str]] | None = None,
    store: Any = None,
) -> Callable[[F], F]:
    """Evict related cache entries whenever the decorated write function runs (also when it raises).

    Args:
        *targets: ``@cache_aside`` functions; each one's key is built from the writer's
            arguments, matched by parameter name.
        tags: templates over the writer's parameters; every entry stored with one of them is evicted.
        keys: ``keys(*args, **kwargs) -> iterable of full key names`` to evict.
        store: where ``tags`` and ``keys`` are evicted (default: the targets' stores, else the default store).

    Raises:
        ValueError: at decoration time, when the writer cannot supply a target's key parameter.
    """
    if keys is not None and not callable(keys):
        raise TypeError(f"@invalidates: keys= must be a callable returning key names, got {type(keys).__name__}")

    def decorate(fn: F) -> F:
        raw: Any = fn
        binding = "function"
        if isinstance(fn, classmethod):
            raw, binding = fn.__func__, "classmethod"
        elif isinstance(fn, staticmethod):
            raw, binding = fn.__func__, "staticmethod"
        name = f"{raw.__module__}.{raw.__qualname__}"
        is_async = inspect.iscoroutinefunction(raw)
        resolved = [_as_target(t, name) for t in targets]
        params = list(inspect.signature(raw).parameters)
        writer_params = set(params)
        for target in resolved:
            _check_target(target, name, writer_params, is_async)
        for t in tags:
            for fld in template_fields(t):
                if fld not in writer_params:
                    raise ValueError(
                        f"{name}: tag template {t!r} has the field {{{fld}}}, which names no parameter "
                        f"of the writer; use one of {params}."
                    )
        if store is not None:
            _check_store(store, is_async, name)
        writer = _Writer(raw, binding, resolved, tuple(tags), keys, store, is_async)
        wrapped: Any = wrapt.FunctionWrapper(fn, _make_writer_wrapper(writer))
        return wrapped  # type: ignore[no-any-return]

    return decorate


def invalidate_tags(*tags: str, store: Any = None) -> None:
    """Evict every entry stored with one of ``tags`` (plain tag names, not templates)."""
    target = store if store is not None else settings.default_store()
    evict(target, [], list(tags), _log_failure)


async def ainvalidate_tags(*tags: str, store: Any = None) -> None:
    """``invalidate_tags`` for async stores."""
    target = store if store is not None else settings.default_store()
    await aevict(target, [], list(tags), _log_failure)


def _log_failure(failure: Failure) -> None:
    flow.logger.warning("tag eviction failed (%s)", type(failure.exc).__name__)

