"""Surviving a sick store: ``CircuitBreaker`` and ``Retry`` (pure policy, no I/O).

A breaker never holds a lock across the guarded store call: callers ask
``allow()`` before and report ``success()`` / ``failure(exc)`` after.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from math import inf
from typing import Literal

__all__ = ["BreakerSnapshot", "CircuitBreaker", "Retry"]

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A read-only view of a breaker. Error *types* only: messages can hold hosts and passwords."""

    state: State
    consecutive_failures: int
    seconds_in_state: float
    last_error_type: str | None


class CircuitBreaker:
    """Stops calling a failing store for a while, then lets one probe through.

    ``closed`` -> ``open`` after ``failure_threshold`` consecutive failures;
    ``open`` -> ``half_open`` once ``reset_timeout`` seconds have passed (monotonic
    clock); in ``half_open`` one probe at a time goes to the store: success ->
    ``closed``, failure -> ``open`` with a fresh timer.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ValueError(f"CircuitBreaker: failure_threshold must be an int >= 1, got {failure_threshold!r}")
        if isinstance(reset_timeout, bool) or not isinstance(reset_timeout, (int, float)) \
                or not 0 < reset_timeout < inf:
            raise ValueError(f"CircuitBreaker: reset_timeout must be positive, finite seconds, got {reset_timeout!r}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        #: Monotonic seconds the breaker times its states with.
        self.clock = clock
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._since = clock()
        self._failures = 0
        self._probing = False
        self._last_error: str | None = None
        #: How many times the breaker went into each state (read by ``cacheaside.metrics``).
        self.transitions: dict[str, int] = {"open": 0, "half_open": 0, "closed": 0}

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failure_threshold={self.failure_threshold})"

    @property
    def calm(self) -> bool:
        """Closed with no failure counted: nothing for a call to report."""
        return self._state == "closed" and not self._failures

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock() - self._since >= self.reset_timeout:
            return "half_open"
        return self._state

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            return BreakerSnapshot(self.state, self._failures, self._clock() - self._since, self._last_error)

    def allow(self) -> bool:
        """May this call use the store? In half_open, True for exactly one caller (the probe)."""
        if self._state == "closed":
            return True
        with self._lock:
            state = self.state
            if state == "closed":
                return True
            if state == "half_open" and (not self._probing or self._clock() - self._since >= self.reset_timeout):
                # A probe that never reported (its caller died) does not block probing for good.
                if self._state == "open":
                    self.transitions["half_open"] += 1
                self._state, self._since, self._probing = "half_open", self._clock(), True
                return True
            return False

    def success(self) -> State | None:
        """Record a call whose store work succeeded; return the new state if it changed."""
        if self._state == "closed" and not self._failures:
            return None
        with self._lock:
            self._failures = 0
            self._probing = False
            if self._state != "closed":
                self._state, self._since = "closed", self._clock()
                self.transitions["closed"] += 1
                return "closed"
            return None

    def failure(self, exc: BaseException) -> State | None:
        """Record a store failure; return the new state if it changed."""
        with self._lock:
            self._last_error = type(exc).__name__
            self._failures += 1
            if self._state == "half_open" or (self._state == "closed" and self._failures >= self.failure_threshold):
                self._state, self._since, self._probing = "open", self._clock(), False
                self.transitions["open"] += 1
                return "open"
            return None


@dataclass(frozen=True, slots=True)
class Retry:
    """Bounded retries of a transient store error, with exponential backoff and full jitter.

    Args:
        attempts: total tries of one store operation (1 means no retry).
        backoff: the first backoff in seconds; doubles each retry, drawn uniformly from [0, cap].
    """

    attempts: int = 2
    backoff: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"Retry: attempts must be an int >= 1 (total tries), got {self.attempts!r}")
        if isinstance(self.backoff, bool) or not isinstance(self.backoff, (int, float)) or not 0 <= self.backoff < inf:
            raise ValueError(f"Retry: backoff must be zero or positive, finite seconds, got {self.backoff!r}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): full jitter over the exponential cap."""
        return random.uniform(0, self.backoff * (2 ** (retry - 1)))
