"""The live process-wide defaults: ttl, prefix, the ``disabled`` switch and the default store.

A leaf: it imports nothing of the package, so every layer may read it. ``config``
writes it (``configure``, ``disabled``) and registers how the built-in default
store is made; nothing else builds a store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Settings", "settings"]


class Settings:
    """The live defaults; one instance, ``settings``. Read at call time, so ``configure()`` counts later."""

    def __init__(self) -> None:
        self.ttl = 300.0
        self.prefix = "cacheaside"
        #: > 0 inside ``disabled()``: decorated calls run their function and touch no store.
        self.disabled = 0
        #: The store configured with ``configure(store=...)``, or None for the built-in default.
        self.store: Any = None
        #: The built-in default store, made on first use (and again when the prefix changes).
        self.builtin: Any = None
        #: Makes the built-in default store for a prefix (``config`` sets it: a ``MemoryStore``).
        self.make_builtin: Callable[[str], Any] | None = None
        self._lock = threading.Lock()

    def default_store(self) -> Any:
        """The configured store, else the built-in one, which always has the configured prefix."""
        store = self.store
        if store is not None:
            return store
        builtin = self.builtin
        if builtin is None or builtin.prefix != self.prefix:
            with self._lock:
                builtin = self.builtin
                if builtin is None or builtin.prefix != self.prefix:
                    assert self.make_builtin is not None, "cacheaside.config registers the default store"
                    builtin = self.builtin = self.make_builtin(self.prefix)
        return builtin


settings = Settings()
