"""`semroute suggest` end to end: gather what the learning loop logged, propose utterances
(`suggesting.py`) and tier moves (`tier_moves.py`), and turn them into one reviewable patch
to the route files (`route_patch.py`). Nothing is written here; `apply_patch` writes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.quality.route_patch import RouteEdit, RoutePatch, make_patch
from semroute.quality.suggesting import (
    CONFLICT_SIM,
    DROP_REASONS,
    DUP_SIM,
    UtteranceSuggestions,
    gather,
    suggest_utterances,
)
from semroute.quality.tier_moves import (
    MIN_N,
    TARGET,
    TierMove,
    collect_evidence,
    propose_tier_moves,
)

if TYPE_CHECKING:
    from semroute.outcomes import OutcomeStore
    from semroute.routing import Router

DROP_WORDS = {"no_text": "text not kept", "unknown_route": "label names no route",
              "personal_data": "personal data (never copied)", "duplicate": "exact duplicates",
              "routed_right": "already routed right by the index",
              "near_duplicate": f"near duplicates (cosine >= {DUP_SIM})",
              "conflict": f"conflicts (another route's utterance >= {CONFLICT_SIM})",
              "limit": "over the per-route limit"}


@dataclass
class Suggestions:
    """What `semroute suggest` proposes, and the patch that makes it."""

    utterances: UtteranceSuggestions
    moves: list[TierMove]
    notes: list[str]
    patch: RoutePatch
    gathered: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        u = self.utterances.to_dict()
        for k, v in self.gathered.items():
            u["dropped"][k] = u["dropped"].get(k, 0) + v
        return {"utterances": u, "tier_moves": [m.to_dict() for m in self.moves],
                "notes": self.notes, "problems": self.patch.problems,
                "files": sorted(str(p) for p in self.patch.files), "patch": self.patch.diff()}

    def summary(self) -> str:
        """A readable account: what is proposed per route and why, what was left out."""
        u = self.utterances
        dropped = Counter(u.dropped)
        dropped.update(self.gathered)
        lines = [f"{u.candidates} labelled queries with text (classifier decisions and "
                 f"feedback corrections): {u.added} new utterances for "
                 f"{sum(1 for v in u.proposals.values() if v)} route(s)"]
        for reason in DROP_REASONS:
            if dropped.get(reason):
                extra = (" (" + ", ".join(f"{k} {v}" for k, v in u.personal_kinds.items())
                         + ")") if reason == "personal_data" else ""
                lines.append(f"  left out: {dropped[reason]} {DROP_WORDS[reason]}{extra}")
        for route, props in sorted(u.proposals.items()):
            if props:
                lines.append(f"\n{route}: +{len(props)} utterances")
                lines += [f"  + {p.text!r}  ({p.source}; {p.index_said}; nearest utterance "
                          f"{p.nearest:.2f})" for p in props]
        if u.conflicts:
            lines.append("\nconflicts (reported, not added: the query sits on another "
                         "route's utterance; check the label or the other route):")
            lines += [f"  {c.text!r} labelled '{c.route}' is {c.other_similarity:.2f} from "
                      f"'{c.other_route}' utterance {c.other_utterance!r} (own route "
                      f"{c.own_similarity:.2f})" for c in u.conflicts]
        if self.moves:
            lines.append("\ntier moves:")
            lines += [f"  {m.route}: {m.from_tier} -> {m.to_tier} (model "
                      f"{list(m.from_models)} -> {list(m.to_models)}): {m.why}"
                      for m in self.moves]
        if self.notes:
            lines.append("\nroutes that stay:")
            lines += [f"  {n}" for n in self.notes]
        lines += [f"\nnot patched: {p}" for p in self.patch.problems]
        return "\n".join(lines)


def suggest(router: Router, *, store: OutcomeStore | None = None,
            traces: Sequence[str | Path] = (), since: float | None = None,
            per_route: int = 5, target: float = TARGET, min_n: int = MIN_N,
            tiers: bool = True) -> Suggestions:
    """Proposals from the store (journal, feedback, records, shadow verdicts) and trace files
    since `since`, checked against `router`'s route set and index, as one patch."""
    routes = router.routes
    candidates, gathered = gather(store, traces, routes.names, since)
    found = suggest_utterances(router, candidates, per_route=per_route)
    moves: list[TierMove] = []
    notes: list[str] = []
    if tiers and store is not None:
        moves, notes = propose_tier_moves(routes, collect_evidence(store, since),
                                          target=target, min_n=min_n)
    by_route = {r.name: r for r in routes.routes}
    edits: dict[str, RouteEdit] = {}
    for name, props in found.proposals.items():
        if props:
            edits[name] = RouteEdit(name, by_route[name].file, tuple(p.text for p in props))
    for m in moves:
        old = edits.get(m.route, RouteEdit(m.route, m.file))
        edits[m.route] = RouteEdit(m.route, m.file, old.add_utterances, m.to_models,
                                   m.to_tier if m.set_tier else None)
    patch = make_patch(routes.directory, edits.values())
    return Suggestions(found, moves, notes, patch, gathered)
