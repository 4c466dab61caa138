"""The error tree of cacheaside.

::

    CacheError                      base of every error the library raises
    ├── CacheKeyError (TypeError)   an argument cannot be part of a cache key
    └── SerializationError (TypeError)
                                    a value cannot be encoded by a serializer
    CacheWarning (UserWarning)      something was survived but needs attention

Store trouble (a refused connection, a timeout, a corrupted payload) never
raises to the caller of a decorated function: it is counted, logged on state
changes and survived. Misuse (a bad ``ttl``, an unknown template field, an
argument type that cannot be keyed) raises at decoration or call time with a
message that names the function, the parameter and the fix.
"""

from __future__ import annotations

__all__ = ["CacheError", "CacheKeyError", "CacheWarning", "SerializationError"]


class CacheError(Exception):
    """Base class of every error raised by cacheaside."""


class CacheKeyError(CacheError, TypeError):
    """An argument value cannot be encoded into a cache key."""


class SerializationError(CacheError, TypeError):
    """A value cannot be encoded (or decoded) by a serializer."""


class CacheWarning(UserWarning):
    """A cache problem that was survived but that the user should fix."""
