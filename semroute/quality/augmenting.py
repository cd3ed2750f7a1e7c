"""`semroute augment`: new utterances for thin routes, written by the configured model as
paraphrases of the route's own, filtered like `suggest`'s proposals and offered as a patch.

The model is asked (through `Dispatcher.dispatch(model=...)`: retries, failover and the trace
as for any request) for varied messages that belong to the route and to none of the others.
Its lines are cleaned (numbering, bullets, quotes), then a text is left out when it: is empty
or too long, shows personal data, repeats an utterance, is sent by the index straight to
another route (the paraphrase drifted: reported, never added), sits on another route's
utterance, or nearly repeats the route's own. The rest are chosen for diversity
(farthest-first), at most N per route. Nothing is written here: the caller reviews the patch.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from semroute.config import normalise_text
from semroute.errors import SemrouteError
from semroute.quality.route_patch import RouteEdit, RoutePatch, make_patch
from semroute.quality.suggesting import (
    DROP_REASONS,
    Candidate,
    Conflict,
    Proposal,
    suggest_utterances,
)

if TYPE_CHECKING:
    from semroute.config import Route
    from semroute.routing import Router

SHOWN_UTTERANCES = 20  # the route's utterances shown to the model
SHOWN_ROUTES = 40  # other routes named as "not these"
MAX_CHARS = 300  # a longer line is not an utterance
_BULLET = re.compile(r"^\s*(?:[-*•]+|\(?\d{1,3}[.):]|[a-z][.)])\s+")

SYSTEM = ("You write training examples for an intent router. Answer with the requested "
          "messages only, one per line, with no numbering, quotes or commentary.")


@dataclass(frozen=True)
class Drifted:
    """A paraphrase the index sends with confidence to another route: shown, never added."""

    route: str
    text: str
    index_route: str
    score: float


@dataclass
class RouteAugmentation:
    """What the model wrote for one route and what became of each line."""

    route: str
    model: str
    request_id: str | None
    cost_usd: float
    written: int
    proposals: list[Proposal] = field(default_factory=list)
    drifted: list[Drifted] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "model": self.model, "request_id": self.request_id,
                "cost_usd": self.cost_usd, "written": self.written,
                "proposals": [p.__dict__ for p in self.proposals],
                "drifted": [d.__dict__ for d in self.drifted],
                "conflicts": [c.__dict__ for c in self.conflicts],
                "dropped": dict(self.dropped)}


@dataclass
class Augmentation:
    """Proposals for every route asked about, and the patch that adds them."""

    routes: list[RouteAugmentation]
    patch: RoutePatch

    def to_dict(self) -> dict[str, Any]:
        return {"routes": [r.to_dict() for r in self.routes], "problems": self.patch.problems,
                "files": sorted(str(p) for p in self.patch.files), "patch": self.patch.diff()}

    def summary(self) -> str:
        """A readable account per route: what is proposed, what drifted, what was left out."""
        lines: list[str] = []
        for r in self.routes:
            lines.append(f"{r.route}: the model '{r.model}' wrote {r.written} line(s) "
                         f"(${r.cost_usd:.6f}); +{len(r.proposals)} utterance(s)")
            lines += [f"  + {p.text!r}  (nearest own utterance {p.nearest:.2f}; "
                      f"{p.index_said})" for p in r.proposals]
            lines += [f"  drifted, not added: {d.text!r} goes to '{d.index_route}' "
                      f"(score {d.score:.2f})" for d in r.drifted]
            lines += [f"  conflict, not added: {c.text!r} is {c.other_similarity:.2f} from "
                      f"'{c.other_route}' utterance {c.other_utterance!r}"
                      for c in r.conflicts]
            reasons = (*DROP_REASONS, "too_long", "empty", "preamble")
            left = ", ".join(f"{r.dropped[k]} {k.replace('_', ' ')}" for k in reasons
                             if r.dropped.get(k))
            if left:
                lines.append(f"  left out: {left}")
        lines += [f"\nnot patched: {p}" for p in self.patch.problems]
        return "\n".join(lines)


def augment_prompt(route: Route, others: Sequence[Route], n: int) -> str:
    """The request to the model: the route, its examples, the routes it must not overlap."""
    shown = "\n".join(f"- {u}" for u in route.utterances[:SHOWN_UTTERANCES])
    other = "\n".join(f"- {r.name}: {r.description}" for r in others[:SHOWN_ROUTES])
    avoid = (f"\nEach message must NOT belong to any of these other intents:\n{other}\n"
             if other else "")
    return (f"Intent '{route.name}': {route.description}\n"
            f"Example messages of this intent:\n{shown}\n{avoid}\n"
            f"Write {n} new messages a user could send for the intent '{route.name}'. "
            f"Vary the wording, length and tone; keep the meaning of the intent; do not "
            f"repeat the examples; no personal details. One message per line.")


def parse_lines(text: str, max_chars: int = MAX_CHARS) -> tuple[list[str], Counter[str]]:
    """The model's answer as candidate utterances (bullets, numbering and wrapping quotes
    removed, whitespace normalised), and counts of lines left out (`empty`, `preamble`: a
    line ending in a colon, `too_long`)."""
    out: list[str] = []
    dropped: Counter[str] = Counter()
    for raw in text.splitlines():
        line = _BULLET.sub("", raw).strip()
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
            line = line[1:-1].strip()
        line = normalise_text(line)
        if not line or not any(ch.isalpha() for ch in line):
            dropped["empty"] += bool(raw.strip())
            continue
        if line.endswith(":"):  # "Here are some messages:"
            dropped["preamble"] += 1
            continue
        if len(line) > max_chars:
            dropped["too_long"] += 1
            continue
        out.append(line)
    return out, +dropped


Ask = Callable[[str, str, str], tuple[str, float, str | None]]
"""(model key, system, prompt) -> (answer text, cost in USD, request id)."""


def augment(router: Router, routes: Sequence[str], ask: Ask, *, model: str,
            n: int = 10, per_route: int = 5) -> Augmentation:
    """Ask `model` for `n` paraphrases of each route in `routes` and keep at most `per_route`
    of them per route (see the module doc); `ask` calls the model."""
    by_name = {r.name: r for r in router.routes.routes}
    unknown = [r for r in routes if r not in by_name]
    if unknown:
        raise SemrouteError(f"no route named {', '.join(map(repr, unknown))}; routes: "
                            f"{', '.join(sorted(by_name))}")
    if n < 1 or per_route < 0:
        raise SemrouteError(f"n must be >= 1 and per_route >= 0 (got {n}, {per_route})")
    results: list[RouteAugmentation] = []
    for name in dict.fromkeys(routes):
        route = by_name[name]
        others = [r for r in router.routes.routes if r.name != name]
        answer, cost, request_id = ask(model, SYSTEM, augment_prompt(route, others, n))
        texts, dropped = parse_lines(answer)
        result = RouteAugmentation(name, model, request_id, cost, len(texts), dropped=dropped)
        results.append(result)
        if not texts:
            continue
        keep: list[Candidate] = []
        for text, d in zip(texts, router.matcher.match_batch(texts), strict=True):
            if d.method == "index" and d.route not in (None, name):
                result.drifted.append(Drifted(name, text, str(d.route), d.score))
            else:
                keep.append(Candidate(text, name, "augment"))
        found = suggest_utterances(router, keep, per_route=per_route, keep_routed_right=True)
        result.proposals = found.proposals.get(name, [])
        result.conflicts = found.conflicts
        result.dropped.update(found.dropped)
    edits = [RouteEdit(r.route, by_name[r.route].file, tuple(p.text for p in r.proposals))
             for r in results if r.proposals]
    return Augmentation(results, make_patch(router.routes.directory, edits))
