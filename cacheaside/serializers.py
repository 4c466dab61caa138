"""Serializers: the ``Serializer`` protocol and ``MsgpackSerializer``.

``MsgpackSerializer`` never uses pickle. Types msgpack has no native form for
travel as msgpack extension types with an explicit allow-list of codes; an
unknown code, a truncated payload, one over the size limit or one nested deeper
than the depth limit is a ``SerializationError``, which stores read as a miss.
A value it would refuse to read back is refused when written.

Why a depth limit: each extension value (a tuple, a set, a datetime) is decoded by
a nested call of msgpack's C decoder, whose frame is large (about 40 KB of C stack);
a few hundred nested tuples would overflow the reading thread's stack and crash the
process, whatever Python's recursion limit. msgpack bounds the nesting of lists and
dicts itself (``StackError``).
"""

from __future__ import annotations

import datetime as _dt
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import msgpack

from .exceptions import SerializationError

_unpackb = msgpack.unpackb

__all__ = ["MsgpackSerializer", "Serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back. ``dumps`` and ``loads`` raise ``SerializationError``."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


# Extension codes. Never reuse a code for another meaning: stored payloads outlive deploys.
_TUPLE, _SET, _FROZENSET, _BIGINT, _DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID = range(1, 11)


def _tz_out(tz: _dt.tzinfo | None, at: _dt.datetime | None) -> Any:
    if tz is None:
        return None
    if isinstance(tz, zoneinfo.ZoneInfo):
        return ["z", tz.key]
    if isinstance(tz, _dt.timezone):
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        default_name = _dt.timezone(offset).tzname(None)
        return ["o", offset.days, offset.seconds, offset.microseconds, None if name == default_name else name]
    raise SerializationError(
        f"cannot encode tzinfo {type(tz).__module__}.{type(tz).__qualname__}: "
        "use datetime.timezone or zoneinfo.ZoneInfo"
    )


def _tz_in(spec: Any) -> _dt.tzinfo | None:
    if spec is None:
        return None
    if spec[0] == "z":
        return zoneinfo.ZoneInfo(spec[1])
    offset = _dt.timedelta(days=spec[1], seconds=spec[2], microseconds=spec[3])
    return _dt.timezone(offset) if spec[4] is None else _dt.timezone(offset, spec[4])


class MsgpackSerializer:
    """msgpack with type fidelity for the types listed in the contract.

    Args:
        max_size: the largest payload, in bytes: ``dumps`` refuses a value that encodes
            to more, ``loads`` a payload over it (a bound on what a corrupted or hostile
            payload can make the decoder allocate).
        max_depth: how deeply tuples, sets, frozensets and the other extension types may
            nest inside each other (see the module's docstring).
    """

    def __init__(self, *, max_size: int = 64 * 1024 * 1024, max_depth: int = 32) -> None:
        for name, value in (("max_size", max_size), ("max_depth", max_depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MsgpackSerializer: {name} must be a positive int, got {value!r}")
        self.max_size = max_size
        self.max_depth = max_depth
        self._packer_opts = {"use_bin_type": True, "strict_types": True, "default": self._default}
        self._ext_hook = self._ext  # bound once: decoding is on every hit of a serializing store

    def __repr__(self) -> str:
        return "MsgpackSerializer()"

    # -- encoding ----------------------------------------------------------------

    def _pack(self, value: Any, depth: int) -> bytes:
        """``value`` packed inside an extension value nested ``depth`` deep."""
        if depth > self.max_depth:
            raise SerializationError(
                f"cannot encode value: tuples, sets or other extension types nested more than "
                f"max_depth={self.max_depth} deep"
            )
        return msgpack.packb(  # type: ignore[no-any-return]
            value, use_bin_type=True, strict_types=True, default=lambda obj: self._default(obj, depth)
        )

    def _default(self, obj: Any, depth: int = 0) -> msgpack.ExtType:
        t = type(obj)
        inner = depth + 1
        if t is tuple:
            return msgpack.ExtType(_TUPLE, self._pack(list(obj), inner))
        if t is set:
            return msgpack.ExtType(_SET, self._pack(list(obj), inner))
        if t is frozenset:
            return msgpack.ExtType(_FROZENSET, self._pack(list(obj), inner))
        if t is _dt.datetime:
            parts = [obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second, obj.microsecond]
            return msgpack.ExtType(_DATETIME, self._pack([*parts, obj.fold, _tz_out(obj.tzinfo, obj)], inner))
        if t is _dt.date:
            return msgpack.ExtType(_DATE, self._pack([obj.year, obj.month, obj.day], inner))
        if t is _dt.time:
            parts = [obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold]
            return msgpack.ExtType(_TIME, self._pack([*parts, _tz_out(obj.tzinfo, None)], inner))
        if t is _dt.timedelta:
            return msgpack.ExtType(_TIMEDELTA, self._pack([obj.days, obj.seconds, obj.microseconds], inner))
        if t is Decimal:
            return msgpack.ExtType(_DECIMAL, str(obj).encode())
        if t is uuid.UUID:
            return msgpack.ExtType(_UUID, obj.bytes)
        if t is int:  # beyond msgpack's 64 bits
            return msgpack.ExtType(_BIGINT, str(obj).encode())
        raise SerializationError(
            f"cannot encode a {t.__module__}.{t.__qualname__}: MsgpackSerializer takes None, bool, int, "
            "float, str, bytes, list, tuple, dict, set, frozenset, datetime, date, time, timedelta, "
            "Decimal and UUID (exact types, nested freely)"
        )

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise ``SerializationError`` for what ``loads`` would not read back.

        That is a type outside the allow-list, a payload over ``max_size``, or extension
        types nested deeper than ``max_depth``.
        """
        try:
            data: bytes = msgpack.packb(value, **self._packer_opts)
        except SerializationError:
            raise
        except Exception as exc:  # e.g. a dict key msgpack refuses, or too deep a nesting
            raise SerializationError(f"cannot encode value: {type(exc).__name__}: {exc}") from exc
        if len(data) > self.max_size:
            raise SerializationError(f"the value encodes to {len(data)} bytes, over max_size={self.max_size}")
        return data

    # -- decoding ----------------------------------------------------------------

    def _unpack(self, data: bytes, depth: int) -> Any:
        """The payload inside an extension value nested ``depth`` deep (each level is a C decoder frame)."""
        if depth > self.max_depth:
            raise SerializationError(f"extension types nested more than max_depth={self.max_depth} deep")
        # raw=False and use_list=True are msgpack's defaults.
        return _unpackb(data, strict_map_key=False, ext_hook=lambda code, inner: self._ext(code, inner, depth))

    def _ext(self, code: int, data: bytes, depth: int = 0) -> Any:
        inner = depth + 1
        if code == _TUPLE:
            return tuple(self._unpack(data, inner))
        if code == _SET:
            return set(self._unpack(data, inner))
        if code == _FROZENSET:
            return frozenset(self._unpack(data, inner))
        if code == _DATETIME:
            y, mo, d, h, mi, s, us, fold, tz = self._unpack(data, inner)
            return _dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tz_in(tz), fold=fold)
        if code == _DATE:
            return _dt.date(*self._unpack(data, inner))
        if code == _TIME:
            h, mi, s, us, fold, tz = self._unpack(data, inner)
            return _dt.time(h, mi, s, us, tzinfo=_tz_in(tz), fold=fold)
        if code == _TIMEDELTA:
            days, seconds, micro = self._unpack(data, inner)
            return _dt.timedelta(days=days, seconds=seconds, microseconds=micro)
        if code == _DECIMAL:
            return Decimal(data.decode())
        if code == _UUID:
            return uuid.UUID(bytes=data)
        if code == _BIGINT:
            return int(data.decode())
        raise SerializationError(f"unknown msgpack extension code {code}")

    def loads(self, data: bytes) -> Any:
        """Decode ``data``; raise ``SerializationError`` for anything malformed."""
        if len(data) > self.max_size:
            raise SerializationError(f"payload of {len(data)} bytes is over max_size={self.max_size}")
        try:
            # Keywords passed directly: a functools.partial with keywords merges them into a new
            # dict per call, on every hit of a serializing store.
            return _unpackb(data, strict_map_key=False, ext_hook=self._ext_hook)
        except SerializationError:
            raise
        except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError, ...
            raise SerializationError(f"cannot decode payload: {type(exc).__name__}") from exc
