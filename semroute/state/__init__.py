"""State behind a small store interface: the `Store` protocol, an in-process `MemoryStore`, a
`SqliteStore` one file shared by threads and processes, a `RedisStore` shared by replicas, and
the outage handling around a shared one (`Circuit`, `FallbackStore`, `SharedState`).

Keys are strings, values JSON-able.
"""

from __future__ import annotations

from semroute.state.fallback import Circuit, FallbackStore
from semroute.state.redis_store import RedisStore
from semroute.state.shared import SharedState
from semroute.state.sqlite_store import SqliteStore
from semroute.state.store import Json, MemoryStore, Store

__all__ = ["Circuit", "FallbackStore", "Json", "MemoryStore", "RedisStore", "SharedState",
           "SqliteStore", "Store"]
