"""Single-flight for threads and tasks, and stale-set protection on the memory store."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from cacheaside import MemoryStore, cache_aside, invalidates
from cacheaside._flights import Flight


@contextlib.contextmanager
def counting_joiners() -> Iterator[Callable[[int], bool]]:
    """Count the calls waiting for another's computation; ``joined(n)`` waits (up to 2 s) for n of them."""
    waiting = threading.Semaphore(0)
    original = Flight.wait

    def wait(self: Flight) -> Any:
        waiting.release()
        return original(self)

    def joined(n: int) -> bool:
        return all(waiting.acquire(timeout=2) for _ in range(n))

    Flight.wait = wait  # type: ignore[method-assign]
    try:
        yield joined
    finally:
        Flight.wait = original  # type: ignore[method-assign]


def test_16_threads_missing_one_key_run_the_function_once() -> None:
    calls = []
    barrier = threading.Barrier(16)

    @cache_aside(ttl=60, store=MemoryStore())
    def slow(x: int) -> list[int]:
        calls.append(x)
        time.sleep(0.2)
        return [x]

    results: list[list[int]] = []
    def worker() -> None:
        barrier.wait()
        results.append(slow(7))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [7]
    assert len(results) == 16 and all(r is results[0] for r in results)


def test_16_tasks_missing_one_key_run_the_function_once() -> None:
    calls = []

    @cache_aside(ttl=60, store=MemoryStore())
    async def slow(x: int) -> list[int]:
        calls.append(x)
        await asyncio.sleep(0.1)
        return [x]

    async def scenario() -> list[list[int]]:
        return await asyncio.gather(*(slow(3) for _ in range(16)))

    results = asyncio.run(scenario())
    assert calls == [3] and all(r == [3] for r in results)


def test_joiners_receive_the_leaders_exception() -> None:
    calls = []
    release = threading.Event()

    @cache_aside(ttl=60, store=MemoryStore())
    def failing(x: int) -> int:
        calls.append(x)
        release.wait(2)
        raise KeyError("gone")

    errors = []
    def worker() -> None:
        try:
            failing(1)
        except KeyError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    with counting_joiners() as joined:
        for t in threads:
            t.start()
        assert joined(3)  # the leader computes; the other three wait for it
    release.set()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(errors) == 4


def test_a_call_after_an_eviction_never_joins_an_older_computation() -> None:
    db = {"k": "old"}
    started, finish = threading.Event(), threading.Event()
    store = MemoryStore()
    calls = []

    @cache_aside(ttl=60, store=store)
    def read(name: str) -> str:
        value = db[name]
        calls.append(value)
        if len(calls) == 1:
            started.set()
            finish.wait(2)  # the first computation holds here, with the old value in hand
        return value

    @invalidates(read)
    def write(name: str, value: str) -> None:
        db[name] = value

    first: list[str] = []
    t = threading.Thread(target=lambda: first.append(read("k")))
    t.start()
    assert started.wait(2)
    write("k", "new")  # completes while the first read is still computing
    assert read("k") == "new"  # started after the write: it did not join (and wait for) the older one
    finish.set()
    t.join()
    assert first == ["old"]
    assert read("k") == "new"  # the old value was not stored over the eviction


def test_stale_set_race_does_not_store_the_old_value() -> None:
    db = {"k": 1}
    got_old, write_done = threading.Event(), threading.Event()
    store = MemoryStore()

    @cache_aside(ttl=60, store=store)
    def read(name: str) -> int:
        value = db[name]
        got_old.set()
        write_done.wait(2)  # a writer commits and evicts before this read stores
        return value

    @invalidates(read)
    def write(name: str, value: int) -> None:
        db[name] = value

    reader = threading.Thread(target=read, args=("k",))
    reader.start()
    assert got_old.wait(2)
    write("k", 2)
    write_done.set()
    reader.join()
    assert store.get(read.key("k")) is None
    assert read("k") == 2


