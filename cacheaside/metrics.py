"""Metrics: every call site's and store's counters, exported through ``prometheus_client`` or
OpenTelemetry (the ``prometheus`` and ``opentelemetry`` extras).

Nothing is counted for the exporters: they read, when scraped, the counters the library keeps
anyway (those behind ``f.stats()``, the breakers', the owed evictions), so the hit path pays
nothing for them and nothing is counted twice. Names follow Micrometer's cache metrics
(``cache.gets{result=...}``, ``cache.puts``, ``cache.evictions``), which Prometheus renders as
``cache_gets_total`` and so on. Labels: ``cache`` is the function's namespace
(``module.qualname``, plus ``@v<version>``), ``store`` a store's name (``RedisStore(sync,
prefix='app')``, a cluster's shards apart); never an argument value.

    from cacheaside.metrics import register_prometheus, instrument_opentelemetry
    register_prometheus()                  # on prometheus_client's default registry
    instrument_opentelemetry(meter)        # or the global meter provider's meter

The metrics (Prometheus names; labels in brackets):

- ``cache_gets_total{cache,result}``: calls by result: ``hit``, ``miss``, ``stale``, ``error`` (the
  lookup failed), ``bypassed`` (the breaker was open);
- ``cache_puts_total{cache}``: values stored;
- ``cache_evictions_total{cache,reason}``: ``key`` (``invalidate``, a writer's target), ``clear``;
- ``cache_errors_total{cache}``: store failures survived by calls;
- ``cache_loads_total{cache,result}``: computations, ``success`` or ``failure`` (the function raised);
- ``cache_load_duration_seconds{cache}``: a histogram of the computations' seconds;
- ``cache_refresh_failures_total{cache}``: background refreshes whose function raised;
- ``cache_tag_evictions_total{store}``: tags evicted (``f.clear()`` is one);
- ``cache_evictions_owed{store}``: keys and tags owed to a store that is down (a gauge);
- ``cache_breaker_state{store,state}``: 1 for the breaker's state, 0 for the others (a gauge);
- ``cache_breaker_transitions_total{store,state}``: times the breaker went into a state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._site import LOAD_LISTENERS, RETIRED, SITES
from .evictions import TAG_EVICTIONS
from .guard import GUARDS
from .stats import LOAD_BUCKETS

__all__ = ["Family", "OpenTelemetryMetrics", "PrometheusCollector", "families", "instrument_opentelemetry",
           "register_prometheus"]

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric, exporter-neutral: ``name`` dotted (``cache.gets``), ``kind`` counter, gauge or
    histogram, and its samples by labels (a histogram's: per-bucket counts, sum)."""

    name: str
    kind: str
    help: str
    unit: str = ""
    samples: dict[Labels, Any] = field(default_factory=dict)

    def add(self, labels: dict[str, str], value: float) -> None:
        key = tuple(sorted(labels.items()))  # several live objects of one name (two stores on a prefix): summed
        self.samples[key] = self.samples.get(key, 0) + value


def _store_name(store: Any) -> str:
    guard = getattr(store, "guard", None)
    name = getattr(guard, "name", None)
    return name if isinstance(name, str) else f"{type(store).__name__}(prefix={getattr(store, 'prefix', None)!r})"


def families() -> list[Family]:
    """Every metric, read now from the live call sites, guards and stores."""
    gets = Family("cache.gets", "counter", "Calls of decorated functions, by result")
    puts = Family("cache.puts", "counter", "Values stored")
    evictions = Family("cache.evictions", "counter", "Evictions asked of a function's entries, by reason")
    errors = Family("cache.errors", "counter", "Store failures survived by calls (they carried on without the cache)")
    loads = Family("cache.loads", "counter", "Computations of decorated functions, by result")
    refresh = Family("cache.refresh.failures", "counter", "Background refreshes whose function raised")
    duration = Family("cache.load.duration", "histogram", "Seconds each computation took", "seconds")
    # Live call sites, and what dropped ones counted (so that no counter goes down when one is collected).
    for namespace, c in [*((site.keys.namespace, site.counters) for site in list(SITES)), *list(RETIRED.items())]:
        cache = {"cache": namespace}
        for result, n in (("hit", c.hits), ("miss", max(0, c.misses - c.get_errors)), ("stale", c.stale),
                          ("error", c.get_errors), ("bypassed", c.bypassed)):
            gets.add({**cache, "result": result}, n)
        puts.add(cache, c.fills)
        evictions.add({**cache, "reason": "key"}, c.evictions)
        evictions.add({**cache, "reason": "clear"}, c.clears)
        errors.add(cache, c.errors)
        loads.add({**cache, "result": "success"}, c.loads - c.load_failures)
        loads.add({**cache, "result": "failure"}, c.load_failures)
        refresh.add(cache, c.refresh_errors)
        key = tuple(sorted(cache.items()))
        buckets, total = duration.samples.get(key, ([0] * (len(LOAD_BUCKETS) + 1), 0.0))
        duration.samples[key] = ([a + b for a, b in zip(buckets, c.load_buckets, strict=True)], total + c.load_seconds)
    tags = Family("cache.tag.evictions", "counter", "Tags evicted from a store (f.clear() is one)")
    for store, n in list(TAG_EVICTIONS.items()):
        tags.add({"store": _store_name(store)}, n)
    owed = Family("cache.evictions.owed", "gauge", "Keys and tags owed to a store that did not take them")
    state = Family("cache.breaker.state", "gauge", "1 for the circuit breaker's state, 0 for the others")
    transitions = Family("cache.breaker.transitions", "counter", "Times the circuit breaker went into a state")
    for guard in list(GUARDS):
        keys, tag_list, _ = guard.owed()
        owed.add({"store": guard.name}, len(keys) + len(tag_list))
        breaker = guard.breaker
        if breaker is None:
            continue
        now = breaker.state
        for name in ("closed", "open", "half_open"):
            state.add({"store": guard.name, "state": name}, 1 if now == name else 0)
            transitions.add({"store": guard.name, "state": name}, breaker.transitions[name])
    return [gets, puts, evictions, errors, loads, refresh, duration, tags, owed, state, transitions]


