"""Routing decisions on the example set: clear queries land, in-between queries show a small
margin, and a decision always has the same, complete shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from semroute.errors import QueryError
from semroute.routing import Decision, Router, Thresholds

CASES = yaml.safe_load((Path(__file__).parent / "data" / "routing_cases.yaml").read_text())
CLEAR = [(route, q) for route, qs in CASES["clear"].items() for q in qs]
BETWEEN = [(c["query"], tuple(c["routes"])) for c in CASES["between"]]


@pytest.mark.parametrize(("expected", "query"), CLEAR)
def test_clear_query_ranks_its_route_first(router: Router, expected: str, query: str) -> None:
    d = router.route(query)
    if d.method == "rule":  # a rule of the example set took it: it must take it right
        assert d.route == expected, d.reason
    d = router.matcher.match(query)  # and the index alone ranks it first too
    assert d.candidates[0].route == expected, (
        f"{query!r} ranked {[c.route for c in d.candidates[:3]]}, expected {expected}")


def test_most_clear_queries_are_decided_by_the_index(router: Router) -> None:
    decided = [router.route(q) for _, q in CLEAR]
    by_index = [d for d in decided if d.method in ("rule", "index")]
    assert len(by_index) >= 0.7 * len(CLEAR), [(d.query, d.reason) for d in decided
                                               if d.method not in ("rule", "index")]
    for (expected, _), d in zip(CLEAR, decided, strict=True):
        if d.method in ("rule", "index"):
            assert d.route == expected


@pytest.mark.parametrize(("query", "pair"), BETWEEN)
def test_in_between_query_has_a_small_margin(router: Router, query: str,
                                             pair: tuple[str, str]) -> None:
    if (ruled := router.route(query)).method == "rule":
        assert ruled.route in pair, ruled.reason
    d = router.matcher.match(query)  # the index alone
    top2 = {c.route for c in d.candidates[:2]}
    assert d.candidates[0].route in pair, f"{query!r} went to {d.candidates[0].route}"
    assert d.margin < 0.1 or top2 == set(pair), (
        f"{query!r}: margin {d.margin:.3f}, top two {top2}")
    clear_margins = sorted(router.matcher.match(q).margin for _, q in CLEAR)
    assert d.margin < clear_margins[len(clear_margins) // 2], "should be below the median"


def test_route_batch_equals_route_one_by_one(router: Router) -> None:
    queries = [q for _, q in CLEAR[:12]] + [q for q, _ in BETWEEN]
    batch = router.route_batch(queries)
    for q, b in zip(queries, batch, strict=True):
        one = router.route(q)
        assert (b.route, b.method, b.candidates) == (one.route, one.method, one.candidates)
        assert b.score == pytest.approx(one.score, abs=1e-5)
        assert b.margin == pytest.approx(one.margin, abs=1e-5)


def test_decision_has_every_field(router: Router) -> None:
    d = router.route("how do I reverse a linked list")
    assert isinstance(d, Decision)
    assert d.method in {"index", "undecided"}
    assert set(d.timings_ms) == {"rules", "normalise", "encode", "search", "score"}
    assert d.candidates and d.candidates[0].neighbours
    assert all(-1.0 <= n.similarity <= 1.0001 for c in d.candidates for n in c.neighbours)
    assert [c.score for c in d.candidates] == sorted((c.score for c in d.candidates),
                                                     reverse=True)
    assert d.margin == pytest.approx(d.candidates[0].score - d.candidates[1].score, abs=1e-5)
    offset = router.index.stats.offsets[router.index.route_names.index(d.candidates[0].route)]
    assert d.score == pytest.approx(d.candidates[0].score - offset, abs=1e-5), \
        "the decision's score is the best route's score minus its offset"


def test_off_topic_queries_score_below_clear_ones(router: Router) -> None:
    junk = router.route_batch(["zxqv blorp", "qwerty uiop", "purple monkey dishwasher"],
                              use_classifier=False)
    clear = sorted(d.score for d in router.route_batch([q for _, q in CLEAR],
                                                       use_classifier=False))
    median = clear[len(clear) // 2]
    assert all(d.score < median for d in junk), [(d.query, d.score) for d in junk]


def test_query_below_the_threshold_is_undecided(router: Router) -> None:
    saved = router.matcher.thresholds
    try:
        router.matcher.thresholds = Thresholds(0.35, saved.margin, {})
        d = router.route("qwerty uiop", use_classifier=False)
        assert d.method == "undecided" and d.route is None
        assert "below the threshold 0.350" in d.reason
    finally:
        router.matcher.thresholds = saved


def test_queries_are_normalised(router: Router) -> None:
    a = router.route("  how do I   reverse a linked list \n")
    b = router.route("how do I reverse a linked list")
    assert a.query == b.query == "how do I reverse a linked list"
    assert a.candidates == b.candidates


@pytest.mark.parametrize("bad", ["", "   \n\t "])
def test_empty_query_is_a_clear_error(router: Router, bad: str) -> None:
    with pytest.raises(QueryError, match="empty"):
        router.route(bad)


def test_over_long_query_is_truncated_and_says_so(router: Router) -> None:
    long_query = "please summarise this article for me " * 200
    d = router.route(long_query)
    assert d.truncated
    assert len(d.query) == router.routes.settings.max_query_chars


def test_per_route_threshold_overrides_the_router(router: Router) -> None:
    query = "write a python function that checks if a string is a palindrome"
    d = router.route(query, use_classifier=False)
    assert d.route is not None
    saved = router.matcher.thresholds
    try:
        router.matcher.thresholds = Thresholds(saved.score, saved.margin,
                                               {d.route: d.score + 0.01})
        strict = router.route(query, use_classifier=False)
        assert strict.method == "undecided" and strict.threshold == pytest.approx(d.score + 0.01)
    finally:
        router.matcher.thresholds = saved


def test_repeated_query_is_served_from_the_cache(router: Router) -> None:
    cache = router.matcher.cache
    router.route("an unusual query about sourdough starters")
    hits = cache.hits
    router.route("an unusual query about sourdough starters")
    assert cache.hits == hits + 1
