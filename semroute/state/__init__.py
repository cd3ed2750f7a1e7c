"""State behind a small store interface: the `Store` protocol, an in-process `MemoryStore` and
a `SqliteStore` one file shared by threads and processes.

Keys are strings, values JSON-able; a Redis backend can sit behind the same protocol.
"""

from __future__ import annotations

from semroute.state.sqlite_store import SqliteStore
from semroute.state.store import Json, MemoryStore, Store

__all__ = ["Json", "MemoryStore", "SqliteStore", "Store"]
