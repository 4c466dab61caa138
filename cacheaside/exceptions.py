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

import os
import sys
import warnings

__all__ = ["CacheError", "CacheKeyError", "CacheWarning", "SerializationError", "warn"]


class CacheError(Exception):
    """Base class of every error raised by cacheaside."""


class CacheKeyError(CacheError, TypeError):
    """An argument value cannot be encoded into a cache key."""


class SerializationError(CacheError, TypeError):
    """A value cannot be encoded (or decoded) by a serializer."""


class CacheWarning(UserWarning):
    """A cache problem that was survived but that the user should fix."""


def warn(message: str, *, at: tuple[str, int, str] | None = None) -> None:
    """Warn with ``CacheWarning`` where the user can see and filter it.

    ``at`` is a (filename, line, module) location, e.g. the decorated function's
    definition, for warnings about a call site; without it, the warning is attributed
    to the first caller outside this package (the decoration or construction site).
    """
    if at is not None:
        filename, lineno, module = at
        warnings.warn_explicit(message, CacheWarning, filename, lineno, module=module)
        return
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        level, frame = level + 1, frame.f_back  # type: ignore[assignment]
    warnings.warn(message, CacheWarning, stacklevel=level + 1)
