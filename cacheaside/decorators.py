"""The decorators' old home: ``cache_aside`` is in ``reads``, ``invalidates`` and the tag evictions in
``writes``, the typing protocols in ``typing``. Kept for one release for imports of this module."""

from .reads import cache_aside
from .typing import AsyncCachedFunction, CachedFunction
from .writes import ainvalidate_tags, invalidate_tags, invalidates

__all__ = ["AsyncCachedFunction", "CachedFunction", "ainvalidate_tags", "cache_aside", "invalidate_tags", "invalidates"]
