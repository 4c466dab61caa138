"""The canonical encoding of argument values, and its digest: what makes a default key.

Equal values of equal type encode to the same bytes, whatever the order of a dict or set,
the process, the machine or the Python run (never ``hash()``), and whatever ambient state
(a ``Decimal`` is encoded exactly, not in the decimal context). Types msgpack has no
canonical form for travel as tagged extension types. Anything else is ``Unsupported``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import re
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgpack

__all__ = ["PLAIN", "SIMPLE", "Unsupported", "by_values", "digest", "encode_values", "escape", "fast_pack",
           "instance_part", "keyed_instance", "memo", "norm", "plain_digest"]

_packb = msgpack.packb
_ExtType = msgpack.ExtType
_blake2b = hashlib.blake2b

# Exact types msgpack encodes canonically as they are (float is not here: -0.0 == 0.0).
PLAIN = frozenset({int, str, bytes, bool, type(None)})
# The plain types whose values are equal only to values of the same type (not bool: True == 1;
# not bytes: comparing it with a str of equal hash warns under ``python -b``), so that a tuple of
# them can key ``by_values``.
SIMPLE = frozenset({int, str, type(None)})

_SAFE = re.compile(r"[A-Za-z0-9_.\-]*")

_EPOCH = _dt.datetime(1, 1, 1)
_US = _dt.timedelta(microseconds=1)


class Unsupported(Exception):
    def __init__(self, value: object, reason: str | None = None) -> None:
        self.value_type = type(value)
        self.reason = reason


def escape(text: str) -> str:
    """Keep ``A-Z a-z 0-9 _ . -`` and percent-escape every other character (UTF-8)."""
    if _SAFE.fullmatch(text):
        return text
    return "".join(
        ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text
    )


def _sorted_join(items: Any) -> bytes:
    # Order-independent encoding of a dict or set: sort the members' own encodings.
    return b"".join(sorted(items))


def _decimal(value: Decimal) -> bytes:
    """An exact, context-free text of a Decimal, equal for equal values (``1.10`` and ``1.1``)."""
    sign, digits, exponent = value.as_tuple()
    minus = "-" if sign else ""
    if isinstance(exponent, str):  # "n" NaN, "N" sNaN, "F" Infinity (with a NaN's payload digits)
        return f"{minus}{exponent}{''.join(map(str, digits))}".encode()
    kept = list(digits)
    if not any(kept):
        return b"0"  # every zero is equal, whatever its sign or exponent
    while kept[-1] == 0:
        kept.pop()
        exponent += 1
    return f"{minus}{''.join(map(str, kept))}E{exponent}".encode()


def _big(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)


def norm(value: Any) -> Any:
    """Turn an argument value into a msgpack-encodable value that is equal for equal arguments."""
    t = type(value)
    if t in PLAIN:
        if t is int and not -(2**63) <= value < 2**64:
            return _ExtType(1, _big(value))
        if t is str:
            try:
                value.encode()
            except UnicodeEncodeError:  # a lone surrogate: msgpack takes UTF-8 only
                return _ExtType(13, value.encode("utf-8", "surrogatepass"))
        return value
    if t is float:
        return 0.0 if value == 0.0 else value  # -0.0 == 0.0
    if t is tuple or t is list:
        return [norm(v) for v in value]
    if t is dict:
        return _ExtType(2, _sorted_join(_packb([norm(k), norm(v)]) for k, v in value.items()))
    if t is set or t is frozenset:
        return _ExtType(3, _sorted_join(_packb(norm(v)) for v in value))
    cache_key = getattr(value, "__cache_key__", None)
    if cache_key is not None and not isinstance(value, type):
        try:
            part = cache_key()
        except Exception as exc:
            raise Unsupported(value, f"its __cache_key__() raised {type(exc).__name__}") from None
        try:
            return _ExtType(11, _packb([_type_name(t), norm(part)]))
        except Unsupported as inner:
            reason = f"its __cache_key__() returned a {inner.value_type.__module__}.{inner.value_type.__qualname__}"
            raise Unsupported(value, inner.reason or reason) from None
    if isinstance(value, enum.Enum):
        return _ExtType(10, f"{_type_name(t)}.{value.name}".encode())
    if isinstance(value, _dt.datetime):
        offset = value.utcoffset()
        if offset is not None:
            # Equal aware datetimes are the same instant, whatever their zone (integer
            # microseconds: no overflow at datetime.min/max).
            instant = (value.replace(tzinfo=None) - _EPOCH) // _US - offset // _US
            return _ExtType(4, b"Z" + str(instant).encode())
        return _ExtType(4, value.isoformat().encode())
    if isinstance(value, _dt.date):
        return _ExtType(5, value.isoformat().encode())
    if isinstance(value, _dt.time):
        offset = value.utcoffset()
        if offset is not None:  # equal aware times: the same time of day in UTC
            micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 10**6 + value.microsecond
            return _ExtType(6, b"Z" + str(micros - offset // _US).encode())
        return _ExtType(6, value.isoformat().encode())
    if isinstance(value, _dt.timedelta):
        return _ExtType(7, _packb([value.days, value.seconds, value.microseconds]))
    if isinstance(value, Decimal):
        return _ExtType(8, _decimal(value))
    if isinstance(value, uuid.UUID):
        return _ExtType(9, value.bytes)
    # Subclasses of the plain containers and scalars encode as their base.
    for base in (bool, int, str, bytes, float, tuple, list, dict, set, frozenset):
        if isinstance(value, base):
            convert: Any = base
            return norm(convert(value))
    raise Unsupported(value)


def _type_name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


# One packer for the plain-types fast path: with no ``default`` hook it runs in C
# without releasing the GIL, so sharing it between threads is safe.
fast_pack = msgpack.Packer().pack


def encode_values(values: Sequence[Any]) -> bytes:
    """Canonical bytes of a sequence of argument values (raises ``Unsupported``)."""
    for v in values:
        if type(v) not in PLAIN:
            break
    else:
        try:
            data: bytes = fast_pack(values)
            return data
        except (OverflowError, UnicodeEncodeError):  # an int beyond 64 bits, a lone surrogate
            pass
    try:
        data = _packb([norm(v) for v in values])
    except RecursionError:
        raise Unsupported(values, "nested too deeply, or it contains itself") from None
    return data


#: Digests of short argument encodings, for hot keys. Only encodings up to _MEMO_BYTES are
#: kept, so the memo holds at most about 4096 * 256 bytes, never large (or secret-bearing) arguments.
memo: dict[bytes, str] = {}
_MEMO_BYTES = 256
_MEMO_SIZE = 4096


#: Digests by the values themselves, for tuples of ``SIMPLE`` values with a short encoding: a hot
#: key's digest without encoding its arguments again. Same bound as ``memo``.
by_values: dict[tuple[Any, ...], str] = {}


def plain_digest(values: tuple[Any, ...], simple: bool) -> str | None:
    """The digest of ``values`` (of ``PLAIN`` types; ``simple``: ``SIMPLE`` ones, kept in ``by_values``),
    or None where the fast packer refuses one (an int beyond 64 bits, a lone surrogate)."""
    try:
        data: bytes = fast_pack(values)
    except (OverflowError, UnicodeEncodeError):
        return None
    text = digest(data)
    if simple and len(data) <= _MEMO_BYTES:
        if len(by_values) >= _MEMO_SIZE:
            by_values.clear()
        by_values[values] = text
    return text


def digest(data: bytes) -> str:
    """32 hex characters of BLAKE2b over ``data``, memoized for short encodings.

    The memo is keyed by the canonical bytes, never by the argument values
    (``1``, ``1.0`` and ``True`` are equal dict keys but must not share a memo slot).
    """
    text = memo.get(data)
    if text is None:
        text = _blake2b(data, digest_size=16).hexdigest()
        if len(data) <= _MEMO_BYTES:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[data] = text
    return text


def keyed_instance(instance: Any) -> bool:
    return isinstance(instance, type) or hasattr(type(instance), "__cache_key__")


def instance_part(instance: Any) -> Any:
    """The key part for ``self``/``cls``: the class for classmethods, ``__cache_key__()`` for instances."""
    if isinstance(instance, type):
        return _ExtType(12, _type_name(instance).encode())
    return norm(instance)


