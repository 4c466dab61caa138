"""Evictions after commit for SQLAlchemy 2.x sessions, sync and asyncio (``pip install 'cacheaside[sqlalchemy]'``).

    from cacheaside.integrations.sqlalchemy import evict_after_commit
    evict_after_commit()                  # every Session, the ones behind AsyncSession too

An eviction asked for (``@invalidates``, ``f.invalidate``, ``f.clear``, ``invalidate_tags``) while a
session's transaction is open in the same thread or asyncio task is applied at once, and noted in
that session's innermost transaction (a savepoint, or the root). A savepoint released hands what it
noted to its parent; one rolled back drops it; the outermost commit applies everything again, so
that a reader that re-cached the old row between the write and the commit is overruled. A rollback
of the whole transaction applies nothing more.

SQLAlchemy's ``after_commit`` fires for a savepoint's release too: only the outermost commit
(``Session.in_nested_transaction()`` false) applies. A session's transaction begins when the session
is first used (``after_transaction_create``), before any SQL, so a write that only adds objects for
the commit to flush is covered too.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from ..transactions import Noted, again, applying, listen, owner, unlisten

__all__ = ["AfterCommit", "evict_after_commit"]

_KEY = "cacheaside.after_commit"

#: Sessions with a transaction open (weakly: a session dropped with one open commits nothing).
_OPEN: weakref.WeakSet[Session] = weakref.WeakSet()


class _Noted:
    """What one session noted, per transaction (root or savepoint), and who opened it."""

    def __init__(self) -> None:
        self.owner = weakref.ref(owner())
        self.by_transaction: dict[SessionTransaction, list[Noted]] = {}


def _created(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info[_KEY] = _Noted()
        _OPEN.add(session)


def _note(store: Any, keys: Collection[str], tags: Collection[str]) -> None:
    if applying.get() or not (keys or tags):
        return
    me = owner()
    for session in list(_OPEN):
        noted = session.info.get(_KEY)
        if noted is None or noted.owner() is not me:
            continue
        transaction = session.get_nested_transaction() or session.get_transaction()
        if transaction is not None:
            noted.by_transaction.setdefault(transaction, []).append((store, tuple(keys), tuple(tags)))


def _committed(session: Session) -> None:
    noted = session.info.get(_KEY)
    if noted is None:
        return
    if session.in_nested_transaction():  # a savepoint released: its parent owns what it noted
        savepoint = session.get_nested_transaction()
        moved = noted.by_transaction.pop(savepoint, []) if savepoint is not None else []
        if moved and savepoint is not None and savepoint.parent is not None:
            noted.by_transaction.setdefault(savepoint.parent, []).extend(moved)
        return
    everything = [n for part in noted.by_transaction.values() for n in part]
    noted.by_transaction.clear()
    if everything:
        again(everything, "a SQLAlchemy commit")


def _ended(session: Session, transaction: SessionTransaction) -> None:
    noted = session.info.get(_KEY)
    if noted is None:
        return
    noted.by_transaction.pop(transaction, None)  # rolled back (a released one was handed on already)
    if transaction.parent is None:
        session.info.pop(_KEY, None)
        _OPEN.discard(session)


class AfterCommit:
    """The listeners ``evict_after_commit`` installed; ``remove()`` takes them off."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self._events: list[tuple[str, Callable[..., Any]]] = [
            ("after_transaction_create", _created), ("after_commit", _committed), ("after_transaction_end", _ended)]
        for name, fn in self._events:
            if not event.contains(target, name, fn):
                event.listen(target, name, fn)
        listen(_note)

    def remove(self) -> None:
        for name, fn in self._events:
            if event.contains(self.target, name, fn):
                event.remove(self.target, name, fn)
        unlisten(_note)


def evict_after_commit(target: Any = Session) -> AfterCommit:
    """Apply evictions made inside a transaction again after its outermost commit.

    Args:
        target: the sessions to follow: the ``Session`` class (the default: every session, the ones
            ``AsyncSession`` drives included), a ``Session`` subclass or a ``sessionmaker``.
    """
    return AfterCommit(target)
