"""What all dispatches for one router share: cooldowns, provider adapters, the trace writer,
the backoff jitter's random source, and the shared state (`router.shared_state`) the
cooldowns, stickiness and budgets live in. It holds no reference to the router, so a registry
keyed weakly by router (see api.py) lets the router be collected."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.config import (
    BudgetSettings,
    ModelSpec,
    RouterSettings,
    SharedStateSettings,
    StickinessSettings,
)
from semroute.dispatching.background import BackgroundWorker
from semroute.dispatching.cooldowns import Cooldowns
from semroute.dispatching.recording import OutcomeRecorder
from semroute.policies import Budgets, Stickiness
from semroute.providers import Provider, make_provider
from semroute.state import MemoryStore, SharedState, SqliteStore, Store
from semroute.telemetry import JsonlSink, TraceSink, TraceWriter

if TYPE_CHECKING:
    from semroute.dispatching.shadowing import ShadowEvaluator


@dataclass
class DispatchState:
    """Shared, router-free dispatch state; safe to use from several threads and event loops."""

    cooldowns: Cooldowns
    trace: TraceWriter | None
    include_query: bool
    rng: random.Random
    stickiness: Stickiness | None = None
    prescorer: BackgroundWorker = field(default_factory=lambda: BackgroundWorker(
        "semroute-prescore", "pre-scoring an assistant reply"))
    budgets: Budgets = field(default_factory=lambda: Budgets(BudgetSettings(), None))
    recorder: OutcomeRecorder | None = None  # the outcomes store's writer (router.outcomes)
    shadow: ShadowEvaluator | None = None  # shadow evaluation's worker (router.shadow)
    shared: SharedState = field(default_factory=lambda: SharedState(SharedStateSettings()))
    _providers: dict[ModelSpec, Provider[Any, Any]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, settings: RouterSettings, *, trace: TraceSink | str | Path | None = None,
               include_query: bool | None = None,
               rng: random.Random | None = None, store: Store | None = None,
               stickiness: StickinessSettings | None = None,
               budgets: Budgets | None = None,
               shared: SharedStateSettings | None = None) -> DispatchState:
        """State for a router's settings; `trace`, `include_query`, `stickiness`, `budgets`
        and `shared` (`router.shared_state`) override them; `store` holds stickiness state.
        With in-process shared state (the default) cooldowns and stickiness are in-process
        and budget caps count in a `SqliteStore` at `router.budgets.store`; with Redis all
        three live there, each with its outage fallback (`SharedState`)."""
        target = trace if trace is not None else settings.trace_path
        sticky = stickiness or settings.stickiness
        sink: TraceSink | None = JsonlSink(target) if isinstance(target, str | Path) else target
        common = SharedState.open(shared or settings.shared_state)
        if store is None:
            store = common.store("stickiness", MemoryStore(sticky.max_entries)) or \
                MemoryStore(sticky.max_entries)
        if budgets is None and settings.budgets.caps:
            budgets = Budgets(settings.budgets, common.budget_store() or
                              SqliteStore(settings.budgets.store))
        return cls(
            cooldowns=Cooldowns(settings.cooldown_seconds,
                                common.store("cooldowns", MemoryStore())),
            trace=None if sink is None else TraceWriter(sink),
            include_query=settings.trace_include_query if include_query is None
            else include_query,
            rng=rng or random.Random(),
            stickiness=Stickiness(sticky, settings.tiers, store),
            budgets=budgets or Budgets(settings.budgets, None),
            shared=common,
        )

    def provider(self, spec: ModelSpec) -> Provider[Any, Any]:
        """The adapter for `spec`, made once (adapters are cheap; SDK clients are pooled)."""
        with self._lock:
            p = self._providers.get(spec)
            if p is None:
                p = self._providers[spec] = make_provider(spec)
            return p

    def recorder_for(self, make: Callable[[], OutcomeRecorder]) -> OutcomeRecorder:
        """The outcome recorder shared by this state's dispatchers, made once."""
        with self._lock:
            if self.recorder is None:
                self.recorder = make()
            return self.recorder

    def shadow_for(self, make: Callable[[], ShadowEvaluator]) -> ShadowEvaluator:
        """The shadow evaluator shared by this state's dispatchers, made once."""
        with self._lock:
            if self.shadow is None:
                self.shadow = make()
            return self.shadow

    def jitter(self) -> float:
        """A factor in [0.5, 1.5) for retry backoff."""
        with self._lock:
            return 0.5 + self.rng.random()
