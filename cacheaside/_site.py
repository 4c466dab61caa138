"""``CallSite``: one decorated read function as the flows and drivers see it, and how it reports trouble.

What it is: its name, key builder, read policy, tag templates, store (or the configured
default, resolved per call) and counters. How it reports: a counter for every survived
problem; a ``CacheWarning`` once per call site for what the user must fix in code (a value
the serializer refuses, a ``ttl`` callable that returns no seconds), attributed to the
decorated function; a log line per incident for background refreshes that fail. Store
outages are logged per store, by its ``Guard``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ._settings import settings
from ._types import CLEAR_MARK
from .exceptions import SerializationError, warn
from .keys import KeyBuilder
from .policy import ReadPolicy
from .stats import Counters
from .stores.base import StoreInfo

__all__ = ["CLEAR_MARK", "LOAD_LISTENERS", "RETIRED", "SITES", "CallSite", "check_store"]

#: Every live call site, for the metrics exporters (``cacheaside.metrics``), which read their counters.
SITES: weakref.WeakSet[CallSite] = weakref.WeakSet()
#: What call sites that were dropped counted, per namespace: exported counters never go down.
RETIRED: dict[str, Counters] = {}
#: Told of every computation (namespace, seconds, whether it raised): exporters that cannot read a
#: histogram when asked (OpenTelemetry's are synchronous). Empty unless one is on; misses only.
LOAD_LISTENERS: list[Callable[[str, float, bool], None]] = []

logger = logging.getLogger("cacheaside")


def _retire(namespace: str, counters: Counters) -> None:
    RETIRED.setdefault(namespace, Counters()).add(counters)


def _key_kind(keys: KeyBuilder) -> str:
    if keys.template is not None:
        return "|" + keys.template
    if keys.key_fn is not None:
        fn = keys.key_fn
        return f"|{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    return ""


def check_store(store: Any, is_async: bool, name: str) -> None:
    """Refuse what is not a store, or a store of the wrong kind for the function."""
    if not isinstance(store, StoreInfo):
        raise TypeError(
            f"{name}: store must be a store (MemoryStore(), RedisStore.from_url(url)), got {type(store).__name__}"
        )
    if is_async and not store.serves_async:
        raise TypeError(
            f"{name} is an async function but its store {store!r} serves sync functions only; "
            "give it an async store, e.g. RedisStore.from_url(url, asyncio=True), or a MemoryStore()."
        )
    if not is_async and not store.serves_sync:
        raise TypeError(
            f"{name} is a sync function but its store {store!r} serves async functions only; "
            "give it a sync store, e.g. RedisStore.from_url(url), or a MemoryStore()."
        )


class CallSite:
    """Everything one ``@cache_aside`` needs at call time."""

    def __init__(
        self,
        *,
        name: str,
        keys: KeyBuilder,
        policy: ReadPolicy,
        tags: Sequence[str],
        store: Any,
        is_async: bool,
        location: tuple[str, int, str] | None,
    ) -> None:
        self.name = name
        self.keys = keys
        self.policy = policy
        self.tags = tuple(tags)
        #: The tag every entry of this function is stored with (``f.clear()`` evicts it): a NUL (which
        #: ``invalidate_tags`` and writers refuse in a tag), the namespace, and the key template or key
        #: callable (two functions of one name told apart by ``key=`` clear apart too).
        self.clear_tag = CLEAR_MARK + keys.namespace + _key_kind(keys)
        self.own_tags = (self.clear_tag,)
        #: The store given at decoration, or None for the configured default (resolved per call).
        self.store = store
        self.is_async = is_async
        #: Where the decorated function is defined: the location of its warnings.
        self.location = location
        self.counters = Counters()
        self._checked: Any = store
        self._warned: set[str] = set()
        self._refresh_failing = False
        SITES.add(self)
        weakref.finalize(self, _retire, keys.namespace, self.counters).atexit = False

    def __repr__(self) -> str:
        return f"CallSite({self.name})"

    def fixed_tags(self) -> tuple[str, ...]:
        """The tags of a call when the function has no tag templates: its own tag only."""
        return self.own_tags

    def resolve_store(self) -> Any:
        """The store of this call: the one given at decoration, else the configured default."""
        store = self.store if self.store is not None else settings.default_store()
        if store is not self._checked:
            check_store(store, self.is_async, self.name)
            self._checked = store
        return store

    def loaded(self, seconds: float, failed: bool) -> None:
        """A computation ran (on a miss or a refresh): counted, and told to the exporters that ask."""
        self.counters.loaded(seconds, failed)
        for listener in LOAD_LISTENERS:
            try:
                listener(self.keys.namespace, seconds, failed)
            except Exception:  # an exporter's trouble is never the caller's
                logger.exception("%s: a metrics exporter failed to record a computation", self.name)

    # -- reports: a counter always; a warning once; a log line per incident ------------

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warn(f"{self.name}: {message}", at=self.location)

    def store_failed(self, exc: BaseException) -> None:
        """A store operation of a call failed (the call carried on without the store)."""
        self.counters.errors += 1
        if isinstance(exc, SerializationError):
            self._warn_once(
                "serialize",
                f"a value could not be cached ({exc}); the call returned it uncached. Return supported "
                "types, give the store a serializer that takes them, or "
                "pass unless= to skip such values.",
            )

    def corrupt(self) -> None:
        """The store held bytes it could not read under the key: a miss, counted as an error."""
        self.counters.errors += 1
        if "corrupt" not in self._warned:
            self._warned.add("corrupt")
            logger.warning("%s: an unreadable entry was found in the store; it is recomputed and overwritten",
                           self.name)

    def bad_ttl(self, exc: BaseException) -> None:
        """``ttl(result)`` (or ``unless``) raised or gave no seconds: the value is returned, not stored."""
        self.counters.errors += 1
        self._warn_once(
            "ttl",
            f"ttl(result) or unless(result) raised or gave no number of seconds ({type(exc).__name__}: {exc}); "
            "the value was returned uncached. Fix that callable (a ttl of 0 or less stores nothing).",
        )

    def refresh_failed(self, exc: BaseException) -> None:
        """A background refresh's function raised: the value it was to replace stays."""
        self.counters.refresh_errors += 1
        if not self._refresh_failing:
            self._refresh_failing = True
            logger.warning("%s: a background refresh failed (%s); the current value stays in place",
                           self.name, type(exc).__name__)

    def refresh_ok(self) -> None:
        if self._refresh_failing:
            self._refresh_failing = False
            logger.info("%s: background refreshes succeed again", self.name)
