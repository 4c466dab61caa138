"""Evictions after commit with Django (``transaction.atomic`` and ``on_commit``), a project configured in
code on a SQLite file in WAL mode: the writes go through the ``default`` connection, the cached reader
reads through a second alias on the same file (so it sees only what was committed)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from cacheaside import MemoryStore, cache_aside, invalidates

_DB = Path(tempfile.mkdtemp(prefix="cacheaside-django-")) / "app.sqlite"

if not settings.configured:
    settings.configure(
        DATABASES={alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(_DB)}
                   for alias in ("default", "reader")},
        INSTALLED_APPS=["cacheaside.integrations.django.CacheasideConfig"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

from django.db import connections, transaction  # noqa: E402  (after settings)

from cacheaside.integrations import django as integration  # noqa: E402


@pytest.fixture
def table() -> Iterator[None]:
    with connections["default"].cursor() as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("DROP TABLE IF EXISTS users")
        c.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        c.execute("INSERT INTO users VALUES (1, 'old')")
    yield
    for alias in ("default", "reader"):
        connections[alias].close()


class App:
    def __init__(self) -> None:
        self.reads = 0

        @cache_aside(ttl=60, store=MemoryStore())
        def name(user_id: int) -> str:
            self.reads += 1
            with connections["reader"].cursor() as c:
                c.execute("SELECT name FROM users WHERE id = %s", [user_id])
                return str(c.fetchone()[0])

        @invalidates(name)
        def rename(user_id: int, new: str) -> None:
            with connections["default"].cursor() as c:
                c.execute("UPDATE users SET name = %s WHERE id = %s", [new, user_id])

        self.name, self.rename = name, rename


def _race(app: App) -> None:
    assert app.name(1) == "old"
    app.rename(1, "new")  # evicts at once
    assert app.name(1) == "old"  # a reader before the commit re-caches the old row


@pytest.mark.usefixtures("table")
def test_the_app_config_turns_it_on_and_a_read_after_commit_gives_the_new_row() -> None:
    assert integration._note in __import__("cacheaside").evictions.EVICTION_LISTENERS  # ready() ran
    app = App()
    with transaction.atomic():
        _race(app)
    assert app.name(1) == "new"


@pytest.mark.usefixtures("table")
def test_without_it_the_old_row_survives_the_commit() -> None:
    integration.stop()
    try:
        app = App()
        with transaction.atomic():
            _race(app)
        assert app.name(1) == "old"
    finally:
        integration.evict_after_commit()


@pytest.mark.usefixtures("table")
def test_a_rolled_back_block_evicts_nothing_after() -> None:
    app = App()
    with pytest.raises(RuntimeError), transaction.atomic():
        _race(app)
        raise RuntimeError("roll back")
    reads = app.reads
    assert app.name(1) == "old" and app.reads == reads


@pytest.mark.usefixtures("table")
def test_a_rolled_back_savepoint_drops_its_eviction_and_the_outer_commit_applies_the_rest() -> None:
    app = App()
    assert app.name(1) == "old"
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint, rolled back
            app.rename(1, "dropped")
            raise RuntimeError("roll back the savepoint")
        assert app.name(1) == "old"
        reads = app.reads
    assert app.name(1) == "old" and app.reads == reads  # nothing applied after the commit
    with transaction.atomic():
        with transaction.atomic():  # a savepoint, released
            app.rename(1, "new")
            assert app.name(1) == "old"
        assert app.name(1) == "old"
    assert app.name(1) == "new"


@pytest.mark.usefixtures("table")
def test_outside_a_transaction_an_eviction_is_made_once() -> None:
    app = App()
    assert app.name(1) == "old"
    app.rename(1, "new")  # autocommit: visible at once, evicted at once, nothing queued
    assert app.name(1) == "new"
    assert not connections["default"].run_on_commit


def test_an_eviction_after_commit_never_raises_into_the_committing_code(monkeypatch: pytest.MonkeyPatch,
                                                                       table: Any) -> None:
    app = App()
    assert app.name(1) == "old"

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a store that breaks")

    with transaction.atomic():
        app.rename(1, "new")
        monkeypatch.setattr("cacheaside.transactions.evict", broken)
    assert app.name(1) == "new"  # the eviction at once stood; the commit did not raise
