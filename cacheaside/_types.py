"""Plain data shared by every layer: ``MISS``, the stored ``Entry``, ``CORRUPT``, ``Lease``, ``to_seconds``
and ``PartialEviction``.

Whether an entry is fresh is the read policy's to say (``policy.fresh``, ``policy.ReadPolicy.decide``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final


class _Miss(enum.Enum):
    MISS = "MISS"

    def __repr__(self) -> str:
        return "MISS"


#: Returned where "no value" must differ from a cached ``None``.
MISS: Final = _Miss.MISS


@dataclass(slots=True)
class Entry:
    """One cached value with everything a reader needs to judge it in one lookup.

    Times are wall-clock seconds (``time.time()`` or the store's clock) so that
    entries written by one process can be judged by another.
    """

    value: Any
    stored_at: float
    ttl: float
    #: Seconds past ``ttl`` the entry is kept for stale serving (stale-while-revalidate / stale-if-error).
    grace: float = 0.0
    #: Seconds the computation took (XFetch scales early refresh by it).
    delta: float = 0.0
    tags: tuple[str, ...] = ()


    @property
    def retain(self) -> float:
        """Seconds the store keeps the entry: its ttl plus the stale window."""
        return self.ttl + self.grace


#: What a store's ``get`` returns for bytes it holds but cannot read (undecodable, another
#: format version, or an entry written for another key): a miss that the call site counts
#: as a store error. Never fresh, never stale-servable, so the key is recomputed and overwritten.
CORRUPT: Final = Entry(None, -math.inf, 0.0)


@dataclass(slots=True, frozen=True)
class Lease:
    """The right to fill a key, taken on a miss (``Store.acquire``).

    ``token`` identifies the key's fill epoch: an eviction of the key revokes it,
    and a value set with a revoked token is refused (stale-set protection).
    Concurrent misses in one process that hold the same token share one
    computation. ``owner`` is False when another process holds the lease and
    this one should wait for its value (``Store.watch``). ``entry`` is a value
    that was found after all (someone filled the key between get and acquire).
    """

    token: Hashable
    owner: bool = True
    entry: Entry | None = field(default=None, compare=False)
    #: What the store needs to wait for the holder's value (``Store.watch``), when not the owner.
    wait: Any = field(default=None, compare=False)


def to_seconds(value: object, *, owner: str, param: str) -> float:
    """A positive finite duration in seconds from an int, float or timedelta, else a clear error."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{owner}: {param} must be seconds (int or float) or a datetime.timedelta, "
            f"got {type(value).__name__}"
        )
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(
            f"{owner}: {param} must be a positive, finite number of seconds (at most {MAX_SECONDS:.0e}), got {value!r}"
        )
    return seconds


#: The longest duration taken anywhere (about 31 years): Redis refuses expiries far beyond it.
MAX_SECONDS = 1e9


def check_prefix(prefix: object, owner: str) -> str:
    """A store's key prefix: a non-empty str, else a clear error."""
    if not isinstance(prefix, str):
        raise TypeError(f"{owner}: prefix must be a non-empty str, got {type(prefix).__name__}")
    if not prefix:
        raise ValueError(f"{owner}: prefix must be a non-empty str, got ''")
    return prefix


class ArgumentsChanged(Exception):
    """A background refresh found its call's arguments changed since the call (the caller mutated
    an argument after the call returned): its value would be stored under the old key, so it is not."""

    def __init__(self) -> None:
        super().__init__("the call's arguments changed after it returned (mutated by the caller); "
                         "the refreshed value is not stored")


class OtherShard(Exception):
    """A call's store work failed on a shard other than its key's (a tag set's, on Redis Cluster),
    which was told already: the call's own shard is not charged. ``exc``: the fault, or None when
    that shard's breaker was open and nothing was sent."""

    def __init__(self, key: str, exc: Exception | None) -> None:
        what = "is bypassed" if exc is None else f"failed ({type(exc).__name__})"
        super().__init__(f"the shard of {key!r} {what}")
        self.key = key
        self.exc = exc


class PartialEviction(Exception):
    """A store on several shards (Redis Cluster) took an eviction only in part.

    ``failed``: the entry keys it could not evict on one node, each group with the error
    (the keys of a group share a node; the first stands for it); ``unresolved``: the tags
    whose tag set could not be read, each with the tag set's key and the error: their
    entries may be on any shard. Everything else was evicted.
    """

    def __init__(self, failed: list[tuple[list[str], Exception]],
                 unresolved: list[tuple[str, str, Exception]]) -> None:
        super().__init__(f"{len(failed)} node(s) failed, {len(unresolved)} tag set(s) unread")
        self.failed = failed
        self.unresolved = unresolved


#: The first character of a function's own tag (every entry of it carries one; ``f.clear()`` evicts it):
#: a NUL, which ``invalidate_tags`` and writers refuse in the tags they are given.
CLEAR_MARK = "\x00"
