"""Rules before the index: route-file conditions checked in microseconds, before any encoding.

Rules are compiled once (one regex per keyword list, the user regex precompiled) and checked
in a fixed order: highest `priority` first, then route-file order (files sorted by name), then
the order within the file. The first rule that fires decides (method "rule").
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from semroute.config import RouteSet, RuleSpec
from semroute.config.rules import REGEX_FLAGS, all_pattern, any_pattern, tokens
from semroute.routing.decision import Decision, RuleHit
from semroute.routing.matcher import Matcher, prepare_query


class QueryText:
    """A normalised query and what rules ask of it (word count, tokens), each computed once."""

    __slots__ = ("_tokens", "_words", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._words: int | None = None
        self._tokens: frozenset[str] | None = None

    @property
    def words(self) -> int:
        if self._words is None:
            self._words = len(self.text.split())
        return self._words

    @property
    def tokens(self) -> frozenset[str]:
        if self._tokens is None:
            self._tokens = tokens(self.text)
        return self._tokens


@dataclass(frozen=True)
class CompiledRule:
    """One rule, ready to check: compiled patterns and bounds."""

    route: str
    name: str
    priority: int
    any_re: re.Pattern[str] | None
    all_re: re.Pattern[str] | None
    all_words: tuple[str, ...]
    any_tokens: tuple[frozenset[str], ...]  # per keyword: the tokens a match needs
    all_tokens: frozenset[str]
    regex: re.Pattern[str] | None
    min_chars: int | None
    max_chars: int | None
    min_words: int | None
    max_words: int | None
    metadata: tuple[tuple[str, str], ...]
    spec: RuleSpec

    @classmethod
    def compile(cls, route: str, spec: RuleSpec) -> CompiledRule:
        """Compile a validated rule of route `route`."""
        return cls(
            route=route, name=spec.name, priority=spec.priority,
            any_re=re.compile(any_pattern(spec.any_), REGEX_FLAGS) if spec.any_ else None,
            all_re=re.compile(all_pattern(spec.all_), REGEX_FLAGS) if spec.all_ else None,
            all_words=spec.all_ or (),
            any_tokens=tuple(tokens(k) for k in spec.any_ or ()),
            all_tokens=frozenset().union(*(tokens(k) for k in spec.all_ or ())),
            regex=re.compile(spec.regex, REGEX_FLAGS) if spec.regex else None,
            min_chars=spec.min_chars, max_chars=spec.max_chars, min_words=spec.min_words,
            max_words=spec.max_words, metadata=tuple((spec.metadata or {}).items()), spec=spec)

    def fire(self, query: QueryText | str, metadata: Mapping[str, str] | None, *,
             ignore_metadata: bool = False) -> RuleHit | None:
        """The hit when every condition holds on the normalised query, else None (cheapest
        checks first); `ignore_metadata` checks the text conditions only."""
        q = QueryText(query) if isinstance(query, str) else query
        text = q.text
        if self.metadata and not ignore_metadata and (
                metadata is None or any(metadata.get(k) != v for k, v in self.metadata)):
            return None
        n = len(text)
        if (self.min_chars is not None and n < self.min_chars) or \
                (self.max_chars is not None and n > self.max_chars):
            return None
        if (self.min_words is not None and q.words < self.min_words) or \
                (self.max_words is not None and q.words > self.max_words):
            return None
        if self.all_re is not None and not self.all_tokens <= q.tokens:
            return None
        if self.any_re is not None and not any(t <= q.tokens for t in self.any_tokens):
            return None
        hit: tuple[str, tuple[str, ...]] | None = None
        if self.any_re is not None:
            m = self.any_re.search(text)
            if m is None:
                return None
            hit = ("any", (" ".join(m.group(0).split()),))
        if self.all_re is not None:
            if self.all_re.search(text) is None:
                return None
            hit = hit or ("all", self.all_words)
        if self.regex is not None:
            m = self.regex.search(text)
            if m is None:
                return None
            hit = hit or ("regex", (m.group(0),))
        if hit is None:
            hit = self._size_or_metadata_hit(n, text, ignore_metadata)
        return RuleHit(route=self.route, rule=self.name, condition=hit[0], matched=hit[1])

    def _size_or_metadata_hit(self, n: int, text: str,
                              ignore_metadata: bool) -> tuple[str, tuple[str, ...]]:
        if self.metadata and not ignore_metadata:
            return "metadata", tuple(f"{k}={v}" for k, v in self.metadata)
        for cond in ("min_chars", "max_chars"):
            if getattr(self, cond) is not None:
                return cond, (f"{n} chars",)
        cond = "min_words" if self.min_words is not None else "max_words"
        return cond, (f"{len(text.split())} words",)


@dataclass(frozen=True)
class RuleOutcome:
    """What the rules stage did for one query: the rule decision, if one fired, and its time."""

    decision: Decision | None
    ms: float

    def timed(self, decision: Decision) -> Decision:
        """`decision` (made after the rules) with the rules stage first in its timings."""
        return replace(decision, timings_ms={"rules": self.ms, **decision.timings_ms})


class RuleSet:
    """Every rule of a route set, in the order they are checked."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = tuple(rules)
        # Keyword rules are candidates only when the query has one of their tokens (an `any`
        # keyword's, or any of the `all` keywords'): a token -> rule positions index makes the
        # cost grow with the rules a query could fire, not with all rules.
        self._always: list[int] = []
        self._by_token: dict[str, list[int]] = {}
        for i, r in enumerate(self.rules):
            trigger = frozenset().union(*r.any_tokens) if r.any_tokens else r.all_tokens
            if not trigger:
                self._always.append(i)
            for t in trigger:
                self._by_token.setdefault(t, []).append(i)
        self._keys = frozenset(self._by_token)

    @classmethod
    def from_routes(cls, routes: RouteSet) -> RuleSet:
        """Compile a route set's rules: by priority (highest first), then file and rule order."""
        compiled = [CompiledRule.compile(r.name, spec) for r in routes.routes for spec in r.rules]
        return cls(sorted(compiled, key=lambda c: -c.priority))

    def __len__(self) -> int:
        return len(self.rules)

    def first(self, text: str, metadata: Mapping[str, str] | None = None) -> RuleHit | None:
        """The first rule that fires on normalised `text`, or None."""
        q = QueryText(text)
        order: list[int] | set[int] = self._always
        if self._keys:
            order = set(self._always)
            for t in q.tokens & self._keys:
                order.update(self._by_token[t])
        for i in sorted(order):
            hit = self.rules[i].fire(q, metadata)
            if hit is not None:
                return hit
        return None

    def check(self, query: str, matcher: Matcher,
              metadata: Mapping[str, str] | None = None) -> RuleOutcome:
        """The rules stage for one raw query: a rule Decision when one fires (thresholds as
        the index would apply them to that route), timed either way."""
        t0 = time.perf_counter()
        full, _ = prepare_query(query, sys.maxsize)  # validates, as the index does; never cut
        cut, truncated = full[:matcher.max_chars], len(full) > matcher.max_chars
        hit = self.first(full, metadata)
        if hit is None:
            return RuleOutcome(None, (time.perf_counter() - t0) * 1e3)
        th = matcher.thresholds
        ms = (time.perf_counter() - t0) * 1e3
        shown = ", ".join(repr(m) for m in hit.matched)
        decision = Decision(
            query=cut, route=hit.route, method="rule", score=1.0, margin=1.0,
            threshold=th.for_route(hit.route), margin_threshold=th.margin,
            reason=f"rule '{hit.rule}' of route '{hit.route}' fired ({hit.condition}: {shown})",
            candidates=(), timings_ms={"rules": ms}, truncated=truncated, rule=hit)
        return RuleOutcome(decision, ms)

    def match_batch(self, queries: Sequence[str], matcher: Matcher,
                    metadata: Mapping[str, str] | None = None) -> list[Decision]:
        """Decisions for many queries: rules first, the rest through the index in one batch."""
        if not self.rules:
            return matcher.match_batch(queries)
        outcomes = [self.check(q, matcher, metadata) for q in queries]
        rest = [q for q, o in zip(queries, outcomes, strict=True) if o.decision is None]
        indexed = iter(matcher.match_batch(rest) if rest else [])
        return [o.decision if o.decision is not None else o.timed(next(indexed))
                for o in outcomes]
