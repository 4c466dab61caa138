"""A model-based test: decorated reads and @invalidates writes over a dict "database", with simulated time.

Invariant: after any interleaving, a read returns the database's current value,
except that the cache may be behind only for an entry that expired on its own
ttl, which never happens here because every change goes through an eviction. Reads
that started before a write (held open by `start_read`) may return the old value,
but must never leave it in the cache.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

import pytest
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cacheaside import MemoryStore, RedisStore, cache_aside, invalidate_tags, invalidates

from .conftest import FakeClock
from .redis_server import RedisServer

KEYS = st.sampled_from(["a", "b", "c"])
#: Each machine's read function is a new closure: a version of its own keeps their namespaces apart.
MACHINES = itertools.count()


class CacheModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = self.make_store()
        self.db: dict[str, int] = {"a": 0, "b": 0, "c": 0}
        self.gate: threading.Event | None = None
        self.pending: list[tuple[threading.Thread, str, list[int]]] = []
        db = self.db
        model = self

        @cache_aside(ttl=10, store=self.store, tags=["row:{name}"], version=next(MACHINES))
        def read(name: str) -> int:
            value = db[name]
            gate = model.gate
            if gate is not None:
                model.gate = None
                model.held.set()
                gate.wait(5)
            return value

        @invalidates(read)
        def write(name: str, value: int) -> None:
            db[name] = value

        @invalidates(tags=["row:{name}"], store=self.store)
        def write_by_tag(name: str, value: int) -> None:
            db[name] = value

        self.read, self.write, self.write_by_tag = read, write, write_by_tag
        self.held = threading.Event()
        self.joinable: set[str] = set()  # held reads with no eviction of their key since

    def make_store(self) -> Any:
        return MemoryStore(maxsize=2, clock=self.clock)  # small: LRU evictions happen too

    @rule(name=KEYS)
    def do_read(self, name: str) -> None:
        if name in self.joinable:
            return  # it would rightly join the held computation (no eviction since)
        assert self.read(name) == self.db[name]

    @rule(name=KEYS, value=st.integers(0, 100))
    def do_write(self, name: str, value: int) -> None:
        self.write(name, value)
        self.joinable.discard(name)

    @rule(name=KEYS, value=st.integers(0, 100))
    def do_write_by_tag(self, name: str, value: int) -> None:
        self.write_by_tag(name, value)
        self.joinable.discard(name)

    @rule(name=KEYS, value=st.integers(0, 100))
    def do_raw_change_then_tag_eviction(self, name: str, value: int) -> None:
        self.db[name] = value
        invalidate_tags(f"row:{name}", store=self.store)
        self.joinable.discard(name)

    @rule(seconds=st.floats(0, 15))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: not self.pending)
    @rule(name=KEYS)
    def start_read(self, name: str) -> None:
        """A read that reads the database now and stores later (the stale-set race)."""
        entry = self.store.get(self.read.key(name))
        if entry is not None and self.clock() < entry.stored_at + entry.ttl:
            return  # a hit: nothing would be held open
        self.gate, self.held = threading.Event(), threading.Event()
        out: list[int] = []
        thread = threading.Thread(target=lambda: out.append(self.read(name)))
        gate = self.gate
        thread.start()
        if not self.held.wait(2):  # it was a hit (or joined): nothing is held open
            self.gate = None
            thread.join(2)
            return
        self.pending.append((thread, name, out))
        self.joinable.add(name)
        self._gate = gate

    @precondition(lambda self: bool(self.pending))
    @rule()
    def finish_read(self) -> None:
        thread, name, out = self.pending.pop()
        self.joinable.discard(name)
        self._gate.set()
        thread.join(5)
        assert out, "the held read returned"

    @invariant()
    def cached_entries_match_the_database(self) -> None:
        if self.pending:
            return
        for name, value in self.db.items():
            entry = self.store.get(self.read.key(name))
            if entry is not None and self.clock() < entry.stored_at + entry.ttl:
                assert entry.value == value, (name, entry.value, value)

    def teardown(self) -> None:
        for thread, _, _ in self.pending:
            self._gate.set()
            thread.join(5)


CacheModel.TestCase.settings = hsettings(max_examples=60, stateful_step_count=30, deadline=None)
TestCacheModel = CacheModel.TestCase


class RedisCacheModel(CacheModel):
    """The same model on a RedisStore (leases, tags and evictions in Lua)."""

    url = ""

    def make_store(self) -> Any:
        return RedisStore.from_url(self.url, prefix=f"m{uuid.uuid4().hex[:8]}", clock=self.clock)

    def teardown(self) -> None:
        super().teardown()
        self.store.client.close()


RedisCacheModel.TestCase.settings = hsettings(max_examples=30, stateful_step_count=30, deadline=None)


@pytest.mark.redis
class TestRedisCacheModel(RedisCacheModel.TestCase):  # type: ignore[misc,valid-type]
    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        RedisCacheModel.url = redis_server.url
