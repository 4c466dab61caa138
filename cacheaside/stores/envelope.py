"""The bytes of one entry in a shared store: a fixed binary header, the entry's tags, then the value.

Layout (little-endian)::

    0   magic       1 byte   0xCA
    1   version     1 byte   FORMAT_VERSION
    2   key check   4 bytes  CRC-32 of the key the entry was written for
    6   stored_at   double   wall-clock seconds
    14  ttl         double   seconds the value is fresh
    22  grace       double   seconds past ttl it is kept for stale serving
    30  delta       double   seconds its computation took
    38  tags size   uint16   bytes of the tags that follow
    40  tags        the entry's tags, escaped (``keys.escape``), each followed by "," and the
                    first preceded by one (",a,b,"; empty when it has none, "," + "," for a tag "")
    40+n value      the serializer's bytes

The header is fixed so that the store's Lua scripts can read it without decoding the
value: the grace (``struct.unpack('<d', v, 23)``) to judge freshness on the server's
clock, and the tags, so that an eviction by tag spares an entry stored again without
that tag. The key check catches a reply meant for another key (a connection that got out
of step) so it is never served. Anything that does not parse is ``CORRUPT``: a miss,
never an exception.
"""

from __future__ import annotations

import struct
import zlib

from .._encoding import escape
from .._types import CORRUPT, Entry
from ..exceptions import SerializationError
from ..serializers import Serializer

__all__ = ["FORMAT_VERSION", "HEADER_SIZE", "MAGIC", "decode", "encode", "tag_text"]

MAGIC = 0xCA
#: Bump when the layout or what an entry carries changes: entries of another version read as misses.
#: 3: every entry carries its function's own tag (f.clear() would miss entries of version 2).
FORMAT_VERSION = 3
_HEADER = struct.Struct("<BBIddddH")
HEADER_SIZE = _HEADER.size  # 40

_unpack_header = _HEADER.unpack_from
_crc32 = zlib.crc32


def key_check(key: str) -> int:
    return _crc32(key.encode())


def tag_text(tags: tuple[str, ...]) -> bytes:
    """The tags as stored in an entry (and in a lease, for fills in progress): ",a,b,", or empty.

    Every tag sits between commas (escaping leaves none in a tag), so a script finds tag ``t``
    by looking for ",t,", the empty tag included.
    """
    return ("," + "".join(escape(t) + "," for t in tags)).encode() if tags else b""


def encode(key: str, entry: Entry, serializer: Serializer) -> bytes:
    """The stored bytes for ``entry`` under ``key``; raises ``SerializationError``."""
    tags = tag_text(entry.tags)
    if len(tags) > 0xFFFF:
        raise SerializationError(f"the entry's tags take {len(tags)} bytes, over the limit of 65535")
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, key_check(key), entry.stored_at, entry.ttl, entry.grace, entry.delta, len(tags)
    )
    return header + tags + serializer.dumps(entry.value)


def decode(key: str, data: bytes, serializer: Serializer) -> Entry:
    """The entry in ``data`` read under ``key``, or ``CORRUPT``. On every hit: kept flat."""
    try:
        magic, version, check, stored_at, ttl, grace, delta, size = _unpack_header(data)
    except struct.error:  # shorter than a header
        return CORRUPT
    if magic != MAGIC or version != FORMAT_VERSION or check != _crc32(key.encode()):
        return CORRUPT
    try:
        value = serializer.loads(data[HEADER_SIZE + size:])
    except Exception:  # SerializationError, or whatever a custom serializer raises on bad bytes
        return CORRUPT
    return Entry(value, stored_at, ttl, grace, delta)
