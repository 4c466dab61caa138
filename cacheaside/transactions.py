"""Evictions after commit: what the SQLAlchemy and Django integrations share.

A write inside a database transaction is not visible to readers until the commit, so an
eviction made at write time alone lets a reader re-cache the old row in between (and keep it
for the whole TTL). With an integration on, every eviction the application asks for while a
transaction is open in the same thread or asyncio task is applied at once, as always, and
noted; the integration applies what it noted again after the outermost commit, and drops it
when the transaction (or the savepoint it was noted in) rolls back.

``again`` is that second application: never raises into the committing code. A store that
serves sync code (or never blocks) is evicted from right there; an async store is owed the
eviction, which its next read pays before it looks anything up (and the background replay
sends), so no read that starts after the commit sees the old value either way.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Collection
from typing import Any

from .evictions import EVICTION_LISTENERS, evict, owe
from .flow import Failure

__all__ = ["Noted", "again", "applying", "owner"]

logger = logging.getLogger("cacheaside")

#: One eviction noted in a transaction: (store, keys, tags).
Noted = tuple[Any, tuple[str, ...], tuple[str, ...]]

#: Set while ``again`` applies evictions: the integrations must not note them a second time.
applying: contextvars.ContextVar[bool] = contextvars.ContextVar("cacheaside_applying", default=False)


def owner() -> Any:
    """Who runs now: the current asyncio task, else the current thread (the unit a transaction belongs to)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        task = None
    return task if task is not None else threading.current_thread()


def _failed(failure: Failure) -> None:
    """An eviction after commit that the store did not take: it is owed (the guard logged the incident)."""


def again(noted: Collection[Noted], where: str) -> None:
    """Apply ``noted`` evictions again, after a commit; never raises."""
    token = applying.set(True)
    try:
        for store, keys, tags in noted:
            try:
                if store.nonblocking or store.serves_sync:
                    evict(store, keys, tags, _failed, where=where)
                else:
                    owe(store, keys, tags)  # paid by the store's next read, and by the replay
            except Exception:
                logger.exception("%r: an eviction after %s failed; its entries stay until their TTL", store, where)
    finally:
        applying.reset(token)


def listen(note: Any) -> None:
    """Have ``note(store, keys, tags)`` told of every eviction asked for (once per listener)."""
    if note not in EVICTION_LISTENERS:
        EVICTION_LISTENERS.append(note)


def unlisten(note: Any) -> None:
    if note in EVICTION_LISTENERS:
        EVICTION_LISTENERS.remove(note)
