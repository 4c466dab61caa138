"""Background refreshes (stale-while-revalidate, early refresh): at most one per key in a process.

A stale or early hit asks ``claim(store, key)``: the first caller gets the refresh and starts it
(``submit``: a small bounded pool of threads for sync functions; async functions use a task kept
referenced by ``_calls.keep_task``); every other caller, until the refresh ends (``done``), is
served the current value and starts nothing: no thread, task or store round trip per stale hit.
Across processes the store's lease decides which one refreshes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["MAX_PENDING", "WORKERS", "claim", "done", "running", "submit"]

#: Threads refreshing sync functions' entries in the background, at most.
WORKERS = 4
#: Refreshes waiting for a thread, at most: past this a stale hit is served without starting one
#: (the next stale hit of that key tries again).
MAX_PENDING = 256

_lock = threading.Lock()
_claimed: set[Hashable] = set()
_pool: ThreadPoolExecutor | None = None
_pending = 0


def claim(store: Any, key: str) -> bool:
    """Whether this caller starts the refresh of ``key`` on ``store`` (none is running here)."""
    name = (id(store), key)
    if name in _claimed:  # the common case while a refresh runs: no lock
        return False
    with _lock:
        if name in _claimed:
            return False
        _claimed.add(name)
        return True


def done(store: Any, key: str) -> None:
    """The refresh of ``key`` ended (stored, failed or skipped): the next stale hit may start one."""
    with _lock:
        _claimed.discard((id(store), key))


def running() -> int:
    """Refreshes claimed and not yet done, in this process (for tests and metrics)."""
    return len(_claimed)


def submit(job: Callable[[], Any], store: Any, key: str) -> None:
    """Run ``job`` (a claimed refresh) on the pool; ``done`` when it ends, or at once if the pool is full."""
    global _pool, _pending
    with _lock:
        if _pending >= MAX_PENDING:
            _claimed.discard((id(store), key))
            return
        if _pool is None:
            _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="cacheaside-refresh")
        _pending += 1
        pool = _pool

    def run() -> None:
        global _pending
        try:
            job()
        finally:
            with _lock:
                _pending -= 1
            done(store, key)

    pool.submit(run)


def _after_fork() -> None:
    """A forked child has none of the parent's threads: a pool and claims of its own."""
    global _lock, _pool, _pending
    _lock = threading.Lock()
    _pool = None
    _pending = 0
    _claimed.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
