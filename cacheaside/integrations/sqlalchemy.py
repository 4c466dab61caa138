"""Evictions after commit for SQLAlchemy 2.x sessions, sync and asyncio (``pip install 'cacheaside[sqlalchemy]'``).

    from cacheaside.integrations.sqlalchemy import evict_after_commit
    evict_after_commit()                  # every Session, the ones behind AsyncSession too

An eviction asked for (``@invalidates``, ``f.invalidate``, ``f.clear``, ``invalidate_tags``) while a
session's transaction is open is applied at once, and noted in that session's innermost transaction
(a savepoint, or the root) when it is asked from where the transaction began: the same thread or
asyncio task, or a task or ``to_thread`` worker started from there after it began (their context is
a copy). A plain thread started elsewhere does not count: write through a session from the thread
(or task) that opened its transaction. A savepoint released hands what it
noted to its parent; one rolled back drops it; the outermost commit applies everything again, so
that a reader that re-cached the old row between the write and the commit is overruled. A rollback
of the whole transaction applies nothing more.

SQLAlchemy's ``after_commit`` fires for a savepoint's release too: only the outermost commit
(``Session.in_nested_transaction()`` false) applies. A session's transaction begins when the session
is first used (``after_transaction_create``), before any SQL, so a write that only adds objects for
the commit to flush is covered too.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from ..transactions import again, applying, listen, owner, unlisten

__all__ = ["AfterCommit", "evict_after_commit"]

_KEY = "cacheaside.after_commit"

#: Sessions with a transaction open (weakly: a session dropped with one open commits nothing).
_OPEN: weakref.WeakSet[Session] = weakref.WeakSet()
#: The sessions whose transaction began in this context, or in one this context was copied from (a task
#: started inside the transaction, ``asyncio.gather``, ``wait_for``, ``to_thread``): theirs too.
_MINE: contextvars.ContextVar[tuple[weakref.ref[Session], ...]] = contextvars.ContextVar("cacheaside_sessions",
                                                                                         default=())

#: Per store: the keys and tags noted (each once: a long transaction holds each key once, and its
#: commit sends one eviction per store).
_PerStore = dict[Any, tuple[dict[str, None], dict[str, None]]]


class _Noted:
    """What one session noted, per transaction (root or savepoint), and who opened it."""

    def __init__(self) -> None:
        self.owner = weakref.ref(owner())
        self.by_transaction: dict[SessionTransaction, _PerStore] = {}


def _created(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info[_KEY] = _Noted()
        _OPEN.add(session)
        alive = tuple(ref for ref in _MINE.get() if (s := ref()) is not None and _KEY in s.info)
        _MINE.set((*alive, weakref.ref(session)))


def _merge(into: _PerStore, part: _PerStore) -> None:
    for store, (keys, tags) in part.items():
        held = into.setdefault(store, ({}, {}))
        held[0].update(keys)
        held[1].update(tags)


def _note(store: Any, keys: Collection[str], tags: Collection[str]) -> None:
    if applying.get() or not (keys or tags):
        return
    mine = {id(s) for ref in _MINE.get() if (s := ref()) is not None}
    me = owner()
    for session in list(_OPEN):
        noted = session.info.get(_KEY)
        if noted is None or (id(session) not in mine and noted.owner() is not me):
            continue
        transaction = session.get_nested_transaction() or session.get_transaction()
        if transaction is not None:
            held = noted.by_transaction.setdefault(transaction, {}).setdefault(store, ({}, {}))
            held[0].update(dict.fromkeys(keys))
            held[1].update(dict.fromkeys(tags))


def _committed(session: Session) -> None:
    noted = session.info.get(_KEY)
    if noted is None:
        return
    if session.in_nested_transaction():  # a savepoint released: its parent owns what it noted
        savepoint = session.get_nested_transaction()
        moved = noted.by_transaction.pop(savepoint, {}) if savepoint is not None else {}
        if moved and savepoint is not None and savepoint.parent is not None:
            _merge(noted.by_transaction.setdefault(savepoint.parent, {}), moved)
        return
    everything: _PerStore = {}
    for part in noted.by_transaction.values():
        _merge(everything, part)
    noted.by_transaction.clear()
    if everything:
        again([(store, tuple(keys), tuple(tags)) for store, (keys, tags) in everything.items()],
              "a SQLAlchemy commit")


def _ended(session: Session, transaction: SessionTransaction) -> None:
    noted = session.info.get(_KEY)
    if noted is None:
        return
    noted.by_transaction.pop(transaction, None)  # rolled back (a released one was handed on already)
    if transaction.parent is None:
        session.info.pop(_KEY, None)
        _OPEN.discard(session)


_EVENTS: list[tuple[str, Callable[..., Any]]] = [
    ("after_transaction_create", _created), ("after_commit", _committed), ("after_transaction_end", _ended)]
#: The integrations on, per target (the same target twice listens once; each ``remove`` undoes its own).
_ON: list[AfterCommit] = []


def _sync_target(target: Any) -> Any:
    """The sync ``Session`` class (or sessionmaker) whose events stand for ``target``: an ``AsyncSession``
    class or an ``async_sessionmaker`` drives sessions of its ``sync_session_class``."""
    sync_class = getattr(target, "sync_session_class", None)  # the AsyncSession class, or a subclass
    if sync_class is not None:
        return sync_class
    kw = getattr(target, "kw", None)
    made = getattr(target, "class_", None)
    if isinstance(kw, dict) and made is not None and hasattr(made, "sync_session_class"):  # async_sessionmaker
        return kw.get("sync_session_class", made.sync_session_class)
    return target


class AfterCommit:
    """The listeners ``evict_after_commit`` installed; ``remove()`` takes them off (and only them)."""

    def __init__(self, target: Any) -> None:
        self.target = _sync_target(target)
        if not any(on.target is self.target for on in _ON):
            for name, fn in _EVENTS:
                event.listen(self.target, name, fn)
        _ON.append(self)
        listen(_note)

    def remove(self) -> None:
        if self not in _ON:
            return
        _ON.remove(self)
        if not any(on.target is self.target for on in _ON):
            for name, fn in _EVENTS:
                if event.contains(self.target, name, fn):
                    event.remove(self.target, name, fn)
        if not _ON:
            unlisten(_note)


def evict_after_commit(target: Any = Session) -> AfterCommit:
    """Apply evictions made inside a transaction again after its outermost commit.

    Args:
        target: the sessions to follow: the ``Session`` class (the default: every session, the ones
            ``AsyncSession`` drives included), a ``Session`` subclass, a ``sessionmaker``, an
            ``AsyncSession`` class or an ``async_sessionmaker``.
    """
    return AfterCommit(target)