# -- prometheus_client ------------------------------------------------------------------------------


def _empty_families() -> list[Family]:
    """Every metric, with no samples (what a collector describes)."""
    everything = families()
    for family in everything:
        family.samples.clear()
    return everything


def _prometheus_name(family: Family) -> str:
    name = family.name.replace(".", "_")
    return f"{name}_{family.unit}" if family.unit else name


class PrometheusCollector:
    """A ``prometheus_client`` collector: ``registry.register(PrometheusCollector())``, or ``register_prometheus()``."""

    def describe(self) -> Iterator[Any]:
        """The metrics with no samples: their names, which the registry checks against its others'."""
        return self._families(with_samples=False)

    def collect(self) -> Iterator[Any]:
        return self._families(with_samples=True)

    def _families(self, with_samples: bool) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        bounds = [repr(float(b)) for b in LOAD_BUCKETS] + ["+Inf"]
        for family in (families() if with_samples else _empty_families()):
            name = _prometheus_name(family)
            names = sorted({k for labels in family.samples for k, _ in labels}) or []
            metric: Any
            if family.kind == "counter":
                metric = CounterMetricFamily(name, family.help, labels=names)
            elif family.kind == "gauge":
                metric = GaugeMetricFamily(name, family.help, labels=names)
            else:
                metric = HistogramMetricFamily(name, family.help, labels=names, unit="")
            for labels, value in family.samples.items():
                values = [dict(labels)[n] for n in names]
                if family.kind == "histogram":
                    counts, total = value
                    cumulative, running = [], 0
                    for bound, n in zip(bounds, counts, strict=True):
                        running += n
                        cumulative.append((bound, running))
                    metric.add_metric(values, cumulative, total)
                else:
                    metric.add_metric(values, value)
            yield metric


def register_prometheus(registry: Any = None) -> PrometheusCollector:
    """Export the metrics on ``registry`` (default: ``prometheus_client.REGISTRY``); returns the collector
    (``registry.unregister(collector)`` takes it off).

    Raises:
        ValueError: the metrics are on that registry already (the registry refuses their names twice).
    """
    try:
        import prometheus_client
    except ImportError:
        raise ImportError(
            "register_prometheus() needs prometheus_client: pip install 'cacheaside[prometheus]'"
        ) from None
    target = registry if registry is not None else prometheus_client.REGISTRY
    collector = PrometheusCollector()
    try:
        target.register(collector)
    except ValueError as exc:
        raise ValueError(f"register_prometheus(): cacheaside's metrics are on this registry already ({exc}); "
                         "register them once, or registry.unregister() the collector first") from None
    return collector


# -- OpenTelemetry --------------------------------------------------------------------------------------


class OpenTelemetryMetrics:
    """The instruments ``instrument_opentelemetry`` made; ``close()`` stops them reporting."""

    def __init__(self, meter: Any) -> None:
        from opentelemetry.metrics import Observation

        self._observation = Observation
        self.closed = False
        for family in families():
            if family.kind == "histogram":
                continue
            make = meter.create_observable_counter if family.kind == "counter" else meter.create_observable_gauge
            make(family.name, callbacks=[self._callback(family.name)], unit=family.unit and "s",
                 description=family.help)
        # OpenTelemetry has no histogram read when asked: computations are recorded as they end
        # (on misses only), from the moment this is on.
        self._histogram = meter.create_histogram("cache.load.duration", unit="s",
                                                 description="Seconds each computation took")
        LOAD_LISTENERS.append(self._record)

    def _callback(self, name: str) -> Any:
        def observe(options: Any) -> Iterable[Any]:
            if self.closed:
                return []
            family = next((f for f in families() if f.name == name), None)
            if family is None:
                return []
            return [self._observation(value, dict(labels)) for labels, value in family.samples.items()]

        return observe

    def _record(self, namespace: str, seconds: float, failed: bool) -> None:
        self._histogram.record(seconds, {"cache": namespace, "result": "failure" if failed else "success"})

    def close(self) -> None:
        self.closed = True
        if self._record in LOAD_LISTENERS:
            LOAD_LISTENERS.remove(self._record)


#: The instruments made on each meter (by id; the meter is held by the pair): a second call on one meter
#: returns them instead of counting every computation twice.
_INSTRUMENTED: dict[int, tuple[Any, OpenTelemetryMetrics]] = {}


def instrument_opentelemetry(meter: Any = None) -> OpenTelemetryMetrics:
    """Export the metrics as OpenTelemetry instruments on ``meter`` (default: the global meter provider's
    ``cacheaside`` meter): observable counters and gauges read when the reader collects, and a
    ``cache.load.duration`` histogram that records each computation from now on. A second call on the
    same meter returns the instruments of the first (until they are closed)."""
    try:
        from opentelemetry import metrics
    except ImportError:
        raise ImportError(
            "instrument_opentelemetry() needs opentelemetry-api: pip install 'cacheaside[opentelemetry]'"
        ) from None
    target = meter if meter is not None else metrics.get_meter("cacheaside")
    held = _INSTRUMENTED.get(id(target))
    if held is not None and held[0] is target and not held[1].closed:
        return held[1]
    made = OpenTelemetryMetrics(target)
    _INSTRUMENTED[id(target)] = (target, made)
    return made
