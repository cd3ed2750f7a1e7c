"""`SharedState`: every kind of state a router shares across replicas, from one setting
(`router.shared_state`): in-process (`memory`, the default) or one Redis server (`redis`),
with the outage policy of each kind applied by a `FallbackStore` on one `Circuit`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from semroute.config import SharedStateSettings
from semroute.state.fallback import Circuit, FallbackStore
from semroute.state.redis_store import RedisStore
from semroute.state.store import MemoryStore, Store

KINDS = ("cooldowns", "stickiness", "budgets", "rate_limits")


@dataclass
class SharedState:
    """The shared store (None: in-process only), its circuit and the settings; hands each kind
    of state its store. Stores are made on demand: `memory` never imports or dials Redis."""

    settings: SharedStateSettings
    redis: RedisStore | None = None
    circuit: Circuit | None = None

    @classmethod
    def open(cls, settings: SharedStateSettings) -> SharedState:
        """The shared state `settings` describe (no connection is made until first use)."""
        if settings.backend == "memory":
            return cls(settings)
        store = RedisStore(settings.url, timeout_s=settings.timeout_seconds)
        return cls(settings, store, Circuit(store.name, settings.retry_seconds))

    @property
    def shared(self) -> bool:
        """Whether state is shared by replicas (a Redis backend)."""
        return self.redis is not None

    def store(self, kind: str, local: Store | None) -> Store | None:
        """The store of `kind` ("cooldowns", "stickiness", "budgets"): Redis falling back to
        `local` (None: raise while Redis is down); None when state is in-process only."""
        if self.redis is None or self.circuit is None:
            return None
        return FallbackStore(self.redis, local, self.circuit, kind)

    def budget_store(self) -> Store | None:
        """Budget counters on Redis: fail closed (raise while down) or open (count in-process),
        as `budgets_on_outage` says; None when in-process only."""
        open_ = self.settings.budgets_on_outage == "open"
        return self.store("budgets", MemoryStore() if open_ else None)

    def status(self) -> dict[str, Any]:
        """For metrics and readiness: backend, whether up, outages, fallbacks per kind."""
        c = self.circuit
        return {"backend": self.settings.backend, "up": True if c is None else c.up,
                "outages": 0 if c is None else c.outages,
                "fallbacks": {} if c is None else dict(c.fallbacks)}
