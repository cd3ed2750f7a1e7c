"""The routing decision: one shape whatever decided it, so it can be logged and explained."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from semroute.config import MODEL_PREFIX

Method = Literal["rule", "index", "classifier", "default", "undecided", "step",
                 "explicit"]


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so the dict is exactly what JSON will carry."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Neighbour:
    """An utterance near the query."""

    text: str
    similarity: float


@dataclass(frozen=True)
class Candidate:
    """A route considered for the query, its score and its nearest utterances."""

    route: str
    score: float
    neighbours: tuple[Neighbour, ...]


@dataclass(frozen=True)
class ClassifierCall:
    """What the fallback classifier did: which model, what it answered, what it cost, and
    the out-of-scope examples its prompt showed under `none` (empty: none shown)."""

    model: str
    answer: str | None
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False
    error: str | None = None
    none_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleHit:
    """The rule that decided (method "rule"): its route and name, the condition that matched
    (`any`, `all`, `regex`, a length bound or `metadata`) and what matched (e.g. the keyword)."""

    route: str
    rule: str
    condition: str
    matched: tuple[str, ...] = ()


@dataclass(frozen=True)
class TurnWeight:
    """One conversation turn that counted in a decision: its position in the messages, its
    role, its weight in the combined route scores and the route it points to on its own."""

    turn: int
    role: str
    weight: float
    route: str | None


@dataclass(frozen=True)
class NegativeHit:
    """A negative or out-of-scope example that lowered a route's score (README "Negatives"):
    `kind` `negative` (one of `route`'s negatives) or `oos` (an
    out-of-scope example), its text, its similarity to the query, `nearest`, the similarity
    of `route`'s nearest utterance it was compared with, and `penalty`, what `route`'s score
    lost."""

    kind: Literal["negative", "oos"]
    route: str
    text: str
    similarity: float
    nearest: float
    penalty: float


@dataclass(frozen=True)
class TierNeighbour:
    """An outcome record's query near this one: its text hash (never its text) and the
    similarity of the two vectors."""

    text_hash: str
    similarity: float


@dataclass(frozen=True)
class TierChoice:
    """What a route's ladder chose (README "Outcome-learned tiers"): the ladder (cheap to
    strong), the target and where it came from (`route file`, `router.ladder` or the fitted
    `tiers.json`), each model's predicted quality and support (neighbours with an outcome for
    it), `min_support`, the model chosen to go first (`chosen`; the static model when the
    tiers are inactive or support is short), whether a prediction decided (`learned`), why,
    and the nearest outcome records the predictions came from."""

    ladder: tuple[str, ...]
    target: float
    target_source: str
    min_support: float
    chosen: str
    learned: bool
    reason: str
    quality: dict[str, float] = field(default_factory=dict)
    support: dict[str, float] = field(default_factory=dict)
    neighbours: tuple[TierNeighbour, ...] = ()


@dataclass(frozen=True)
class Decision:
    """Where a query goes and why.

    `route` is None when nothing decided (method "undecided"): the index found no route
    clearing the thresholds and no classifier or default route took it; and when the caller
    named a model itself (method "explicit", `Decision.explicit`): nothing was routed.
    `timings_ms` has one entry per stage that ran (rules, normalise, encode, search, score,
    classify). A rule decision (method "rule", `rule` says which) has score 1.0 and margin 1.0,
    no candidates, and the thresholds the index would have applied to its route. A step
    decision (method "step": the caller named an agent step) is the same, with route
    `step:<name>`, thresholds 0 and a `step` timing: no rule or encoder ran.
    `context` lists the turns that counted when a follow-up was routed in the context of the
    conversation (empty when the latest user turn was routed on its own).
    `tier` is what the route's ladder chose (None when the route has no ladder); its time is
    the `tiers` entry of `timings_ms`.
    `negatives` lists the negatives and out-of-scope examples that lowered route scores, in
    the order applied (empty when none did); `score`, `margin` and `candidates` are the
    lowered ones.
    `oos_neighbours` are the route set's out-of-scope examples nearest the query (empty when
    it has none): the fallback classifier shows them as examples of `none`.
    """

    query: str
    route: str | None
    method: Method
    score: float
    margin: float
    threshold: float
    margin_threshold: float
    reason: str
    candidates: tuple[Candidate, ...]
    timings_ms: dict[str, float]
    truncated: bool = False
    classifier: ClassifierCall | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    rule: RuleHit | None = None
    context: tuple[TurnWeight, ...] = ()
    tier: TierChoice | None = None
    negatives: tuple[NegativeHit, ...] = ()
    oos_neighbours: tuple[Neighbour, ...] = ()

    @classmethod
    def explicit(cls, query: str, model_key: str) -> Decision:
        """The decision for a request whose caller named the model (catalogue key) itself:
        nothing scored; its route is the label `model:<key>` (`RouteSet.model_route`), and it
        is traced like any other."""
        return cls(query=query, route=f"{MODEL_PREFIX}{model_key}", method="explicit",
                   score=1.0, margin=1.0,
                   threshold=0.0, margin_threshold=0.0,
                   reason=f"the caller named model '{model_key}'", candidates=(),
                   timings_ms={}, extra={"model_key": model_key})

    @property
    def total_ms(self) -> float:
        return sum(self.timings_ms.values())

    def to_dict(self, *, include_query: bool = True) -> dict[str, Any]:
        """A JSON-ready dict with every field (query text optional, for privacy in traces)."""
        d: dict[str, Any] = _plain(asdict(self))
        d["total_ms"] = self.total_ms
        if not include_query:
            d.pop("query")
        return d
