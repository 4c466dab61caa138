"""``@invalidates`` for writes, and ``invalidate_tags`` / ``ainvalidate_tags`` outside decorators.

A writer runs first, then evicts (also when it raised): its targets' keys from its own
arguments (the key builder of each target says how, ``KeyBuilder.for_writer``), its tags,
and its explicit keys, one eviction per store. Working out what to evict never stops the
write: a key that cannot be built is logged and counted, and the rest is still evicted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import wrapt

from ._arguments import ArgMap
from ._binding import site_of
from ._settings import settings
from ._site import CLEAR_MARK, CallSite, check_store
from .evictions import aevict, evict, owe
from .exceptions import warn
from .flow import Failure
from .keys import WriterKey, check_template, class_qualname, render_tag
from .reads import describe
from .stores.base import StoreInfo

__all__ = ["ainvalidate_tags", "invalidate_tags", "invalidates"]

logger = logging.getLogger("cacheaside")

F = TypeVar("F", bound=Callable[..., Any])

#: Per store: the keys and tags to evict, and the call sites whose entries they are.
Plan = dict[Any, tuple[list[str], list[str], list[CallSite]]]


class _Unfit(TypeError):
    """What a writer cannot evict, and why, in words of the library's own (safe to log whole)."""


def _site_of(obj: Any) -> CallSite:
    site = site_of(obj)
    if site is not None:
        return site
    hint = ""
    if callable(obj) and not isinstance(obj, type):
        hint = " (a bare @invalidates above a function? write @invalidates(target, ...) with its targets)"
    raise TypeError(
        f"@invalidates targets must be functions decorated with @cache_aside, got {type(obj).__name__}{hint}; "
        "evict other entries with tags= or keys=."
    )


