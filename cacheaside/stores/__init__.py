"""Stores: where entries live. ``MemoryStore`` in process memory, ``RedisStore`` in Redis."""

from .base import AsyncStore, Store, StoreInfo
from .memory import MemoryStore

__all__ = ["AsyncStore", "MemoryStore", "Store", "StoreInfo"]
