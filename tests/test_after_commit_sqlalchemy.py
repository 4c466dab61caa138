"""Evictions after commit with SQLAlchemy 2.x, against a real SQLite file (WAL: a reader sees the last
commit while a writer's transaction is open), sync ``Session`` and ``AsyncSession``.

The interleaving each test orders step by step: a write in a transaction evicts; a reader misses
before the commit, reads the old row and caches it; the commit; a read. With the integration the
last read gives the new row; without it, the old one (the bug it fixes)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from cacheaside import MemoryStore, RedisStore, cache_aside, invalidate_tags, invalidates
from cacheaside.integrations.sqlalchemy import evict_after_commit

from .helpers import LOOP
from .redis_server import RedisServer
from .test_faults import make_store


def _wal(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Any]:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.sqlite'}")
    event.listen(engine, "connect", _wal)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"))
        c.execute(text("INSERT INTO users VALUES (1, 'old')"))
    yield engine
    engine.dispose()


@pytest.fixture
def after_commit() -> Iterator[None]:
    handle = evict_after_commit()
    yield
    handle.remove()


class App:
    """A cached reader on its own connection, and writers that take the caller's session."""

    def __init__(self, engine: Any, store: Any) -> None:
        self.reads = 0

        @cache_aside(ttl=60, store=store, tags=["user:{user_id}"])
        def name(user_id: int) -> str:
            self.reads += 1
            with engine.connect() as c:
                return str(c.execute(text("SELECT name FROM users WHERE id = :i"), {"i": user_id}).scalar_one())

        @invalidates(name)
        def rename(session: Session, user_id: int, new: str) -> None:
            session.execute(text("UPDATE users SET name = :n WHERE id = :i"), {"n": new, "i": user_id})

        self.name, self.rename = name, rename


def _race(app: App, session: Session, new: str = "new") -> None:
    assert app.name(1) == "old"
    app.rename(session, 1, new)  # evicts at once
    assert app.name(1) == "old"  # a reader before the commit re-caches the old row


@pytest.mark.usefixtures("after_commit")
def test_a_read_after_the_commit_gives_the_new_row(db: Any) -> None:
    app = App(db, MemoryStore())
    with Session(db) as session:
        _race(app, session)
        session.commit()
    assert app.name(1) == "new"


def test_without_the_integration_the_old_row_survives_the_commit(db: Any) -> None:
    """The bug, shown: what the integration is for."""
    app = App(db, MemoryStore())
    with Session(db) as session:
        _race(app, session)
        session.commit()
    assert app.name(1) == "old"


@pytest.mark.usefixtures("after_commit")
def test_a_rolled_back_write_evicts_nothing_after(db: Any) -> None:
    app = App(db, MemoryStore())
    with Session(db) as session:
        _race(app, session)
        session.rollback()
    reads = app.reads
    assert app.name(1) == "old" and app.reads == reads  # still a hit: nothing was evicted again


@pytest.mark.usefixtures("after_commit")
def test_savepoints_a_released_one_is_applied_a_rolled_back_one_is_not(db: Any) -> None:
    app = App(db, MemoryStore())
    with Session(db) as session:
        assert app.name(1) == "old"
        with session.begin_nested():  # released
            with session.begin_nested() as inner:  # rolled back, inside it
                app.rename(session, 1, "dropped")
                assert app.name(1) == "old"
                inner.rollback()
            assert app.name(1) == "old"
            reads = app.reads
            session.commit()  # the outer commit
        assert app.name(1) == "old" and app.reads == reads  # the rolled-back savepoint's eviction was dropped
    with Session(db) as session:
        with session.begin_nested():
            app.rename(session, 1, "new")
            assert app.name(1) == "old"  # re-cached inside the savepoint
        assert app.name(1) == "old"  # released, not yet committed
        session.commit()
    assert app.name(1) == "new"


@pytest.mark.usefixtures("after_commit")
def test_tag_evictions_and_invalidate_are_applied_after_commit_too(db: Any) -> None:
    store = MemoryStore()
    app = App(db, store)
    with Session(db) as session:
        assert app.name(1) == "old"
        session.execute(text("UPDATE users SET name = 'tagged' WHERE id = 1"))
        invalidate_tags("user:1", store=store)
        assert app.name(1) == "old"
        session.commit()
    assert app.name(1) == "tagged"
    with Session(db) as session:
        session.execute(text("UPDATE users SET name = 'invalidated' WHERE id = 1"))
        app.name.invalidate(1)
        assert app.name(1) == "tagged"
        session.commit()
    assert app.name(1) == "invalidated"


@pytest.mark.usefixtures("after_commit")
def test_a_commit_with_the_store_down_does_not_raise_and_the_eviction_is_owed(db: Any) -> None:
    server = RedisServer("--enable-debug-command", "yes")
    store = make_store(server.url)
    app = App(db, store)
    try:
        with Session(db) as session:
            _race(app, session)
            server.pause()
            session.commit()  # the eviction after commit fails: owed, nothing raised here
        assert store.guard is not None and store.guard.owes
        server.resume()
        assert app.name(1) == "new"  # paid before the read
    finally:
        server.resume() if server.proc is not None and server.proc.poll() is None else None
        store.close()
        server.stop()


# -- AsyncSession -----------------------------------------------------------------------------------


