"""cacheaside: the cache-aside pattern, one decorator away and correct by default."""

from .config import configure, disabled
from .exceptions import CacheError, CacheKeyError, CacheWarning, SerializationError
from .reads import cache_aside
from .resilience import CircuitBreaker, Retry
from .serializers import MsgpackSerializer, Serializer
from .stats import CacheStats
from .stores.memory import MemoryStore
from .stores.redis import RedisStore
from .typing import AsyncCachedFunction, CachedFunction
from .writes import ainvalidate_tags, invalidate_tags, invalidates

__all__ = [
    "AsyncCachedFunction",
    "CacheError",
    "CacheKeyError",
    "CacheStats",
    "CacheWarning",
    "CachedFunction",
    "CircuitBreaker",
    "MemoryStore",
    "MsgpackSerializer",
    "RedisStore",
    "Retry",
    "SerializationError",
    "Serializer",
    "ainvalidate_tags",
    "cache_aside",
    "configure",
    "disabled",
    "invalidate_tags",
    "invalidates",
]

__version__ = "0.1.0.dev0"
