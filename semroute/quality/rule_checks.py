"""Lint checks of route-file rules: rules that can never fire because an earlier one always
does, rules that catch another route's utterances, rules that miss all of their own route's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from semroute.config import Route, RouteSet, RuleSpec
from semroute.routing import CompiledRule, RuleSet

Level = Literal["error", "warning"]
EXAMPLES_SHOWN = 3


def _keys(words: tuple[str, ...] | None) -> set[str]:
    return {w.casefold() for w in words or ()}


def _at_least(earlier: int | None, later: int | None) -> bool:
    return earlier is None or (later is not None and later >= earlier)


def _at_most(earlier: int | None, later: int | None) -> bool:
    return earlier is None or (later is not None and later <= earlier)


def covers(earlier: RuleSpec, later: RuleSpec) -> bool:
    """Whether `earlier` fires on every query `later` fires on, in the cases that can be told
    from the conditions alone: identical conditions, `any` keywords a superset of the later
    rule's (or containing one of its `all` keywords), looser bounds, a subset of metadata."""
    e_any, l_any, e_all, l_all = (_keys(earlier.any_), _keys(later.any_),
                                  _keys(earlier.all_), _keys(later.all_))
    if earlier.any_ is not None and not ((later.any_ is not None and l_any <= e_any)
                                         or (later.all_ is not None and l_all & e_any)):
        return False
    if earlier.all_ is not None:
        implied = l_all | (l_any if len(l_any) == 1 else set())
        if not e_all <= implied:
            return False
    if earlier.regex is not None and earlier.regex != later.regex:
        return False
    if not (_at_least(earlier.min_chars, later.min_chars)
            and _at_most(earlier.max_chars, later.max_chars)
            and _at_least(earlier.min_words, later.min_words)
            and _at_most(earlier.max_words, later.max_words)):
        return False
    e_meta, l_meta = earlier.metadata or {}, later.metadata or {}
    return all(l_meta.get(k) == v for k, v in e_meta.items())


class RuleChecks:
    """The rule checks over one route set (rules in the order the router checks them)."""

    def __init__(self, routes: RouteSet) -> None:
        self.by_name: dict[str, Route] = {r.name: r for r in routes.routes}
        self.rules = RuleSet.from_routes(routes).rules

    def _file(self, route: str) -> str:
        r = self.by_name.get(route)
        return str(r.file) if r else "?"

    def shadowed(self) -> Iterator[tuple[Level, str, str, str | None, str]]:
        """Later rules an earlier one always pre-empts: errors across routes (the later route
        never gets those queries), warnings within a route (the later rule is dead)."""
        for j, later in enumerate(self.rules):
            for earlier in self.rules[:j]:
                if covers(earlier.spec, later.spec):
                    same = earlier.route == later.route
                    how = ("has identical conditions" if earlier.spec.conditions()
                           == later.spec.conditions() and covers(later.spec, earlier.spec)
                           else "fires on everything it fires on")
                    yield ("warning" if same else "error", self._file(later.route), later.route,
                           None, f"rule '{later.name}' never fires: rule '{earlier.name}' of "
                           f"route '{earlier.route}' is checked first and {how}; remove one, "
                           f"narrow the earlier rule or give this one a higher priority")
                    break

    def utterances(self) -> Iterator[tuple[Level, str, str, str | None, str]]:
        """Rules that fire on other routes' utterances (misroutes: errors) or on none of their
        own route's (warnings; only rules with keywords or a regex are expected to)."""
        for rule in self.rules:
            if rule.spec.conditions() == ["metadata"]:
                continue  # utterances carry no metadata: nothing to learn from them
            own = self.by_name.get(rule.route)
            if own is not None and rule.spec.has_text_condition and not any(
                    rule.fire(u, None, ignore_metadata=True) for u in own.utterances):
                yield ("warning", self._file(rule.route), rule.route, None,
                       f"rule '{rule.name}' fires on none of this route's utterances: check "
                       f"its keywords, or add utterances like the queries it is meant for")
            yield from self._misroutes(rule)

    def _misroutes(self, rule: CompiledRule) -> Iterator[tuple[Level, str, str, str | None,
                                                               str]]:
        for other in self.by_name.values():
            if other.name == rule.route:
                continue
            hits = [u for u in other.utterances if rule.fire(u, None, ignore_metadata=True)]
            if not hits:
                continue
            shown = "; ".join(repr(h) for h in hits[:EXAMPLES_SHOWN])
            more = f" and {len(hits) - EXAMPLES_SHOWN} more" if len(hits) > EXAMPLES_SHOWN else ""
            gate = " (when its metadata matches)" if rule.metadata else ""
            yield ("error", self._file(rule.route), rule.route, hits[0],
                   f"rule '{rule.name}' fires{gate} on {len(hits)} utterance(s) of route "
                   f"'{other.name}' ({other.file.name}): {shown}{more}: such queries would be "
                   f"misrouted here; narrow the rule")
