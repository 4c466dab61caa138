"""Metrics read from a real ``prometheus_client`` registry and an OpenTelemetry in-memory reader:
gets by result, puts, evictions, computations and their histogram, breaker transitions, owed evictions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from cacheaside import CircuitBreaker, MemoryStore, cache_aside, invalidate_tags, invalidates
from cacheaside.metrics import instrument_opentelemetry, register_prometheus

from .helpers import resolve
from .redis_server import RedisServer
from .test_faults import make_store


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    collector = register_prometheus(registry)
    yield registry
    registry.unregister(collector)


def _workload() -> tuple[Any, str]:
    """A function with 2 misses, 3 hits, 1 raise, a key eviction, a clear and a tag eviction."""
    store = MemoryStore()
    version = uuid.uuid4().hex[:8]  # a namespace of this test's own

    @cache_aside(ttl=60, store=store, version=version, tags=["t:{x}"])
    def f(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        time.sleep(0.03)
        return x

    @invalidates(f)
    def write(x: int) -> None:
        pass

    f(1), f(2), f(1), f(1), f(2)
    with pytest.raises(ValueError):
        f(-1)
    write(1)
    f.clear()
    invalidate_tags("t:2", store=store)
    return f, f.key(1).split(":")[1]


def test_prometheus_exports_every_counter_of_a_call_site(registry: CollectorRegistry) -> None:
    f, cache = _workload()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"cache": cache, **labels})

    assert value("cache_gets_total", result="hit") == 3
    assert value("cache_gets_total", result="miss") == 3  # f(1), f(2), f(-1)
    assert value("cache_gets_total", result="error") == value("cache_gets_total", result="bypassed") == 0
    assert value("cache_puts_total") == 2
    assert value("cache_evictions_total", reason="key") == 1 and value("cache_evictions_total", reason="clear") == 1
    assert value("cache_loads_total", result="success") == 2 and value("cache_loads_total", result="failure") == 1
    assert value("cache_load_duration_seconds_count") == 3
    assert value("cache_load_duration_seconds_bucket", le="0.025") == 1  # the raise; the two sleeps 0.03 s
    assert value("cache_load_duration_seconds_bucket", le="+Inf") == 3
    assert 0.06 <= (value("cache_load_duration_seconds_sum") or 0) < 1.5
    assert f.stats().hits == 3 and f.stats().misses == 3
    text = generate_latest(registry).decode()
    assert f'cache_gets_total{{cache="{cache}",result="hit"}} 3.0' in text
    assert "cache_tag_evictions_total" in text


def test_labels_carry_no_argument_value(registry: CollectorRegistry) -> None:
    secret = "hunter2-" + uuid.uuid4().hex

    @cache_aside(ttl=60, store=MemoryStore(), key="pw:{password}", tags=["pw:{password}"])
    def check(password: str) -> bool:
        return True

    check(secret), check(secret)
    text = generate_latest(registry).decode()
    assert "test_metrics.test_labels_carry_no_argument_value.<locals>.check" in text
    assert secret not in text


def test_breaker_transitions_and_owed_evictions_are_exported(registry: CollectorRegistry) -> None:
    server = RedisServer("--enable-debug-command", "yes")
    store = make_store(server.url, breaker=CircuitBreaker(2, 1.0))

    @cache_aside(ttl=60, store=store)
    def f(x: int) -> int:
        return x

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"store": repr(store), **labels})

    try:
        f(1)
        assert value("cache_breaker_state", state="closed") == 1
        server.pause()
        f(2), f(3)  # two failures: open
        f.invalidate(1)  # owed
        assert value("cache_breaker_state", state="open") == 1 and value("cache_breaker_state", state="closed") == 0
        assert value("cache_breaker_transitions_total", state="open") == 1
        assert (value("cache_evictions_owed") or 0) >= 1
        assert registry.get_sample_value("cache_gets_total", {"cache": f.key(1).split(":")[1],
                                                              "result": "error"}) == 2  # f(2)'s and f(3)'s lookups
        server.resume()
        deadline = time.monotonic() + 5  # the breaker lets a probe through after 1 s
        while store.breaker.state != "closed" and time.monotonic() < deadline:
            f(4)
            time.sleep(0.05)
        assert value("cache_evictions_owed") == 0
        assert value("cache_breaker_transitions_total", state="half_open") == 1
        assert value("cache_breaker_transitions_total", state="closed") == 1
        assert value("cache_breaker_state", state="closed") == 1
    finally:
        server.resume() if server.proc is not None and server.proc.poll() is None else None
        store.close()
        server.stop()


def test_opentelemetry_reads_the_same_counters() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = instrument_opentelemetry(provider.get_meter("test"))
    try:
        _f, cache = _workload()  # (kept: a dropped function leaves the export)
        data = reader.get_metrics_data()
        points: dict[str, list[Any]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(
                        p for p in metric.data.data_points if p.attributes.get("cache") == cache)
        hits = [p.value for p in points["cache.gets"] if p.attributes["result"] == "hit"]
        assert hits == [3]
        assert [p.value for p in points["cache.puts"]] == [2]
        histogram = points["cache.load.duration"]
        assert sum(p.count for p in histogram) == 3
        assert {p.attributes["result"] for p in histogram} == {"success", "failure"}
    finally:
        metrics.close()
        provider.shutdown()
    assert metrics.closed


def test_an_async_site_is_counted_alike(registry: CollectorRegistry) -> None:
    @cache_aside(ttl=60, store=MemoryStore(), version=uuid.uuid4().hex[:8])
    async def g(x: int) -> int:
        return x

    assert [resolve(g(1)) for _ in range(4)] == [1] * 4
    cache = g.key(1).split(":")[1]
    assert registry.get_sample_value("cache_gets_total", {"cache": cache, "result": "hit"}) == 3
    assert registry.get_sample_value("cache_puts_total", {"cache": cache}) == 1


def test_registering_twice_is_refused_and_instrumenting_twice_counts_once(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="already"):
        register_prometheus(registry)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("twice")
    first = instrument_opentelemetry(meter)
    try:
        assert instrument_opentelemetry(meter) is first
    finally:
        first.close()
        provider.shutdown()


def test_a_counter_never_goes_down_when_a_function_is_dropped(registry: CollectorRegistry) -> None:
    import gc

    version = uuid.uuid4().hex[:8]

    def make() -> Any:
        @cache_aside(ttl=60, store=MemoryStore(), version=version)
        def f(x: int) -> int:
            return x

        return f

    with pytest.warns(Warning):  # the second of one namespace warns
        first, second = make(), make()
    cache = first.key(1).split(":")[1]
    [first(1) for _ in range(5)], [second(1) for _ in range(3)]
    hits = registry.get_sample_value("cache_gets_total", {"cache": cache, "result": "hit"})
    assert hits == 6
    del first
    gc.collect()
    assert registry.get_sample_value("cache_gets_total", {"cache": cache, "result": "hit"}) == 6
    second(1)
    assert registry.get_sample_value("cache_gets_total", {"cache": cache, "result": "hit"}) == 7
