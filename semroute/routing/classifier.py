"""The cheap-LLM fallback: when the index is undecided, a small model picks among the
candidate routes (or "none"), its output constrained to exactly those names.

Whatever goes wrong (an error, a timeout, an answer that is no allowed name) the query goes to
the default route with the reason recorded: the classifier never raises into a chatbot.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

from semroute.config import RouteSet
from semroute.providers import (
    ModelCall,
    ModelSpec,
    Plan,
    Provider,
    ProviderError,
    completed,
    make_provider,
)
from semroute.routing.decision import ClassifierCall, Decision

NONE_LABEL = "none"
# What never changes comes first, so a server's prompt cache reuses it across queries.
SYSTEM = (
    "You are a request router. Read the user's message and choose the ONE handler below that "
    "should answer it. Reply with the handler's name only. Reply "
    f"{NONE_LABEL} when the message fits none of the handlers.\n\nHandlers:\n{{handlers}}\n"
    f"- {NONE_LABEL}: the message fits none of the handlers above.{{none_examples}}"
)


class Classifier:
    """Picks a route for undecided queries with a cheap model; caches answers per query."""

    def __init__(self, routes: RouteSet, spec: ModelSpec, *, max_candidates: int = 5,
                 examples: int = 3, nearest: bool = True, none_examples: int = 0,
                 max_tokens: int = 24, cache_size: int = 1024) -> None:
        self.routes = routes
        self.spec = spec
        self.provider: Provider[object, object] = make_provider(spec)
        self.max_candidates = max_candidates
        self.examples = examples
        self.nearest = nearest
        # out-of-scope examples shown under `none` (0: off; it did not help a 0.5B model)
        self.none_examples = none_examples
        self.max_tokens = max_tokens
        self.cache_size = cache_size
        # `{handlers}` is replaced by the candidate list, `{none_examples}` by those of `none`
        self.system_template = SYSTEM
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], str] = OrderedDict()
        self._lock = threading.Lock()

    def clear_cache(self) -> None:
        """Forget every cached answer (e.g. to measure model calls, not the cache)."""
        with self._lock:
            self._cache.clear()

    def candidates(self, decision: Decision) -> list[str]:
        """The routes offered to the model: the index's best few, else every route."""
        names = [c.route for c in decision.candidates[: self.max_candidates]]
        return names if len(names) >= 2 else self.routes.names[: max(self.max_candidates, 2)]

    def examples_for(self, name: str, decision: Decision | None = None) -> list[str]:
        """A route's examples shown to the model: with `nearest`, its utterances nearest the
        query first (from the decision's candidates), then the route file's first ones."""
        near = [n.text for c in (decision.candidates if decision and self.nearest else ())
                if c.route == name for n in c.neighbours]
        return list(dict.fromkeys([*near, *self.routes.route(name).utterances]))[: self.examples]

    def none_examples_for(self, decision: Decision | None) -> list[str]:
        """The out-of-scope examples shown under `none`: the route set's nearest the query
        (`Decision.oos_neighbours`, found with the index's search); none without any."""
        near = decision.oos_neighbours if decision is not None else ()
        return [n.text for n in near[: self.none_examples]]

    def system_prompt(self, names: list[str], decision: Decision | None = None) -> str:
        """The handler list: each candidate's name, description and examples, and, when the
        route set has out-of-scope examples, those nearest the query under `none`."""
        lines = []
        for name in names:
            examples = "; ".join(f'"{u}"' for u in self.examples_for(name, decision))
            lines.append(f"- {name}: {self.routes.route(name).description} Examples: {examples}")
        shown = self.none_examples_for(decision)
        none = " Examples: " + "; ".join(f'"{u}"' for u in shown) if shown else ""
        return self.system_template.format(handlers="\n".join(lines), none_examples=none)

    def plan(self, decision: Decision, default_route: str | None,
             recent: Sequence[str] = ()) -> Plan[Decision]:
        """Resolve an undecided decision: yields at most one model call. `recent` are the
        conversation's last user turns (oldest first, the latest last) to judge it in."""
        names = self.candidates(decision)
        content = user_message(decision.query, recent)
        key = (content, tuple(names))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        shown = tuple(self.none_examples_for(decision))
        if cached is not None:
            call = ClassifierCall(model=self.spec.key, answer=cached, latency_ms=0.0, cached=True,
                                  none_examples=shown)
            return _resolved(decision, cached, call, default_route)
        t0 = time.perf_counter()
        outcome = completed((yield ModelCall(
            self.provider, [{"role": "user", "content": content}],
            {"system": self.system_prompt(names, decision), "max_tokens": self.max_tokens,
             "labels": [*names, NONE_LABEL]})))
        latency = (time.perf_counter() - t0) * 1e3
        if isinstance(outcome, ProviderError):
            kind = "timed out" if _timed_out(outcome) else "failed"
            call = ClassifierCall(model=self.spec.key, answer=None, latency_ms=latency,
                                  error=f"{kind}: {outcome}", none_examples=shown)
            return _resolved(decision, None, call, default_route)
        call = ClassifierCall(model=self.spec.key, answer=outcome.label, latency_ms=latency,
                              input_tokens=outcome.usage.input_tokens,
                              output_tokens=outcome.usage.output_tokens,
                              error=None if outcome.label else
                              f"invalid answer {outcome.text[:80]!r}", none_examples=shown)
        if outcome.label is not None:
            with self._lock:
                self._cache[key] = outcome.label
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return _resolved(decision, outcome.label, call, default_route)


def user_message(query: str, recent: Sequence[str] = ()) -> str:
    """What the classifier reads: the query, after the earlier turns of its conversation."""
    earlier = list(recent[:-1])
    if not earlier:
        return query
    lines = "\n".join(f"- {t}" for t in earlier)
    return (f"Earlier messages of the user in this conversation (oldest first):\n{lines}\n\n"
            f"Latest message (route this one, in that context):\n{query}")


def _timed_out(error: ProviderError) -> bool:
    """Whether a call ended by its timeout (providers say "timed out after N s")."""
    text = error.message.lower()
    return error.status is None and ("timed out" in text or "timeout" in text)


def _resolved(decision: Decision, answer: str | None, call: ClassifierCall,
              default_route: str | None) -> Decision:
    timings = dict(decision.timings_ms, classify=call.latency_ms)
    if answer is not None and answer != NONE_LABEL:
        return replace(decision, route=answer, method="classifier", classifier=call,
                       timings_ms=timings,
                       reason=f"{decision.reason}; the classifier chose '{answer}'")
    why = "the classifier chose none" if answer == NONE_LABEL else \
        f"the classifier gave no valid answer ({call.error})"
    return to_default(replace(decision, classifier=call, timings_ms=timings),
                      default_route, why)


def to_default(decision: Decision, default_route: str | None, why: str) -> Decision:
    """Send an undecided query to the default route (or to no route, if none is set)."""
    target = f"the default route '{default_route}'" if default_route else "no route (none set)"
    return replace(decision, route=default_route, method="default",
                   reason=f"{decision.reason}; {why}: {target}")
