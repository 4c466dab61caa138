"""Serializers: the ``Serializer`` protocol and ``MsgpackSerializer``.

``MsgpackSerializer`` never uses pickle. Types msgpack has no native form for
travel as msgpack extension types with an explicit allow-list of codes; an
unknown code, a truncated payload, one over the size limit or one nested deeper
than msgpack allows is a ``SerializationError``, which stores read as a miss.
A value it would refuse to read back is refused when written.

Structured values (tuples, sets, frozensets, datetimes, dates, times, timedeltas) are
arrays whose first item is an empty extension value marking their type, rebuilt by
``list_hook``; Decimal, UUID and big ints are extension values holding bytes. So a
payload is read by one call of msgpack's C decoder, whose nesting msgpack bounds
(deeper than its packer goes, so what is written can be read). An extension value
holding packed bytes would be read by a nested call of the C decoder, whose frame takes
about 40 KB of C stack: a few hundred nested tuples once overflowed the reading
thread's stack and crashed the process, and a thread with a small stack needs far fewer.
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

_ExtType = msgpack.ExtType

#: The first item of an array that is a tuple, a set... (an empty extension value of its code).
_MARKS = {code: _ExtType(code, b"") for code in (_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME, _TIMEDELTA)}
_TUPLE_MARK, _SET_MARK, _FROZENSET_MARK = _MARKS[_TUPLE], _MARKS[_SET], _MARKS[_FROZENSET]
_DATETIME_MARK, _DATE_MARK, _TIME_MARK, _TIMEDELTA_MARK = (
    _MARKS[_DATETIME], _MARKS[_DATE], _MARKS[_TIME], _MARKS[_TIMEDELTA]
)


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
    """

    def __init__(self, *, max_size: int = 64 * 1024 * 1024) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"MsgpackSerializer: max_size must be a positive int, got {max_size!r}")
        self.max_size = max_size
        self._packer_opts = {"use_bin_type": True, "strict_types": True, "default": self._default}
        # Bound once: decoding is on every hit of a serializing store.
        self._ext_hook = self._ext
        self._list_hook = _rebuild

    def __repr__(self) -> str:
        return "MsgpackSerializer()"

    # -- encoding ----------------------------------------------------------------

    def _default(self, obj: Any) -> Any:
        t = type(obj)
        if t is tuple:
            return [_TUPLE_MARK, *obj]
        if t is set:
            return [_SET_MARK, *obj]
        if t is frozenset:
            return [_FROZENSET_MARK, *obj]
        if t is _dt.datetime:
            parts = [obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second, obj.microsecond]
            return [_DATETIME_MARK, *parts, obj.fold, _tz_out(obj.tzinfo, obj)]
        if t is _dt.date:
            return [_DATE_MARK, obj.year, obj.month, obj.day]
        if t is _dt.time:
            return [_TIME_MARK, obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold, _tz_out(obj.tzinfo, None)]
        if t is _dt.timedelta:
            return [_TIMEDELTA_MARK, obj.days, obj.seconds, obj.microseconds]
        if t is Decimal:
            return msgpack.ExtType(_DECIMAL, str(obj).encode())
        if t is uuid.UUID:
            return msgpack.ExtType(_UUID, obj.bytes)
        if t is int:  # beyond msgpack's 64 bits: two's-complement bytes (any size; str() stops at 4,300 digits)
            return msgpack.ExtType(_BIGINT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True))
        raise SerializationError(
            f"cannot encode a {t.__module__}.{t.__qualname__}: MsgpackSerializer takes None, bool, int, "
            "float, str, bytes, list, tuple, dict, set, frozenset, datetime, date, time, timedelta, "
            "Decimal and UUID (exact types, nested freely)"
        )

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise ``SerializationError`` for what ``loads`` would not read back.

        That is a type outside the allow-list, a payload over ``max_size``, or a nesting
        deeper than msgpack allows.
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

    def _ext(self, code: int, data: bytes) -> Any:
        if not data:
            mark = _MARKS.get(code)
            if mark is not None:
                return mark
        if code == _DECIMAL:
            return Decimal(data.decode())
        if code == _UUID:
            return uuid.UUID(bytes=data)
        if code == _BIGINT:
            return int.from_bytes(data, "big", signed=True)
        raise SerializationError(f"unknown msgpack extension code {code}")

    def loads(self, data: bytes) -> Any:
        """Decode ``data``; raise ``SerializationError`` for anything malformed."""
        if len(data) > self.max_size:
            raise SerializationError(f"payload of {len(data)} bytes is over max_size={self.max_size}")
        try:
            # Keywords passed directly: a functools.partial with keywords merges them into a new
            # dict per call, on every hit of a serializing store.
            return _unpackb(data, strict_map_key=False, ext_hook=self._ext_hook, list_hook=self._list_hook)
        except SerializationError:
            raise
        except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError, ...
            raise SerializationError(f"cannot decode payload: {type(exc).__name__}") from exc


def _rebuild(items: list[Any]) -> Any:
    """An array as msgpack decoded it: the structured value its first item marks, else the list."""
    if not items or type(items[0]) is not _ExtType:  # the marks are the only extension values left
        return items
    code = items[0].code
    if code == _TUPLE:
        return tuple(items[1:])
    if code == _SET:
        return set(items[1:])
    if code == _FROZENSET:
        return frozenset(items[1:])
    if code == _DATETIME:
        _, y, mo, d, h, mi, s, us, fold, tz = items
        return _dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tz_in(tz), fold=fold)
    if code == _DATE:
        return _dt.date(*items[1:])
    if code == _TIME:
        _, h, mi, s, us, fold, tz = items
        return _dt.time(h, mi, s, us, tzinfo=_tz_in(tz), fold=fold)
    _, days, seconds, micro = items  # _TIMEDELTA
    return _dt.timedelta(days=days, seconds=seconds, microseconds=micro)