class AsyncApp:
    def __init__(self, path: Path, store: Any) -> None:
        self.engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        event.listen(self.engine.sync_engine, "connect", _wal)
        self.reads = 0

        @cache_aside(ttl=60, store=store)
        async def name(user_id: int) -> str:
            self.reads += 1
            async with self.engine.connect() as c:
                row = await c.execute(text("SELECT name FROM users WHERE id = :i"), {"i": user_id})
                return str(row.scalar_one())

        @invalidates(name)
        async def rename(session: AsyncSession, user_id: int, new: str) -> None:
            await session.execute(text("UPDATE users SET name = :n WHERE id = :i"), {"n": new, "i": user_id})

        self.name, self.rename = name, rename


async def _async_race(app: AsyncApp, commit: bool) -> list[str]:
    seen = [await app.name(1)]
    async with AsyncSession(app.engine) as session:
        await app.rename(session, 1, "new")
        seen.append(await app.name(1))
        await (session.commit() if commit else session.rollback())
    seen.append(await app.name(1))
    await app.engine.dispose()
    return seen


@pytest.mark.usefixtures("after_commit")
@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_async_session_read_after_commit_gives_the_new_row(db: Any, tmp_path: Path, kind: str,
                                                          request: pytest.FixtureRequest) -> None:
    """On an async Redis store the eviction after commit is owed: the next read pays it first."""
    store: Any = MemoryStore()
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStore.from_url(server.url, asyncio=True, prefix=f"ac{id(tmp_path)}")
    try:
        app = AsyncApp(tmp_path / "app.sqlite", store)
        assert LOOP.run_until_complete(_async_race(app, commit=True)) == ["old", "old", "new"]
    finally:
        if kind == "redis":
            LOOP.run_until_complete(store.aclose())


@pytest.mark.usefixtures("after_commit")
def test_async_session_rollback_evicts_nothing_after(db: Any, tmp_path: Path) -> None:
    app = AsyncApp(tmp_path / "app.sqlite", MemoryStore())
    assert LOOP.run_until_complete(_async_race(app, commit=False)) == ["old", "old", "old"]
    assert app.reads == 2  # the last read was a hit


@pytest.mark.usefixtures("after_commit")
def test_a_write_in_a_task_started_inside_the_transaction_is_applied_after_its_commit(db: Any, tmp_path: Path) -> None:
    """``asyncio.wait_for`` and ``gather`` run the write in a task of their own: its context is a copy of
    the one the transaction began in, so the eviction is the transaction's."""
    app = AsyncApp(tmp_path / "app.sqlite", MemoryStore())

    async def scenario() -> list[str]:
        seen = [await app.name(1)]
        async with AsyncSession(app.engine) as session, session.begin():
            await asyncio.wait_for(app.rename(session, 1, "new"), 5)
            seen.append(await asyncio.create_task(app.name(1)))  # another reader re-caches the old row
        seen.append(await app.name(1))
        await app.engine.dispose()
        return seen

    assert LOOP.run_until_complete(scenario()) == ["old", "old", "new"]


@pytest.mark.usefixtures("after_commit")
def test_an_unrelated_tasks_eviction_is_not_tied_to_this_tasks_transaction(db: Any, tmp_path: Path) -> None:
    """A task started before the transaction began (another request) does not share it: its eviction
    was applied at once, where it was asked, and is not applied again at this commit."""
    app = AsyncApp(tmp_path / "app.sqlite", MemoryStore())
    go, done = asyncio.Event(), asyncio.Event()

    async def other_request() -> None:
        await go.wait()
        await app.name.invalidate(1)
        done.set()

    async def scenario() -> tuple[int, int]:
        other = asyncio.create_task(other_request())
        await app.name(1)
        async with AsyncSession(app.engine) as session:
            await session.execute(text("SELECT 1"))  # this task's transaction is open
            go.set()
            await done.wait()
            await app.name(1)  # re-cached
            reads = app.reads
            await session.commit()
        await app.name(1)
        await other
        await app.engine.dispose()
        return reads, app.reads

    before, after = LOOP.run_until_complete(scenario())
    assert after == before  # a hit: nothing was applied again


@pytest.mark.usefixtures("after_commit")
def test_a_long_transaction_notes_each_key_once_and_its_commit_sends_one_eviction_per_store(db: Any) -> None:
    store = MemoryStore()
    app = App(db, store)
    sent: list[int] = []
    real = store.delete

    def delete(keys: Any, tags: Any = ()) -> None:
        sent.append(len(keys))
        real(keys, tags)

    store.delete = delete  # type: ignore[method-assign]
    with Session(db) as session:
        session.execute(text("SELECT 1"))
        for i in range(300):
            app.name.invalidate(i % 100)
        sent.clear()
        session.commit()
    assert sent == [100]


def test_two_integrations_on_and_one_removed_leaves_the_other_on(db: Any) -> None:
    from sqlalchemy.orm import sessionmaker

    makers = sessionmaker(db)
    first, second = evict_after_commit(), evict_after_commit(makers)
    first.remove()
    try:
        app = App(db, MemoryStore())
        with makers() as session:
            _race(app, session)
            session.commit()
        assert app.name(1) == "new"
    finally:
        second.remove()


def test_an_async_sessionmaker_is_a_target_too(db: Any, tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    app = AsyncApp(tmp_path / "app.sqlite", MemoryStore())
    handle = evict_after_commit(async_sessionmaker(app.engine))
    try:
        assert LOOP.run_until_complete(_async_race(app, commit=True)) == ["old", "old", "new"]
    finally:
        handle.remove()
