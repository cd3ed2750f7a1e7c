"""State behind a small store interface: the `Store` protocol and an in-process `MemoryStore`.

Keys are strings, values JSON-able; a Redis backend can sit behind the same protocol.
"""

from __future__ import annotations

from semroute.state.store import Json, MemoryStore, Store

__all__ = ["Json", "MemoryStore", "Store"]
