"""What ``RedisStore`` sends and how it reads the replies: shared by its sync and async methods.

Each method here builds one command (a script, its keys and arguments, the tags a fill
records in the same pipeline) or reads one reply; ``RedisStore`` only sends them, with
blocking calls or awaits.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Collection, Sequence
from typing import Any

from .._encoding import escape
from .._types import CORRUPT, Entry, Lease
from ..exceptions import warn
from ..policy import fresh
from ..serializers import Serializer
from . import redis_scripts as lua
from ._redis_faults import tag_policy_risk
from .envelope import decode, encode, tag_text

__all__ = ["Commands"]


def _token(lease: Lease) -> tuple[bytes, bytes]:
    """A Redis lease's token: (epoch, holder)."""
    token: tuple[bytes, bytes] = lease.token  # type: ignore[assignment]
    return token


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class Commands:
    """The commands and replies of a ``RedisStore`` (its attributes are set by ``RedisStore.__init__``)."""

    client: Any
    prefix: str
    serializer: Serializer
    clock: Any
    _id: str
    _serial: Any
    _record_ms: int
    _acquire: Any
    _set: Any
    _release: Any
    _delete: Any
    _tag: Any
    _tagged: dict[int, Any]
    _peek: Any

    def _process(self) -> str:
        """This store in this process: the prefix of its holder ids (the pid keeps forked children apart)."""
        return f"{self._id}.{os.getpid()}."

    def _send(self, script: Any, keys: Sequence[str], args: Sequence[Any], tags: Collection[str], px: int) -> Any:
        """Send ``script`` (a reply, or its awaitable) in one ``EVALSHA`` (redis-py's ``Script``, which
        reloads a script the server lost): alone, or, with a fill's ``tags``, its variant that also
        records them (``redis_scripts.with_tags``), kept ``px`` ms from now. One server only: a cluster
        sends ``TAG`` to each tag set's node (``_redis_spread``). The tags are recorded after the
        step, in the same script: a tag eviction cannot run in between, and the computation starts
        only once the script has replied.
        """
        if not tags:
            return script(keys=keys, args=args)
        index = lua.index_key(self.prefix)
        names = [*keys, index, *(lua.tag_key(self.prefix, tag) for tag in dict.fromkeys(tags))]
        return self._tagged[id(script)](keys=names, args=[*args, px])

    def _warn_policy(self, reply: Any) -> None:
        problem = tag_policy_risk(reply)
        if problem is not None:
            warn(f"{self!r}: {problem}")

    def _timed(self, key: str, reply: Sequence[Any]) -> tuple[Entry | None, float]:
        """The entry in a ``PEEK`` reply, and the time now as its ``stored_at``'s clock would tell it if
        it ran like the server's since: judged on it, the entry expires when the server says, whatever
        the skew between the writer's clock and this host's."""
        data, pttl = reply
        entry = None if data is None else decode(key, data, self.serializer)
        if entry is None or entry is CORRUPT or pttl < 0:
            return entry, self.clock()
        return entry, entry.stored_at + entry.retain - pttl / 1000

    def _acquire_args(self, key: str, tags: Collection[str], mode: str, seen: float | None = None) -> dict[str, Any]:
        holder = f"{self._process()}{next(self._serial)}"
        args = [holder, tag_text(tuple(tags)), mode, b"" if seen is None else struct.pack("<d", seen)]
        return {"script": self._acquire, "keys": [key, lua.lease_key(self.prefix, key)], "args": args,
                "tags": tags, "px": self._record_ms}

    def _lease(self, key: str, reply: Sequence[Any], holder: str) -> Lease | None:
        """The lease in an acquire reply; None when it held a value that does not decode.

        A holder of this store in this process makes the caller an owner too: it shares
        that computation's in-process flight instead of waiting on Redis.
        """
        if len(reply) == 1:
            entry = decode(key, reply[0], self.serializer)
            return None if entry is CORRUPT else Lease(None, True, entry)
        epoch, held_by = reply[1], reply[2]
        if len(reply) == 3 or held_by.startswith(self._process().encode()):
            return Lease((epoch, held_by), True)
        return Lease((epoch, held_by), False, wait=(holder, time.monotonic() + reply[3] / 1000))

    def _set_args(self, key: str, entry: Entry, lease: Lease) -> dict[str, Any]:
        payload = encode(key, entry, self.serializer)  # SerializationError before any I/O
        epoch, holder = _token(lease)
        px = max(1, int(entry.retain * 1000))
        return {"script": self._set, "keys": [key, lua.lease_key(self.prefix, key)],
                "args": [epoch, holder, payload, px], "tags": entry.tags, "px": px}

    def _release_args(self, key: str, lease: Lease) -> dict[str, Any]:
        return {"script": self._release, "keys": [key, lua.lease_key(self.prefix, key)], "args": [_token(lease)[1]]}

    def _delete_args(self, keys: Collection[str], tags: Collection[str]) -> dict[str, Any]:
        names = list(dict.fromkeys(keys))
        count = len(names)
        unique = list(dict.fromkeys(tags))
        names.extend(lua.tag_key(self.prefix, t) for t in unique)
        args = [count, self.prefix, *(escape(t) for t in unique)]
        return {"script": self._delete, "keys": names, "args": args}

    def _entry(self, key: str, data: bytes | None) -> Entry | None:
        return None if data is None else decode(key, data, self.serializer)

    def _woken(self, key: str, reply: Any) -> Entry | None:
        """The entry a holder handed over through a wake list; None when it let go (``0``)."""
        if reply is None or reply[1] == b"0":
            return None
        entry = self._entry(key, reply[1])
        if entry is not None and entry is not CORRUPT and fresh(entry, self.clock()):
            return entry
        return None

    def _wait_plan(self, key: str, lease: Lease, timeout: float) -> tuple[str, float]:
        waiter, until = lease.wait
        return lua.wake_key(self.prefix, key, waiter), min(time.monotonic() + timeout, until)

    def _purge_patterns(self) -> list[str]:
        prefix = _glob_escape(self.prefix)
        return [f"{prefix}:*", f"{prefix}|*"]

    @staticmethod
    def _mode(refresh: bool, take_over: bool) -> str:
        return ("r" if refresh else "") + ("t" if take_over else "")
