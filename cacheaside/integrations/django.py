"""Evictions after commit for Django (``pip install 'cacheaside[django]'``).

    INSTALLED_APPS = [..., "cacheaside.integrations.django.CacheasideConfig"]     # or, at start-up:
    from cacheaside.integrations.django import evict_after_commit; evict_after_commit()

An eviction asked for inside ``transaction.atomic`` is applied at once, and again through
``transaction.on_commit(..., robust=True)`` on every connection of this thread with an atomic block
open: Django runs it after the outermost commit, drops it when the block (or the savepoint it was
made in) rolls back, and logs rather than raises if it fails (it never fails: a store that is down
owes the eviction).
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from django.apps import AppConfig
from django.db import connections, transaction

from ..transactions import again, applying, listen, unlisten

__all__ = ["CacheasideConfig", "evict_after_commit", "stop"]


def _note(store: Any, keys: Collection[str], tags: Collection[str]) -> None:
    if applying.get() or not (keys or tags):
        return
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            later = functools.partial(again, [(store, tuple(keys), tuple(tags))], "a Django commit")
            transaction.on_commit(later, using=connection.alias, robust=True)


def evict_after_commit() -> None:
    """Apply evictions made inside ``transaction.atomic`` again after its outermost commit."""
    listen(_note)


def stop() -> None:
    """Stop applying evictions after commit (tests)."""
    unlisten(_note)


class CacheasideConfig(AppConfig):  # type: ignore[misc]  # Django ships no types
    """``"cacheaside.integrations.django.CacheasideConfig"`` in ``INSTALLED_APPS`` turns evictions after
    commit on (``ready``)."""

    name = "cacheaside.integrations.django"
    label = "cacheaside"
    verbose_name = "cacheaside"

    def ready(self) -> None:
        evict_after_commit()
