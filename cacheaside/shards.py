"""The guards of a store on Redis Cluster: one per shard, so that one sick shard is bypassed alone.

A key's guard is its hash slot's: a slot is given the guard of the node that served it when the
slot was first seen, and keeps it. A failover moves the slot to the promoted replica, and the
slot's breaker, incident and owed evictions stay with it: they belong to the shard, not to the
node that died (an eviction owed for a key is paid before that key is read again, wherever the
key now lives). Each guard is named after that first node (``host:port``).

``Shards`` stands where a store on one server has its one ``Guard``: ``clear`` (all shards
clear: the hit path reads only this), ``of(key)`` (the key's shard guard), ``close()``.
``ShardBreakers`` is what ``store.breaker`` reports on a cluster: the worst state of the
shards' breakers, and each shard's breaker by name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from typing import Any

from .guard import Guard
from .resilience import BreakerSnapshot, CircuitBreaker, State

__all__ = ["PROBE_INTERVAL", "SLOTS", "ShardBreakers", "Shards"]

#: Redis Cluster's hash slots.
SLOTS = 16384

#: The guard of keys whose node is not known yet (the client has not read the topology).
UNKNOWN = "unknown"

#: The longest an open shard's breaker waits before a call probes it again (``reset_timeout`` if
#: shorter). A shard is usually down for a failover, seconds long, and only a call to it lets
#: redis-py find the promoted replica; one probe a second costs one call a fast failure.
PROBE_INTERVAL = 1.0

_ORDER: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}


class Shards:
    """One ``Guard`` per shard of a cluster, found by key; ``clear`` while every one of them is."""

    def __init__(self, make_guard: Callable[[str], Guard], locate: Callable[[str], tuple[int, str]],
                 tag_set: Callable[[str], str]) -> None:
        """``make_guard(name)``: a new shard's guard; ``locate(key)``: its slot and node now; ``tag_set(tag)``:
        the key of a tag's set (its shard's guard decides whether an eviction by the tag is sent)."""
        self._make_guard = make_guard
        self._locate = locate
        self._tag_set = tag_set
        self._slots: list[Guard | None] = [None] * SLOTS
        self._guards: dict[str, Guard] = {}
        self._lock = threading.Lock()
        self._closed = False
        #: Every shard is clear (the hit path reads only this).
        self.clear = True

    def __repr__(self) -> str:
        return f"Shards({', '.join(map(repr, self.guards().values()))})"

    def of(self, key: str) -> Guard:
        """The guard of ``key``'s shard (the guard its slot was first given)."""
        try:
            slot, node = self._locate(key)
        except Exception:  # the client does not know the topology yet: no slot to give a guard to
            return self.named(UNKNOWN)
        guard = self._slots[slot]
        if guard is None:
            guard = self._slots[slot] = self.named(node)
        return guard

    def of_tag(self, tag: str) -> Guard:
        """The guard of the shard that holds ``tag``'s set."""
        return self.of(self._tag_set(tag))

    def named(self, name: str) -> Guard:
        """The shard guard called ``name``, made on first use."""
        guard = self._guards.get(name)
        if guard is not None:
            return guard
        with self._lock:
            guard = self._guards.get(name)
            if guard is None:
                guard = self._make_guard(name)
                guard.on_change = self._recheck
                if self._closed:
                    guard.close()
                self._guards[name] = guard
        return guard

    def guards(self) -> dict[str, Guard]:
        """Each shard's guard, by name."""
        with self._lock:
            return dict(self._guards)

    def owe_everywhere(self, tags: Collection[str]) -> None:
        """Owe an eviction of ``tags`` on every shard: their entries can be on any of them."""
        for guard in self.guards().values():
            guard.owe((), tags)

    def _recheck(self) -> None:
        with self._lock:
            self.clear = all(g.clear for g in self._guards.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for guard in self.guards().values():
            guard.close()


class ShardBreakers(CircuitBreaker):
    """A cluster store's ``breaker``: the settings each shard's breaker is made with, and their state.

    ``state`` and ``snapshot()`` report the worst shard (``open`` if any shard's breaker is open,
    then ``half_open``, else ``closed``); ``shards`` gives each shard's own breaker by name.
    """

    def __init__(self, template: CircuitBreaker, shards: Callable[[], dict[str, Guard]]) -> None:
        super().__init__(template.failure_threshold, template.reset_timeout, clock=template.clock)
        self._template = template
        self._shard_guards = shards

    def __repr__(self) -> str:
        return f"ShardBreakers(state={self.state!r}, shards={ {k: v.state for k, v in self.shards.items()} })"

    def make(self) -> CircuitBreaker:
        """A breaker for a new shard: the store's settings, probing at least every ``PROBE_INTERVAL``."""
        t = self._template
        return CircuitBreaker(t.failure_threshold, min(t.reset_timeout, PROBE_INTERVAL), clock=t.clock)

    @property
    def shards(self) -> dict[str, CircuitBreaker]:
        """Each shard's breaker, by the name of the node that first served the shard."""
        return {name: g.breaker for name, g in self._shard_guards().items() if g.breaker is not None}

    def _worst(self) -> CircuitBreaker | None:
        breakers = list(self.shards.values())
        return max(breakers, key=lambda b: _ORDER[b.state]) if breakers else None

    @property
    def state(self) -> State:
        worst = self._worst()
        return "closed" if worst is None else worst.state

    @property
    def calm(self) -> bool:
        return all(b.calm for b in self.shards.values())

    def snapshot(self) -> BreakerSnapshot:
        worst = self._worst()
        return super().snapshot() if worst is None else worst.snapshot()

    def allow(self) -> bool:  # pragma: no cover - the shards' breakers are asked, never this one
        raise TypeError("ShardBreakers: ask a shard's breaker (store.breaker.shards)")

    def success(self) -> Any:  # pragma: no cover
        raise TypeError("ShardBreakers: report to a shard's breaker (store.breaker.shards)")

    def failure(self, exc: BaseException) -> Any:  # pragma: no cover
        raise TypeError("ShardBreakers: report to a shard's breaker (store.breaker.shards)")
