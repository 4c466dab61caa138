"""Background refreshes (stale-while-revalidate, early refresh): at most one per key in a process.

A stale or early hit asks ``claim(store, key)``: the first caller gets the refresh and starts it
(``submit``: a small bounded pool of daemon threads for sync functions; async functions use a task
kept referenced by ``_calls.keep_task``); every other caller, until the refresh ends (``done``), is
served the current value and starts nothing: no thread, task or store round trip per stale hit.
Across processes the store's lease decides which one refreshes.

A claim older than ``CLAIM_SECONDS`` counts as abandoned (its refresh hangs, or its event loop was
closed under it): the next stale hit starts another. The pool's threads are daemons, so that a
refresh that hangs never holds the interpreter open at exit (``concurrent.futures`` joins its
workers at exit); it grows to ``WORKERS`` threads as refreshes wait, so a few hung refreshes do not
stop the others.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["CLAIM_SECONDS", "MAX_PENDING", "WORKERS", "claim", "done", "running", "submit"]

logger = logging.getLogger("cacheaside")

#: Threads refreshing sync functions' entries in the background, at most.
WORKERS = 8
#: Refreshes waiting for a thread, at most: past this a stale hit is served without starting one
#: (the next stale hit of that key tries again).
MAX_PENDING = 256
#: After this long a refresh's claim is taken as abandoned, and a stale hit may start another.
CLAIM_SECONDS = 60.0

_lock = threading.Lock()
_claimed: dict[Hashable, float] = {}
_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_threads = 0
#: Workers waiting for a job, and jobs waiting for a worker (each job has one reserved as it is submitted).
_idle = 0
_waiting = 0
_pending = 0


def claim(store: Any, key: str) -> bool:
    """Whether this caller starts the refresh of ``key`` on ``store`` (none is running here)."""
    name = (id(store), key)
    since = _claimed.get(name)
    if since is not None and time.monotonic() - since < CLAIM_SECONDS:  # a refresh runs: no lock
        return False
    with _lock:
        since = _claimed.get(name)
        now = time.monotonic()
        if since is not None and now - since < CLAIM_SECONDS:
            return False
        _claimed[name] = now
        return True


def done(store: Any, key: str) -> None:
    """The refresh of ``key`` ended (stored, failed or skipped): the next stale hit may start one."""
    with _lock:
        _claimed.pop((id(store), key), None)


def running() -> int:
    """Refreshes claimed and not yet done, in this process (for tests and metrics)."""
    return len(_claimed)


def submit(job: Callable[[], Any], store: Any, key: str) -> None:
    """Run ``job`` (a claimed refresh) on the pool, then ``done``; at once ``done`` if the pool is full.

    Each job is given a worker as it is submitted: an idle one, a new one (up to ``WORKERS``), or,
    with every worker busy, the next to finish (``_waiting``)."""
    global _pending, _threads, _idle, _waiting
    with _lock:
        if _pending >= MAX_PENDING:
            _claimed.pop((id(store), key), None)
            return
        _pending += 1
        start = False
        if _idle:
            _idle -= 1
        elif _threads < WORKERS:
            _threads += 1
            start = True
        else:
            _waiting += 1

    def run() -> None:
        global _pending
        try:
            job()
        finally:
            with _lock:
                _pending -= 1
            done(store, key)

    if start:
        try:
            threading.Thread(target=_work, name="cacheaside-refresh", daemon=True).start()
        except RuntimeError:  # the interpreter is shutting down: the job is not run
            with _lock:
                _threads -= 1
                _pending -= 1
            done(store, key)
            return
    _jobs.put(run)


def _work() -> None:
    global _idle, _waiting
    while True:
        job = _jobs.get()
        try:
            job()
        except BaseException:  # a job reports its own failures; this keeps the worker alive
            logger.debug("cacheaside: a background refresh raised", exc_info=True)
        del job  # an idle worker keeps nothing of its last refresh (its function, store, arguments) alive
        with _lock:
            if _waiting:
                _waiting -= 1  # a job queued while every worker was busy: this one takes it
            else:
                _idle += 1


def _after_fork() -> None:
    """A forked child has none of the parent's threads: a pool and claims of its own."""
    global _lock, _jobs, _threads, _idle, _waiting, _pending
    _lock = threading.Lock()
    _jobs = queue.SimpleQueue()
    _threads = _idle = _waiting = _pending = 0
    _claimed.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
