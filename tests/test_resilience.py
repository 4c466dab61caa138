"""CircuitBreaker and Retry: the contract's state machine on a fake clock (wired to RedisStore later)."""

from __future__ import annotations

import pytest

from cacheaside import CircuitBreaker, Retry

from .conftest import FakeClock


def test_breaker_states() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10, clock=clock)
    seen = [breaker.state]
    for _ in range(2):
        breaker.failure(ConnectionError())
    breaker.success()  # consecutive failures only
    for _ in range(3):
        breaker.failure(ConnectionError())
    seen.append(breaker.state)
    assert not breaker.allow()
    clock.advance(10)
    seen.append(breaker.state)
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure(TimeoutError())
    seen.append(breaker.state)
    clock.advance(10)
    assert breaker.allow()
    breaker.success()
    seen.append(breaker.state)
    assert seen == ["closed", "open", "half_open", "open", "closed"]
    snap = breaker.snapshot()
    assert snap.state == "closed" and snap.last_error_type == "TimeoutError"


def test_retry_validation_and_jitter() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)
    retry = Retry(attempts=3, backoff=0.1)
    assert all(0 <= retry.delay(2) <= 0.2 for _ in range(100))
