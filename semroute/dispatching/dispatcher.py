"""`Dispatcher`: decide where a request goes, call that route's model chain, trace the result.

Sync and async dispatch run the same plan (see `providers/effects.py`); trace writes are
`Offload` effects, so `adispatch` does them in a worker thread, off the event loop.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from semroute.config import ModelSpec, StickinessSettings
from semroute.dispatching.budgeting import (
    NOTHING_ASKED,
    Asked,
    admit,
    explicit_decision,
    settle,
    step_placement,
    step_plan,
)
from semroute.dispatching.cascade_serve import CascadeHost, serve_cascade
from semroute.dispatching.chain import Answered, call_chain
from semroute.dispatching.cooldowns import Cooldowns
from semroute.dispatching.journaling import feedback_plan, logged_request
from semroute.dispatching.messages import as_messages, latest_user_turn, tool_options
from semroute.dispatching.parallel import Picker, ask_in_parallel, missing_picker
from semroute.dispatching.recording import OutcomeRecorder
from semroute.dispatching.response import Response, Settle
from semroute.dispatching.shadowing import ShadowEvaluator, ShadowJob
from semroute.dispatching.state import DispatchState
from semroute.dispatching.sticky import place, record
from semroute.dispatching.trace_record import trace_record
from semroute.errors import (
    AllModelsFailedError,
    BudgetExceededError,
    BudgetStoreUnavailableError,
    ConfigError,
    NoRouteError,
    ProviderError,
)
from semroute.ids import new_id
from semroute.outcomes import FeedbackEntry, store_path
from semroute.policies import Budgets, Grant, Placement, conversation_key
from semroute.providers import (
    Completion,
    Message,
    Offload,
    Plan,
    Provider,
    Usage,
    run_async,
    run_sync,
)
from semroute.routing import Decision, Router
from semroute.state import Store
from semroute.telemetry import TraceSink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """What an answered request's journal row and shadow evaluation need besides the
    Response: the messages as sent, the call's arguments, the routed turn, the caller's ids."""

    messages: list[Message]
    kwargs: dict[str, Any]
    turn: str
    ids: tuple[str | None, str | None]
    chat: bool


class Dispatcher:
    """Decides and calls models for one `Router`.

    Its `state` (cooldowns, provider adapters, the trace writer) may be shared with other
    Dispatchers of the same router, as `semroute.dispatch()` does. `pickers` are the answer
    pickers parallel routes may name (`parallel.pick`), registered in code: given them, every
    route's pick is checked at once (else on first use).
    """

    def __init__(self, router: Router, *, trace: TraceSink | str | Path | None = None,
                 include_query: bool | None = None, rng: random.Random | None = None,
                 state: DispatchState | None = None, store: Store | None = None,
                 stickiness: StickinessSettings | None = None,
                 pickers: Mapping[str, Picker] | None = None,
                 budgets: Budgets | None = None) -> None:
        if state is not None and \
                (trace, include_query, rng, store, stickiness, budgets) != (None,) * 6:
            raise ValueError("pass either `state` or trace/include_query/rng/store/stickiness/"
                             "budgets, not both")
        self.router = router
        self.pickers: dict[str, Picker] = dict(pickers or {})
        if pickers is not None:
            problems = [x for r in router.routes.routes
                        if (x := missing_picker(r, self.pickers)) is not None]
            if problems:
                raise ConfigError(problems)
        self.state = state or DispatchState.create(router.routes.settings, trace=trace,
                                                   include_query=include_query, rng=rng,
                                                   store=store, stickiness=stickiness,
                                                   budgets=budgets)
        s = router.routes.settings
        self.recorder = self.state.recorder_for(partial(
            OutcomeRecorder, store_path(router.routes), router.matcher.cache)) \
            if s.outcomes.record or s.outcomes.log_requests or s.shadow.active else None

    @property
    def shadow(self) -> ShadowEvaluator:
        """Shadow evaluation's counters (`sampled`, `written`, `dropped`, `failed`,
        `skipped`) and worker, shared by this state's dispatchers."""
        return self.state.shadow_for(partial(ShadowEvaluator,
                                             self.router.routes.settings.shadow.max_queued))

    def feedback(self, request_id: str, *, score: float | bool | None = None,
                 label: str | None = None, note: str | None = None) -> FeedbackEntry:
        """Record feedback on an answered request (README "Feedback and shadow evaluation"):
        `score` in [0, 1] (True/False: thumbs), `label` the route it should have gone to,
        `note` free text. Raises `UnknownRequestError` for a request never journalled and
        `FeedbackError` for a bad field."""
        return run_sync(self._feedback_plan(request_id, score, label, note))

    async def afeedback(self, request_id: str, *, score: float | bool | None = None,
                        label: str | None = None, note: str | None = None) -> FeedbackEntry:
        """Async `feedback`: the same plan, its store and trace writes off the event loop."""
        return await run_async(self._feedback_plan(request_id, score, label, note))

    def _feedback_plan(self, request_id: str, score: float | bool | None, label: str | None,
                       note: str | None) -> Plan[FeedbackEntry]:
        rec = self.recorder or self.state.recorder_for(partial(
            OutcomeRecorder, store_path(self.router.routes), self.router.matcher.cache))
        return feedback_plan(self.router.routes, lambda: rec.store, rec.flush,
                             self.state.trace, self.include_query, request_id, score, label,
                             note)

    @property
    def trace(self) -> TraceSink | None:
        """Where trace records go (None: not traced)."""
        return None if self.state.trace is None else self.state.trace.sink

    @property
    def trace_drops(self) -> int:
        """Trace records that could not be written (each logged as a warning)."""
        return 0 if self.state.trace is None else self.state.trace.drops

    @property
    def cooldowns(self) -> Cooldowns:
        """Which models are cooling down after failures."""
        return self.state.cooldowns

    @property
    def include_query(self) -> bool:
        """Whether trace records carry the query text."""
        return self.state.include_query

    def dispatch(self, request: str | Sequence[Message], *, system: str | None = None,
                 max_tokens: int = 512, stream: bool = False,
                 metadata: Mapping[str, str] | None = None, conversation_id: str | None = None,
                 user: str | None = None, step: str | None = None,
                 max_cost_usd: float | None = None, client_key: str | None = None,
                 model: str | None = None, **kwargs: Any) -> Response:
        """Route `request` (a query or chat messages) and return the model's answer.
        `metadata` is what route-file rules match (never sent on); `conversation_id` and
        `user` key stickiness (README "Stickiness"); `step` names an agent step instead of
        routing (README "Agent steps"); `model` (a catalogue key) skips routing: that model
        alone answers (decision method "explicit", route `model:<key>`); `max_cost_usd`,
        `client_key` and `user` are what budgets check (README "Budgets")."""
        return run_sync(self._plan(request, system, max_tokens, stream, kwargs, metadata,
                                   (conversation_id, user),
                                   Asked(step, max_cost_usd, client_key, user, model)))

    async def adispatch(self, request: str | Sequence[Message], *, system: str | None = None,
                        max_tokens: int = 512, stream: bool = False,
                        metadata: Mapping[str, str] | None = None,
                        conversation_id: str | None = None, user: str | None = None,
                        step: str | None = None, max_cost_usd: float | None = None,
                        client_key: str | None = None, model: str | None = None,
                        **kwargs: Any) -> Response:
        """Async `dispatch`: the same plan, awaited; blocking work runs off the event loop."""
        return await run_async(self._plan(request, system, max_tokens, stream, kwargs,
                                          metadata, (conversation_id, user),
                                          Asked(step, max_cost_usd, client_key, user, model)))

    def provider(self, key: str) -> Provider[Any, Any]:
        """The provider adapter of catalogue key `key`."""
        return self.state.provider(self._spec(key))

    def _spec(self, key: str) -> ModelSpec:
        return self.router.routes.models[key].spec(key)

    def _plan(self, request: str | Sequence[Message], system: str | None, max_tokens: int,
              stream: bool, kwargs: dict[str, Any],
              metadata: Mapping[str, str] | None = None,
              ids: tuple[str | None, str | None] = (None, None),
              asked: Asked = NOTHING_ASKED) -> Plan[Response]:
        t0 = time.perf_counter()
        request_id = new_id()
        messages = as_messages(request)
        kwargs = tool_options(kwargs)
        turn = latest_user_turn(messages)
        # the latest turn, in the context of the conversation; rules see request metadata
        if asked.model is not None:  # the caller chose the model: nothing to decide
            decision = explicit_decision(self.router.routes, asked.model, turn)
        elif asked.step is not None:
            decision = yield from step_plan(self.router.routes, asked.step, turn)
        else:
            decision = yield from self.router.decide_plan(messages, metadata=metadata)
        latency = {"decide": (time.perf_counter() - t0) * 1e3}
        redact = (turn, decision.query)
        if decision.route is None:
            yield from self._write(trace_record(
                request_id, decision, [], latency, error="no route",
                include_query=self.include_query), redact)
            raise NoRouteError(f"no route for the query ({decision.reason}); set "
                               f"router.default_route in models.yaml")
        placed = step_placement(self.router.routes, decision) \
            if asked.step is not None or asked.model is not None else \
            (yield from place(self.state.stickiness, self.router.routes, decision.route,
                              messages, system, ids,
                              decision.tier.chosen if decision.tier is not None else None))
        route = placed.route
        system_text = "\n\n".join(x for x in (route.system_prompt, system) if x) or None
        call_kwargs = dict(kwargs, system=system_text, max_tokens=max_tokens)
        chat = not isinstance(request, str)
        done = partial(self._answered, Served(messages, call_kwargs, turn, ids, chat))
        try:
            grant = yield from admit(self.state.budgets, self.router.routes, self._spec,
                                     request_id, route, placed.chain, messages, system_text,
                                     max_tokens, (route.parallel is not None and not stream)
                                     or route.cascade is not None, asked)
        except (BudgetExceededError, BudgetStoreUnavailableError) as exc:
            yield from self._write(trace_record(
                request_id, decision, [], latency, error=str(exc),
                include_query=self.include_query, sticky=placed.sticky), redact)
            raise
        if grant.parallel and route.parallel is not None:  # streams use the `model` chain
            return (yield from self._parallel(request_id, decision, placed, messages, turn,
                                              call_kwargs, latency, redact, grant, chat, done))
        if grant.parallel and route.cascade is not None:  # cheap first, gated (cascade.py)
            host = CascadeHost(self._spec, self.state, self.router.routes.settings,
                               partial(self._write, redact=redact), self.include_query,
                               grant, self._prescore if chat else None, done)
            served = yield from serve_cascade(host, request_id, decision, placed, messages, turn,
                                              call_kwargs, stream, latency)
            if self.recorder is not None and served.cascade is not None:
                self.recorder.submit(request_id, decision, served.cascade)
            return served
        t_model = time.perf_counter()
        try:
            answered = yield from call_chain(route.name, grant.chain, self._spec, messages,
                                             call_kwargs, stream, self.state,
                                             self.router.routes.settings)
        except (ProviderError, AllModelsFailedError) as exc:
            exc.request_id = request_id
            error = "all models failed" if isinstance(exc, AllModelsFailedError) else str(exc)
            yield from settle(self.state.budgets, grant, 0.0)  # errors cost nothing
            yield from self._write(trace_record(
                request_id, decision, exc.attempts, latency, error=error,
                include_query=self.include_query, sticky=placed.sticky,
                budget=grant.record), redact)
            raise
        except BaseException:  # cancelled (no yield allowed now): give the reservation back
            self.state.budgets.settle(grant, 0.0)
            raise
        yield from record(self.state.stickiness, placed, answered.spec.key)
        latency["model"] = (time.perf_counter() - t_model) * 1e3
        settled = partial(self._settle, answered.spec, redact, grant, chat, done)
        r = self._response(request_id, decision, answered, latency, settled)
        r.route, r.sticky, r.budget = route.name, placed.sticky, grant.record
        if r.stream_state == "complete":
            yield from settled(r, None, None)
        return r

    def _parallel(self, request_id: str, decision: Decision, placed: Placement,
                  messages: list[Message], turn: str, call_kwargs: dict[str, Any],
                  latency: dict[str, float], redact: tuple[str, ...],
                  grant: Grant, chat: bool,
                  answered: Callable[[Response], None]) -> Plan[Response]:
        """A parallel route: ask its models at once, pick one answer (`parallel.py`)."""
        route, t_model = placed.route, time.perf_counter()
        try:
            picked = yield from ask_in_parallel(route, self._spec, messages, call_kwargs, turn,
                                                self.state, self.router.routes.settings,
                                                self.pickers)
        except AllModelsFailedError as exc:
            exc.request_id = request_id
            yield from settle(self.state.budgets, grant, 0.0)
            yield from self._write(trace_record(
                request_id, decision, exc.attempts, latency, error="all models failed",
                include_query=self.include_query, sticky=placed.sticky,
                budget=grant.record), redact)
            raise
        yield from record(self.state.stickiness, placed, picked.spec.key)
        latency["model"] = (time.perf_counter() - t_model) * 1e3
        latency["total"] = sum(latency.values())
        spec, done = picked.spec, picked.completion
        r = Response(
            request_id=request_id, route=route.name, model_key=spec.key, model=spec.model,
            provider=spec.provider, text=done.text, usage=picked.usage,
            cost_usd=picked.cost_usd, finish_reason=done.finish_reason, latency_ms=latency,
            attempts=picked.attempts, decision=decision, sticky=placed.sticky,
            parallel=picked.outcome, budget=grant.record, tool_calls=done.tool_calls)
        yield from settle(self.state.budgets, grant, picked.cost_usd)
        yield from self._write(trace_record(
            request_id, decision, r.attempts, latency, response=r,
            include_query=self.include_query, sticky=r.sticky), redact)
        if chat:
            self._prescore(r.text)
        answered(r)
        return r

    def _response(self, request_id: str, decision: Decision, answered: Answered,
                  latency: dict[str, float], settle: Settle) -> Response:
        """The Response for an answer: complete, or open until its stream ends (`settle`)."""
        assert decision.route is not None
        spec, outcome = answered.spec, answered.outcome
        done = outcome if isinstance(outcome, Completion) else None
        stream = None if isinstance(outcome, Completion) else outcome
        return Response(
            request_id=request_id, route=decision.route, model_key=spec.key, model=spec.model,
            provider=spec.provider, text=done.text if done else "",
            usage=done.usage if done else Usage(), cost_usd=0.0,
            finish_reason=done.finish_reason if done else None, latency_ms=latency,
            attempts=answered.attempts, decision=decision,
            tool_calls=done.tool_calls if done else (),
            stream_state="complete" if done else "open",
            _stream=stream, _settle=None if done else settle)

    def _settle(self, spec: ModelSpec, redact: tuple[str, ...], grant: Grant, chat: bool,
                done: Callable[[Response], None], r: Response, chunks: int | None,
                error: ProviderError | None) -> Plan[None]:
        """Price, count against budgets and trace an answer (a streamed one when it ends:
        `chunks` delivered); a complete chat reply is pre-scored in the background for the
        conversation's next turn."""
        r.cost_usd = spec.cost(r.usage)
        yield from settle(self.state.budgets, grant, r.cost_usd)
        r.latency_ms["total"] = sum(v for k, v in r.latency_ms.items() if k != "total")
        if error is not None:
            error.attempts, error.request_id = r.attempts, r.request_id
        stream = None if chunks is None else {
            "state": r.stream_state, "chunks": chunks, "chars": len(r.text)}
        yield from self._write(trace_record(
            r.request_id, r.decision, r.attempts, r.latency_ms, response=r, stream=stream,
            error=None if error is None else str(error), include_query=self.include_query,
            sticky=r.sticky),
            redact)
        if chat and r.stream_state == "complete":
            self._prescore(r.text)
        done(r)

    def _answered(self, served: Served, r: Response) -> None:
        """Journal an answered request and offer it to shadow evaluation: queue puts only,
        and nothing here may cost the caller the answer."""
        s = self.router.routes.settings
        try:
            if self.recorder is not None and s.outcomes.log_requests:
                conversation = partial(conversation_key, served.messages,
                                       system=served.kwargs.get("system"),
                                       conversation_id=served.ids[0], user=served.ids[1]) \
                    if served.chat or served.ids[0] is not None else None
                self.recorder.journal(logged_request(r), r.decision.query,
                                      s.outcomes.keep_text, conversation)
            if s.shadow.active:
                (self.state.shadow or self.shadow).offer(r, s.shadow, partial(
                    ShadowJob, r.request_id, r.route, r.model_key, r.text, served.turn,
                    served.messages, served.kwargs, self._spec, s), self.state, self.recorder)
        except Exception:
            log.warning("journalling request %s failed (the answer was served)",
                        r.request_id, exc_info=True)

    def _prescore(self, reply: str) -> None:
        if self.router.routes.settings.prescore_replies and reply.strip():
            self.state.prescorer.submit(partial(self.router.prescore, reply))

    def _write(self, record: dict[str, Any], redact: tuple[str, ...]) -> Plan[None]:
        """Write a trace record as blocking work (never raises: drops are counted)."""
        writer = self.state.trace
        if writer is not None:
            yield Offload(partial(writer.write, record, redact=redact))
