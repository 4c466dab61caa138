"""Serializers: the ``Serializer`` protocol and ``MsgpackSerializer``.

``MsgpackSerializer`` never uses pickle. Types msgpack has no native form for
travel as msgpack extension types with an explicit allow-list of codes; an
unknown code, a truncated payload or one over the size limit is a
``SerializationError``, which stores read as a miss.
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
        max_size: the largest payload ``loads`` accepts, in bytes (a bound on memory
            a corrupted or hostile payload can make the decoder allocate).
    """

    def __init__(self, *, max_size: int = 64 * 1024 * 1024) -> None:
        self.max_size = max_size
        self._packer_opts = {"use_bin_type": True, "strict_types": True, "default": self._default}
        self._ext_hook = self._ext  # bound once: decoding is on every hit of a serializing store

    def __repr__(self) -> str:
        return "MsgpackSerializer()"

    # -- encoding ----------------------------------------------------------------

    def _pack(self, value: Any) -> bytes:
        return msgpack.packb(value, **self._packer_opts)  # type: ignore[no-any-return]

    def _default(self, obj: Any) -> msgpack.ExtType:
        t = type(obj)
        if t is tuple:
            return msgpack.ExtType(_TUPLE, self._pack(list(obj)))
        if t is set:
            return msgpack.ExtType(_SET, self._pack(list(obj)))
        if t is frozenset:
            return msgpack.ExtType(_FROZENSET, self._pack(list(obj)))
        if t is _dt.datetime:
            parts = [obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second, obj.microsecond]
            return msgpack.ExtType(_DATETIME, self._pack([*parts, obj.fold, _tz_out(obj.tzinfo, obj)]))
        if t is _dt.date:
            return msgpack.ExtType(_DATE, self._pack([obj.year, obj.month, obj.day]))
        if t is _dt.time:
            parts = [obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold]
            return msgpack.ExtType(_TIME, self._pack([*parts, _tz_out(obj.tzinfo, None)]))
        if t is _dt.timedelta:
            return msgpack.ExtType(_TIMEDELTA, self._pack([obj.days, obj.seconds, obj.microseconds]))
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
        """Encode ``value``; raise ``SerializationError`` for a type outside the allow-list."""
        try:
            return self._pack(value)
        except SerializationError:
            raise
        except Exception as exc:  # e.g. a dict key msgpack refuses, or too deep a nesting
            raise SerializationError(f"cannot encode value: {type(exc).__name__}: {exc}") from exc

    # -- decoding ----------------------------------------------------------------

    def _unpack(self, data: bytes) -> Any:
        # The payload inside an extension type. ``loads`` makes the same call inline (one frame
        # less on every hit). Keywords are passed directly: a functools.partial with keywords
        # merges them into a new dict per call. raw=False and use_list=True are msgpack's defaults.
        return _unpackb(data, strict_map_key=False, ext_hook=self._ext_hook)

    def _ext(self, code: int, data: bytes) -> Any:
        if code == _TUPLE:
            return tuple(self._unpack(data))
        if code == _SET:
            return set(self._unpack(data))
        if code == _FROZENSET:
            return frozenset(self._unpack(data))
        if code == _DATETIME:
            y, mo, d, h, mi, s, us, fold, tz = self._unpack(data)
            return _dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tz_in(tz), fold=fold)
        if code == _DATE:
            return _dt.date(*self._unpack(data))
        if code == _TIME:
            h, mi, s, us, fold, tz = self._unpack(data)
            return _dt.time(h, mi, s, us, tzinfo=_tz_in(tz), fold=fold)
        if code == _TIMEDELTA:
            days, seconds, micro = self._unpack(data)
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
            return _unpackb(data, strict_map_key=False, ext_hook=self._ext_hook)
        except SerializationError:
            raise
        except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError, ...
            raise SerializationError(f"cannot decode payload: {type(exc).__name__}") from exc
