"""`Router`: the route set, index and encoder, answering `route(query or messages)`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from semroute.config import RouteSet, load_routes
from semroute.encoders import Fingerprint
from semroute.errors import CalibrationWarning
from semroute.index import Calibration, RouteIndex
from semroute.index.calibration import CalibrationStatus, StalePolicy, calibration_for
from semroute.outcomes import TierModel, load_tiers
from semroute.providers import Message, Offload, Plan, run_async, run_sync
from semroute.routing.classifier import Classifier, to_default
from semroute.routing.conversation import conversation_turns, match_conversation
from semroute.routing.decision import Decision
from semroute.routing.matcher import Matcher, prepare_query, resolve_thresholds
from semroute.routing.rules import RuleSet
from semroute.routing.tiering import with_tier

Request = str | Sequence[Message]  # a query, or chat messages routed on their latest user turn


class Router:
    """Decides where queries go. Build one with `Router.load()` (or `semroute.load_router`)."""

    def __init__(self, routes: RouteSet, index: RouteIndex, matcher: Matcher,
                 classifier: Classifier | None = None, *,
                 calibration: Calibration | None = None,
                 calibration_status: CalibrationStatus = "none",
                 tiers: TierModel | None = None) -> None:
        self.routes = routes
        self.index = index
        self.matcher = matcher
        self.classifier = classifier
        self.calibration = calibration  # the one whose thresholds are applied, if any
        self.calibration_status: CalibrationStatus = calibration_status
        self.rules = RuleSet.from_routes(routes)  # checked before the index
        self.tiers = tiers  # outcome-learned ladders (None: no route has a ladder)
        # undecided queries scoring below it skip the classifier (None: every one is sent)
        self.classifier_floor = routes.settings.classifier_min_score

    @classmethod
    def load(cls, routes: str | Path | RouteSet = "routes",
             index: str | Path = "indexes/default", *, profile: str | None = None,
             verify: bool = True, threads: int = 1, cache_size: int = 4096,
             classifier: bool = True, stale_calibration: StalePolicy = "ignore",
             outcomes: str | Path | None = None) -> Router:
        """Read the route files and the index built from them, checking that they agree.

        Raises `ConfigError` for a bad route file, `StaleIndexError` when the index was built
        from other files or another encoder, `CorruptIndexError`/`IndexNotFoundError` when it
        cannot be read. `threads` is the encoder's intra-op thread count. With `classifier`
        (and `router.classifier_model` set) undecided queries go to the cheap-LLM classifier.
        A calibration fitted on an earlier build is ignored (`stale_calibration="apply"` keeps
        it) with a `CalibrationWarning`; `calibration_status` says which happened. When a route
        has a ladder, the outcomes store (`outcomes`, default `router.outcomes.path`) is
        loaded once for the index's encoder (`tiers`; inactive without a store or records).
        """
        route_set = routes if isinstance(routes, RouteSet) else load_routes(routes,
                                                                            profile=profile)
        idx = RouteIndex.load(index, route_set, verify=verify)
        import faiss

        faiss.omp_set_num_threads(1)
        encoder = idx.load_encoder(threads=threads)
        calibration, status, warning = calibration_for(index, idx.manifest.build_id,
                                                       stale=stale_calibration)
        if warning is not None:
            warnings.warn(warning, CalibrationWarning, stacklevel=2)
        thresholds = resolve_thresholds(route_set, idx, calibration)
        matcher = Matcher(route_set, idx, encoder, thresholds=thresholds, cache_size=cache_size)
        s = route_set.settings
        clf = None
        if classifier and s.classifier_model is not None:
            spec = route_set.models[s.classifier_model].spec(s.classifier_model)
            spec = replace(spec, timeout=min(spec.timeout, s.classifier_timeout))
            clf = Classifier(route_set, spec, max_candidates=s.classifier_candidates)
        tiers = load_tiers(route_set, Fingerprint.of(encoder), path=outcomes) \
            if route_set.ladders else None
        return cls(route_set, idx, matcher, clf, calibration=calibration,
                   calibration_status=status, tiers=tiers)

    def route(self, request: Request, *, use_classifier: bool = True,
              metadata: Mapping[str, str] | None = None) -> Decision:
        """Where one query (a string) or conversation (chat messages) goes, and why.
        `metadata` (e.g. `{"task_type": "extraction"}`) is what route-file rules match besides
        the text."""
        return self.route_batch([request], use_classifier=use_classifier, metadata=metadata)[0]

    def route_batch(self, requests: Sequence[Request], *, use_classifier: bool = True,
                    metadata: Mapping[str, str] | None = None) -> list[Decision]:
        """Decisions for many requests at once (rules first; then one encoder call, one search
        for the strings; conversations one by one, their earlier turns from the query cache).

        With `use_classifier`, requests the index leaves undecided go to the fallback
        classifier (when configured) and then to the default route; without it they stay
        "undecided" (index only, no model call).
        """
        strings = [(i, r) for i, r in enumerate(requests) if isinstance(r, str)]
        found: list[tuple[Decision, list[str]] | None] = [None] * len(requests)
        if strings:
            batch = self.rules.match_batch([r for _, r in strings], self.matcher, metadata)
            for (i, _), d in zip(strings, batch, strict=True):
                found[i] = (d, [])
        for i, r in enumerate(requests):
            if found[i] is None:
                found[i] = self.match(r, metadata)
        pairs = [f for f in found if f is not None]
        if not use_classifier:
            return [self.tiered(d) for d, _ in pairs]
        return [self.tiered(run_sync(self.resolve_plan(d, recent)))
                if d.method == "undecided" else self.tiered(d) for d, recent in pairs]

    async def aroute(self, request: Request, *, use_classifier: bool = True,
                     metadata: Mapping[str, str] | None = None) -> Decision:
        """Async `route`: rules, encoding and search run in a worker thread, the classifier
        call is awaited, so the event loop keeps serving meanwhile."""
        return await run_async(self.decide_plan(request, use_classifier=use_classifier,
                                                metadata=metadata))

    def match(self, request: Request, metadata: Mapping[str, str] | None = None,
              ) -> tuple[Decision, list[str]]:
        """Rules on the query (or the conversation's latest user turn), else the index's
        decision (a follow-up in context), and the recent user turns a classifier should see."""
        recent: list[str] = []
        ruled = None
        if len(self.rules):  # rules see the query, or the latest user turn with text
            text = request if isinstance(request, str) else conversation_turns(request)[-1].text
            ruled = self.rules.check(text, self.matcher, metadata)
            if ruled.decision is not None:
                return ruled.decision, recent
        if isinstance(request, str):
            decision = self.matcher.match(request)
        else:
            decision, recent = match_conversation(self.matcher, request)
        return (ruled.timed(decision) if ruled is not None else decision), recent

    def prescore(self, text: str) -> None:
        """Score an assistant reply now, into the matcher's per-turn cache, so that the next
        turn of its conversation finds it there and encodes only itself (dispatch calls this
        off the hot path when a reply is produced). Blank text is ignored."""
        if isinstance(text, str) and text.strip():
            self.matcher.score_turns([prepare_query(text, self.matcher.max_chars)[0]])

    def decide_plan(self, request: Request, *, use_classifier: bool = True,
                    metadata: Mapping[str, str] | None = None) -> Plan[Decision]:
        """The whole decision for one query or conversation as a plan (rules, index, then the
        fallback). Rules and index are CPU work: `run_sync` inline, `run_async` in a thread."""
        found: tuple[Decision, list[str]] = yield Offload(partial(self.match, request,
                                                                  metadata))
        decision, recent = found
        if use_classifier and decision.method == "undecided":
            decision = yield from self.resolve_plan(decision, recent)
        if self.tiers is None or decision.route is None:
            return decision
        tiered: Decision = yield Offload(partial(self.tiered, decision))
        return tiered

    def tiered(self, decision: Decision) -> Decision:
        """The decision with its route's ladder choice (`Decision.tier`; routing/tiering.py),
        unchanged when the route has no ladder."""
        if self.tiers is None:
            return decision
        return with_tier(decision, self.routes, self.tiers, self.matcher.cache)

    def resolve_plan(self, decision: Decision,
                     recent: Sequence[str] = ()) -> Plan[Decision]:
        """What happens to an undecided decision: classifier (shown the `recent` user turns
        of a conversation, oldest first), else the default route. Below the classifier floor
        (`router.classifier_min_score`) the query is too far from every route to be worth a
        model call: straight to the default route."""
        default = self.routes.settings.default_route
        if self.classifier is None:
            return to_default(decision, default, "no classifier configured")
        floor = self.classifier_floor
        if floor is not None and decision.score < floor:
            return to_default(replace(decision, extra={**decision.extra,
                                                       "classifier_floor": floor}),
                              default, f"score {decision.score:.3f} below the classifier "
                              f"floor {floor:.3f}, no classifier call")
        return (yield from self.classifier.plan(decision, default, recent))


def load_router(routes: str | Path | RouteSet = "routes", index: str | Path = "indexes/default",
                **kwargs: object) -> Router:
    """Shorthand for `Router.load(...)`."""
    return Router.load(routes, index, **kwargs)  # type: ignore[arg-type]