class _Writer:
    """Everything one ``@invalidates`` needs at call time."""

    def __init__(self, name: str, signature: inspect.Signature, binding: str, targets: list[tuple[CallSite, WriterKey]],
                 tags: tuple[str, ...], keys_fn: Callable[..., Any] | None, store: Any, is_async: bool) -> None:
        self.name = name
        self.arguments = ArgMap(signature, name=name)
        self.binding = binding
        self.targets = targets
        self.tags = tags
        self.keys_fn = keys_fn
        self.store = store
        self.is_async = is_async
        self._prefix_warned = False

    def plan(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan:
        """What to evict, per store, from the arguments as passed (before the write can change them)."""
        if self.binding == "staticmethod":
            instance = None
        plan: Plan = {}
        try:
            mapping = self.arguments(instance is not None, args, kwargs)
        except Exception:  # arguments the writer itself will refuse: nothing to evict
            return plan
        for site, key_of in self.targets:
            try:
                store = site.resolve_store()
                self._check(store)
                key = key_of(store.prefix, instance, mapping)
            except Exception as exc:
                self._failed(exc, f"the key of {site.name}", [site])
                continue
            entry = plan.setdefault(store, ([], [], []))
            entry[0].append(key)
            entry[2].append(site)
            site.counters.evictions += 1
        extra: list[str] = []
        if self.keys_fn is not None:
            sites = [site for site, _ in self.targets]
            try:
                returned = self.keys_fn(*args, **kwargs)
                returned = [returned] if isinstance(returned, str) else list(returned)  # one key, not its chars
            except Exception as exc:
                self._failed(exc, "keys=", sites)
                returned = []
            extra = [k for k in returned if isinstance(k, str)]
            if len(extra) < len(returned):  # the others are still evicted
                self._failed(TypeError("keys= returned something other than key names (str)"), "keys=", sites)
        tags: list[str] = []
        for template in self.tags:
            try:
                tag = render_tag(template, mapping, self.name)
                if tag.startswith(CLEAR_MARK):  # a value forging a function's own tag (f.clear()'s)
                    raise ValueError("a tag that starts with NUL")
                tags.append(tag)
            except Exception as exc:
                self._failed(exc, f"the tag {template!r}", [site for site, _ in self.targets])
        if tags or extra:
            stores = [self.store] if self.store is not None else (list(plan) or [settings.default_store()])
            for store in stores:
                try:
                    self._check(store)
                except _Unfit as exc:
                    self._failed(exc, "tags= and keys=", [site for site, _ in self.targets])
                    continue
                keys, tag_list, _ = plan.setdefault(store, ([], [], []))
                keys.extend(extra)
                tag_list.extend(tags)
                if not self._prefix_warned and any(not k.startswith(store.prefix + ":") for k in extra):
                    self._prefix_warned = True
                    warn(
                        f"{self.name}: keys= returned a key outside {store!r}, whose keys start with "
                        f"{store.prefix + ':'!r}, so it evicts nothing there; return full key names, as "
                        "f.key(...) gives them."
                    )
        return plan

    def _check(self, store: Any) -> None:
        if not self.is_async and not store.nonblocking and not store.serves_sync:
            raise _Unfit(f"{store!r} serves async code only: make {self.name} async to evict from it")

    def _failed(self, exc: Exception, what: str, sites: list[CallSite]) -> None:
        for site in sites:
            site.counters.errors += 1
        # The type only: the message of a user's callable can carry argument values. Ours says why.
        why = str(exc) if isinstance(exc, _Unfit) else type(exc).__name__
        logger.warning("%s: could not work out %s to evict (%s); the write ran, and those entries stay until "
                       "their TTL", self.name, what, why)

    def on_failure(self, sites: list[CallSite]) -> Callable[[Failure], None]:
        """How a failed eviction on one store is counted: on the call sites whose entries it held."""
        def failed(failure: Failure) -> None:
            for site in sites:
                site.counters.errors += 1
        return failed


class _WriterWrapper(wrapt.FunctionWrapper[..., Any]):
    """A write function decorated with ``@invalidates``."""

    def __init__(self, wrapped: Any, writer: _Writer) -> None:
        super().__init__(wrapped, _make_wrapper(writer))
        self._self_writer = writer

    def __set_name__(self, owner: type, name: str) -> None:
        super().__set_name__(owner, name)  # type: ignore[misc]  # wrapt's, missing from its stubs
        writer: _Writer = self._self_writer
        for site, _ in writer.targets:
            site.keys.check_writer_class(writer.name, owner)


def _make_wrapper(writer: _Writer) -> Callable[..., Any]:
    if writer.is_async:

        async def awrapper(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if settings.disabled:
                return await wrapped(*args, **kwargs)
            plan = writer.plan(instance, args, kwargs)
            try:
                return await wrapped(*args, **kwargs)
            finally:
                items = list(plan.items())
                for i, (store, (keys, tags, sites)) in enumerate(items):
                    try:
                        await aevict(store, keys, tags, writer.on_failure(sites), where=writer.name)
                    except asyncio.CancelledError:
                        for later, (k, t, _) in items[i + 1:]:  # never lost to a cancellation: owed
                            owe(later, k, t)
                        raise

        return awrapper

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if settings.disabled:
            return wrapped(*args, **kwargs)
        plan = writer.plan(instance, args, kwargs)
        try:
            return wrapped(*args, **kwargs)
        finally:
            for store, (keys, tags, sites) in plan.items():
                evict(store, keys, tags, writer.on_failure(sites), where=writer.name)

    return wrapper


def invalidates(
    *targets: Any,
    tags: Sequence[str] = (),
    keys: Callable[..., Iterable[str] | str] | None = None,
    store: StoreInfo | None = None,
) -> Callable[[F], F]:
    """Evict related cache entries whenever the decorated write function runs (also when it raises).

    Args:
        *targets: ``@cache_aside`` functions; each one's key is built from the writer's
            arguments, matched by parameter name.
        tags: templates over the writer's parameters; every entry stored with one of them is evicted.
        keys: ``keys(*args, **kwargs) -> key names (or one key name)`` to evict.
        store: where ``tags`` and ``keys`` are evicted (default: the targets' stores, else the default store).

    Raises:
        TypeError, ValueError: at decoration time, for a target that is not a cached function,
            a writer that cannot supply a target's key parameter, or nothing to evict.
    """
    sites = [_site_of(t) for t in targets]
    if isinstance(tags, (str, bytes)):
        raise TypeError(f"@invalidates: tags= must be a list of templates, got a str; write tags=[{tags!r}]")
    if keys is not None and not callable(keys):
        raise TypeError(f"@invalidates: keys= must be a callable returning key names, got {type(keys).__name__}")
    if not targets and not tags and keys is None:
        raise ValueError("@invalidates() has nothing to evict: give it targets, tags= or keys=")

    def decorate(fn: F) -> F:
        raw, binding, name, is_async = describe(fn, "@invalidates")
        signature = inspect.signature(raw)
        params = list(signature.parameters)
        kind = "method" if binding == "function" and class_qualname(raw) is not None else binding
        supplies = set(params[1:] if kind in ("method", "classmethod") else params)
        resolved = []
        for site in sites:
            resolved.append((site, site.keys.for_writer(name, supplies, kind)))
            if not is_async and site.store is not None and not site.store.serves_sync:
                raise ValueError(
                    f"{name} is a sync function but its target {site.name} lives on an async-only store, which "
                    "a sync writer cannot evict from; make the writer async, or give the target a store that "
                    "serves sync code."
                )
        for t in tags:
            check_template(t, params, name, "tag template")
        if store is not None:
            check_store(store, is_async, name)
        writer = _Writer(name, signature, binding, resolved, tuple(tags), keys, store, is_async)
        return _WriterWrapper(fn, writer)  # type: ignore[return-value]

    return decorate


def _tag_store(tags: tuple[Any, ...], store: Any, is_async: bool) -> Any:
    caller = "ainvalidate_tags()" if is_async else "invalidate_tags()"
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(
                f"{caller} takes each tag as a str argument ({caller[:-1]}'a', 'b')), got {type(tag).__name__}"
            )
        if tag.startswith(CLEAR_MARK):
            raise ValueError(f"{caller}: tags that start with NUL are reserved (each function's own tag, which "
                             "f.clear() evicts); call f.clear() to evict every entry of a function")
    target = store if store is not None else settings.default_store()
    try:
        check_store(target, is_async, caller)
    except TypeError:
        other = "invalidate_tags()" if is_async else "await ainvalidate_tags()"
        raise TypeError(f"{caller}: {target!r} serves {'sync' if is_async else 'async'} code only; use {other}") \
            from None
    return target


def _log_failure(failure: Failure) -> None:
    """A tag eviction that failed: the store's guard logs the incident, and it is owed."""


def invalidate_tags(*tags: str, store: StoreInfo | None = None) -> None:
    """Evict every entry stored with one of ``tags`` (the formatted tags, as ``tags=`` rendered them)."""
    target = _tag_store(tags, store, is_async=False)
    evict(target, [], list(tags), _log_failure, where="invalidate_tags()")


async def ainvalidate_tags(*tags: str, store: StoreInfo | None = None) -> None:
    """``invalidate_tags`` for async stores."""
    target = _tag_store(tags, store, is_async=True)
    await aevict(target, [], list(tags), _log_failure, where="ainvalidate_tags()")
