"""``RedisStore`` on Redis Cluster: fills that record tags, and evictions whose keys live on many nodes.

A cluster runs a script on one node, and redis-py sends one only with keys of one slot (and no
script inside a cluster pipeline). A hit, an acquire, a set and a release touch one slot
(``redis_scripts``), so they are sent as on one server. What differs:

- a fill with tags runs its script, then one ``TAG`` per tag (each tag set is in a slot of its
  own), in that order, before the computation starts, then one ``INDEX`` on the index of tag
  sets (and a ``REAP`` per dead set it returns, on that set's node; best effort: a set this
  misses is indexed again by its next ``TAG``);
- an eviction reads the members of its tags' sets (one ``ZRANGE`` per tag: a cluster pipeline
  fails whole when any node is down, so one sick shard would fail the healthy ones), then sends
  one ``DELETE_SPREAD`` per node that holds any of the keys, routed by
  one of them; the tag sets keep their members (dropped once dead, by the next ``TAG`` or a sweep). When the
  topology changed in between (a key its node no longer serves), that node's keys go one by
  one, each routed by redis-py. Every node is tried; what failed is reported per node
  (``PartialEviction``), so that each shard's guard owes only its own keys.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Generator, Sequence
from typing import Any

import redis

from .._encoding import escape
from .._types import OtherShard, PartialEviction
from ..guard import BYPASS, Guard
from . import redis_scripts as lua
from ._redis_faults import moved_away

__all__ = ["Spread"]

logger = logging.getLogger("cacheaside")

#: One node's share of an eviction: the entry keys it drops, and the arguments of its script.
Part = tuple[list[str], list[Any]]
#: One command of a fill: a ``Script`` (or a callable like one), its keys and its arguments.
Call = tuple[Any, Sequence[Any], Sequence[Any]]


class Spread:
    """The cluster side of a ``RedisStore`` (its attributes are set by ``RedisStore.__init__``)."""

    client: Any
    prefix: str
    _tag: Any
    _index: Any
    _reap: Any
    _delete_spread: Any
    guard: Any

    def locate(self, key: str) -> tuple[int, str]:
        """``key``'s hash slot and the node serving it now (``host:port``), from the client's topology."""
        return int(self.client.keyslot(key)), str(self.client.get_node_from_key(key).name)

    def tag_set(self, tag: str) -> str:
        return lua.tag_key(self.prefix, tag)

    def _fill_steps(self, script: Any, keys: Sequence[str], args: Sequence[Any], tags: Collection[str],
                    px: int) -> Generator[Call, Any, Any]:
        """A fill with tags, as steps: yields each command to send and is sent its reply (or the
        exception it raised); returns the script's reply. The script and its ``TAG``s must succeed;
        indexing the tag sets is best effort (a set left out is indexed again by its next ``TAG``).

        A tag set's shard is asked first and told how its ``TAG`` went: while its breaker is open the
        fill takes no lease and sends nothing (``OtherShard``), and a ``TAG`` that fails is charged to
        that shard, not to the key's."""
        names = [self.tag_set(tag) for tag in tags]
        guards = [self._admitted(name) for name in names]
        reply = yield (script, keys, args)
        first = _ok(reply)
        pairs: list[Any] = []
        for name, guard in zip(names, guards, strict=True):
            reply = yield (self._tag, [name], [keys[0], px])
            if isinstance(reply, Exception):
                guard.failed(reply, "a tagged fill")
                raise OtherShard(name, reply) from reply
            guard.ok(wrote=True)
            pairs += [name, reply]
        index = lua.index_key(self.prefix)
        try:
            guard = self._admitted(index)
            for name in _ok((yield (self._index, [index], pairs))):
                until = _ok((yield (self._reap, [name], [])))
                if until:
                    _ok((yield (self._reindex, [index], [name, until])))
            guard.ok(wrote=True)
        except OtherShard:
            pass
        except Exception as exc:
            guard.failed(exc, "indexing tag sets")
            logger.debug("cacheaside: indexing tag sets on %r failed (%s)", self, type(exc).__name__)
        return first

    def _admitted(self, key: str) -> Guard:
        """The guard of ``key``'s shard, if it lets a call touch it (else ``OtherShard``, nothing sent)."""
        guard: Guard = self.guard.of(key)
        if guard.admit() == BYPASS:
            raise OtherShard(key, None)
        return guard

    def _reindex(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Index a swept tag set again until its last member dies (a reply, or its awaitable)."""
        return self.client.zadd(keys[0], {args[0]: args[1]}, gt=True)

    def _members(self, tags: list[str], replies: Sequence[Any]) -> tuple[list[tuple[str, list[str]]],
                                                                        list[tuple[str, str, Exception]]]:
        """Each tag's members from its ``ZRANGE`` reply, and the tags whose set could not be read."""
        found, unresolved = [], []
        for tag, reply in zip(tags, replies, strict=True):
            if isinstance(reply, redis.ResponseError) and str(reply).startswith("WRONGTYPE"):
                reply = []  # something else under the name: no member recorded (the next TAG replaces it)
            if isinstance(reply, Exception):
                unresolved.append((tag, self.tag_set(tag), reply))
            else:
                found.append((tag, [m.decode() if isinstance(m, bytes) else m for m in reply]))
        return found, unresolved

    def _parts(self, keys: Collection[str], members: list[tuple[str, list[str]]]) -> list[Part]:
        """The eviction's share of each node: ``keys`` unconditionally, and each tag's members that carry it."""
        nodes: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
        for key in dict.fromkeys(keys):
            nodes.setdefault(self.locate(key)[1], ([], {}))[0].append(key)
        for tag, names in members:
            for name in names:
                nodes.setdefault(self.locate(name)[1], ([], {}))[1].setdefault(escape(tag), []).append(name)
        parts = []
        for plain, tagged in nodes.values():
            argv: list[Any] = [len(plain), self.prefix, *plain]
            dropped = list(plain)
            for tag, names in tagged.items():
                argv += [tag, len(names), *names]
                dropped += names
            parts.append((dropped, argv))
        return parts

    def _one_by_one(self, part: Part) -> list[tuple[list[Any], list[Any]]]:
        """A node's share as one script per key (keys, args), each routed by redis-py on its own."""
        argv = part[1]
        count = int(argv[0])
        calls = [([key], [1, self.prefix, key]) for key in argv[2:2 + count]]
        i = 2 + count
        while i < len(argv):
            tag, size = argv[i], int(argv[i + 1])
            calls += [([name], [0, self.prefix, tag, 1, name]) for name in argv[i + 2:i + 2 + size]]
            i += 2 + size
        return calls

    def _spread_steps(self, keys: Collection[str], tags: Collection[str]) -> Generator[Any, Any, None]:
        """An eviction on a cluster, as steps: yields a tag set's name to read (``ZRANGE``), then each
        node's ``Part`` to send, and is sent the reply or the exception; raises ``PartialEviction`` at
        the end if anything failed. The sync and async methods only carry the steps out."""
        names = list(dict.fromkeys(tags))
        replies = []
        for tag in names:  # one by one: a cluster pipeline fails whole when any node is down
            replies.append((yield self.tag_set(tag)))
        members, unresolved = self._members(names, replies)
        failed = []
        for part in self._parts(keys, members):
            error = yield part
            if error is not None:
                failed.append((part[0], error))
        if failed or unresolved:
            raise PartialEviction(failed, unresolved)

    # -- sync ----------------------------------------------------------------------------

    @staticmethod
    def _drive(steps: Generator[Any, Any, Any], perform: Any) -> Any:
        """Carry out ``steps``: each with ``perform``, sending back its reply or exception."""
        reply: Any = None
        try:
            while True:
                step = steps.send(reply)
                try:
                    reply = perform(step)
                except Exception as exc:
                    reply = exc
        except StopIteration as stop:
            return stop.value

    def _fill(self, script: Any, keys: Sequence[str], args: Sequence[Any], tags: Collection[str], px: int) -> Any:
        return self._drive(self._fill_steps(script, keys, args, tags, px), lambda c: c[0](keys=c[1], args=c[2]))

    def _spread_delete(self, keys: Collection[str], tags: Collection[str]) -> None:
        self._drive(self._spread_steps(keys, tags), self._spread_step)

    def _spread_step(self, step: Part | str) -> Any:
        if not isinstance(step, tuple):
            return self.client.zrange(step, 0, -1)
        try:
            self._delete_spread(keys=step[0][:1], args=step[1])
        except redis.ResponseError as exc:
            if not moved_away(exc):
                raise
            for keys, args in self._one_by_one(step):
                self._delete_spread(keys=keys, args=args)
        return None

    # -- asyncio -------------------------------------------------------------------------

    @staticmethod
    async def _adrive(steps: Generator[Any, Any, Any], perform: Any) -> Any:
        reply: Any = None
        try:
            while True:
                step = steps.send(reply)
                try:
                    reply = await perform(step)
                except Exception as exc:
                    reply = exc
        except StopIteration as stop:
            return stop.value

    async def _afill(self, script: Any, keys: Sequence[str], args: Sequence[Any], tags: Collection[str],
                     px: int) -> Any:
        return await self._adrive(self._fill_steps(script, keys, args, tags, px),
                                  lambda c: c[0](keys=c[1], args=c[2]))

    async def _aspread_delete(self, keys: Collection[str], tags: Collection[str]) -> None:
        await self._adrive(self._spread_steps(keys, tags), self._aspread_step)

    async def _aspread_step(self, step: Part | str) -> Any:
        if not isinstance(step, tuple):
            return await self.client.zrange(step, 0, -1)
        try:
            await self._delete_spread(keys=step[0][:1], args=step[1])
        except redis.ResponseError as exc:
            if not moved_away(exc):
                raise
            for keys, args in self._one_by_one(step):
                await self._delete_spread(keys=keys, args=args)
        return None


def _ok(reply: Any) -> Any:
    """A step's reply, or the exception it raised, raised here."""
    if isinstance(reply, Exception):
        raise reply
    return reply
