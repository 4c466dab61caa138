"""The bytes of one entry in a shared store: a fixed binary header, then the serialized value.

Layout (little-endian)::

    0   magic       1 byte   0xCA
    1   version     1 byte   FORMAT_VERSION
    2   key check   4 bytes  CRC-32 of the key the entry was written for
    6   stored_at   double   wall-clock seconds
    14  ttl         double   seconds the value is fresh
    22  grace       double   seconds past ttl it is kept for stale serving
    30  delta       double   seconds its computation took
    38  value       the serializer's bytes

The header is fixed so that the store's Lua scripts can judge freshness
(``struct.unpack('<dd', v, 7)``) without decoding the value, and the key check
catches a reply meant for another key (a connection that got out of step) so it
is never served. Anything that does not parse is ``CORRUPT``: a miss, never an
exception.
"""

from __future__ import annotations

import struct
import zlib

from .._types import CORRUPT, Entry
from ..serializers import Serializer

__all__ = ["FORMAT_VERSION", "HEADER_SIZE", "MAGIC", "decode", "encode"]

MAGIC = 0xCA
#: Bump when the layout changes: entries of another version read as misses.
FORMAT_VERSION = 1
_HEADER = struct.Struct("<BBIdddd")
HEADER_SIZE = _HEADER.size  # 38


_unpack_header = _HEADER.unpack_from
_crc32 = zlib.crc32


def key_check(key: str) -> int:
    return _crc32(key.encode())


def encode(key: str, entry: Entry, serializer: Serializer) -> bytes:
    """The stored bytes for ``entry`` under ``key``; raises ``SerializationError``."""
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, key_check(key), entry.stored_at, entry.ttl, entry.grace, entry.delta
    )
    return header + serializer.dumps(entry.value)


def decode(key: str, data: bytes, serializer: Serializer) -> Entry:
    """The entry in ``data`` read under ``key``, or ``CORRUPT``. On every hit: kept flat."""
    try:
        magic, version, check, stored_at, ttl, grace, delta = _unpack_header(data)
    except struct.error:  # shorter than a header
        return CORRUPT
    if magic != MAGIC or version != FORMAT_VERSION or check != _crc32(key.encode()):
        return CORRUPT
    try:
        value = serializer.loads(data[HEADER_SIZE:])
    except Exception:  # SerializationError, or whatever a custom serializer raises on bad bytes
        return CORRUPT
    return Entry(value, stored_at, ttl, grace, delta)
