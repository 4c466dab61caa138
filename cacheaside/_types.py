"""Plain data shared by every layer: the ``MISS`` sentinel, the stored ``Entry``, ``CORRUPT`` and ``Lease``."""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
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
    def expires_at(self) -> float:
        return self.stored_at + self.ttl

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