def test_async_stale_set_race_does_not_store_the_old_value() -> None:
    store = MemoryStore()
    db = {"k": 1}

    async def scenario() -> None:
        got_old, write_done = asyncio.Event(), asyncio.Event()

        @cache_aside(ttl=60, store=store)
        async def read(name: str) -> int:
            value = db[name]
            got_old.set()
            await write_done.wait()
            return value

        @invalidates(read)
        async def write(name: str, value: int) -> None:
            db[name] = value

        task = asyncio.ensure_future(read("k"))
        await got_old.wait()
        await write("k", 2)
        write_done.set()
        assert await task == 1
        assert await read("k") == 2

    asyncio.run(scenario())


def test_cancelled_leader_lets_a_joiner_compute() -> None:
    calls = []

    async def scenario() -> None:
        gate = asyncio.Event()

        @cache_aside(ttl=60, store=MemoryStore())
        async def slow(x: int) -> int:
            calls.append(x)
            if len(calls) == 1:
                await gate.wait()
            return x * 10

        leader = asyncio.ensure_future(slow(1))
        await asyncio.sleep(0)  # the leader runs up to its gate
        joiner = asyncio.ensure_future(slow(1))
        await asyncio.sleep(0)  # the joiner runs up to its wait for the leader
        assert len(calls) == 1 and not joiner.done()
        leader.cancel()
        assert await joiner == 10
        assert leader.cancelled()

    asyncio.run(scenario())
    assert len(calls) == 2


def test_joiners_wait_for_their_leader_however_long_it_computes() -> None:
    """Concurrent misses in one process run the function once (API.md), also when it runs past the
    store's lease_timeout: the joiners get the leader's result, they do not start their own."""
    gate, entered = threading.Event(), threading.Event()
    calls: list[str] = []
    store = MemoryStore()
    store.lease_timeout = 0.05  # what a cross-process waiter would wait; in-process joiners wait on

    @cache_aside(ttl=60, store=store)
    def read(x: int) -> str:
        calls.append("computed")
        entered.set()
        gate.wait(10)
        return "value"

    leader = threading.Thread(target=read, args=(1,))
    leader.start()
    assert entered.wait(2)
    out: list[str] = []
    with counting_joiners() as joined:
        joiners = [threading.Thread(target=lambda: out.append(read(1))) for _ in range(3)]
        for t in joiners:
            t.start()
        assert joined(3)
    time.sleep(0.2)  # well past lease_timeout: time must pass for this, no hand-shake stands in for it
    assert out == [] and calls == ["computed"]  # still waiting for the leader
    gate.set()
    for t in (leader, *joiners):
        t.join(5)
    assert calls == ["computed"] and out == ["value"] * 3


def test_a_call_from_a_task_or_thread_its_computation_started_is_re_entrant_too() -> None:
    """A nested call on the key being computed, made in a task (gather, wait_for, create_task) or a worker
    thread (asyncio.to_thread) the computation started, computes instead of waiting for its own caller."""
    store = MemoryStore()  # a call that waited for itself would wait forever: wait_for(..., 3) fails it
    depth: list[str] = []

    @cache_aside(ttl=60, store=store)
    async def tree(how: str) -> str:
        depth.append(how)
        if len(depth) == 1:
            inner = {
                "gather": lambda: asyncio.gather(tree(how)),
                "wait_for": lambda: asyncio.wait_for(tree(how), 30),
                "task": lambda: asyncio.ensure_future(tree(how)),
            }[how]
            await inner()
        return how

    @cache_aside(ttl=60, store=store)
    def sync_tree(x: int) -> int:
        depth.append("thread")
        return x

    @cache_aside(ttl=60, store=store)
    async def via_thread(x: int) -> int:
        return await asyncio.to_thread(sync_tree, x)

    async def scenario() -> None:
        for how in ("gather", "wait_for", "task"):
            depth.clear()
            assert await asyncio.wait_for(tree(how), 3) == how
            assert depth == [how, how]
        assert await asyncio.wait_for(via_thread(1), 3) == 1

    asyncio.run(scenario())
