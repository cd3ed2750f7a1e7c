"""Rules before the index: route-file conditions decide in microseconds, before any encoding.

Every router here shares one index built from TINY_ROUTES: rules are not part of the index, so
route folders that differ only in their rules need no rebuild.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.cli import main
from semroute.config import load_routes
from semroute.dispatching import Dispatcher, dispatch
from semroute.errors import ConfigError
from semroute.index import RouteIndex, build_index
from semroute.quality import lint
from semroute.routing import Decision, Router
from semroute.telemetry import read_trace
from tests.conftest import CATALOGUE, TINY_ROUTES, WriteRoutes
from tests.conftest_llm import MakeFaultServer


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rules")
    src = root / "routes"
    src.mkdir()
    for stem, spec in TINY_ROUTES.items():
        (src / f"{stem}.yaml").write_text(yaml.safe_dump(spec))
    (src / "models.yaml").write_text(yaml.safe_dump(CATALOGUE))
    build_index(src, root / "index")
    return root / "index"


def with_rules(**rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """TINY_ROUTES with `rules` added to the named routes."""
    routes = copy.deepcopy(TINY_ROUTES)
    for name, rs in rules.items():
        routes[name]["rules"] = rs
    return routes


@pytest.fixture
def router_with(write_routes: WriteRoutes, tiny_index: Path) -> Any:
    def make(catalogue: dict[str, Any] | None = None, **rules: list[dict[str, Any]]) -> Router:
        return Router.load(write_routes(with_rules(**rules), catalogue), tiny_index,
                           classifier=False)
    return make


def assert_rule_decision(d: Decision, route: str, rule: str) -> None:
    assert (d.route, d.method) == (route, "rule"), d.reason
    assert d.rule is not None and (d.rule.route, d.rule.rule) == (route, rule)
    assert (d.score, d.margin, d.candidates) == (1.0, 1.0, ())
    assert set(d.timings_ms) == {"rules"}, "a rule decision never reaches the encoder"


# ---------------------------------------------------------------- conditions


def test_any_keyword_matches_whole_words_in_any_case_and_skips_the_encoder(
        router_with: Any) -> None:
    router = router_with(code=[{"name": "langs", "any": ["python", "c++", "unit test"]}])
    misses = router.matcher.cache.misses
    d = router.route("Help me with PYTHON please")
    assert_rule_decision(d, "code", "langs")
    assert d.rule is not None and (d.rule.condition, d.rule.matched) == ("any", ("PYTHON",))
    assert router.route("is c++ hard?").rule is not None, "keywords may end in punctuation"
    assert router.route("write a unit   test").rule is not None, "inner whitespace is loose"
    assert router.matcher.cache.misses == misses, "no query was encoded"
    d = router.route("pythonic idioms are nice")
    assert d.method != "rule" and d.rule is None, "'python' is not a whole word here"
    assert "encode" in d.timings_ms and next(iter(d.timings_ms)) == "rules"


def test_all_keywords_must_all_occur(router_with: Any) -> None:
    router = router_with(code=[{"name": "sql_join", "all": ["sql", "join"]}])
    d = router.route("how do I join two tables in sql")
    assert_rule_decision(d, "code", "sql_join")
    assert d.rule is not None and d.rule.matched == ("sql", "join")
    assert router.route("write a sql query").method != "rule"


def test_regex_is_searched_case_insensitively_and_reports_the_match(router_with: Any) -> None:
    router = router_with(code=[{"name": "ticket", "regex": r"\bJIRA-\d+\b"}])
    d = router.route("please fix jira-1234 today")
    assert_rule_decision(d, "code", "ticket")
    assert d.rule is not None and (d.rule.condition, d.rule.matched) == ("regex", ("jira-1234",))


def test_length_bounds_count_characters_and_words(router_with: Any) -> None:
    router = router_with(greet=[{"name": "tiny", "max_words": 2}],
                         code=[{"name": "huge", "min_chars": 3000}])
    assert_rule_decision(router.route("  hi   you  "), "greet", "tiny")
    assert router.route("hello there my friend").method != "rule"
    long_query = "word " * 1000  # 4999 characters, beyond max_query_chars (2000)
    d = router.route(long_query)
    assert_rule_decision(d, "code", "huge")
    assert d.truncated and len(d.query) == 2000, "rules see the whole query; the decision " \
        "shows it cut as the index would"


def test_a_rule_fires_only_when_all_its_conditions_hold(router_with: Any) -> None:
    router = router_with(code=[{"name": "short_sql", "any": ["sql"], "max_words": 5}])
    assert_rule_decision(router.route("a sql query please"), "code", "short_sql")
    assert router.route("a sql query please that joins three tables by id").method != "rule"


def test_metadata_matches_what_the_caller_passes(router_with: Any) -> None:
    router = router_with(code=[{"name": "extraction", "metadata": {"task_type": "extraction"}}])
    d = router.route("hello there", metadata={"task_type": "extraction", "user": "7"})
    assert_rule_decision(d, "code", "extraction")
    assert d.rule is not None and d.rule.matched == ("task_type=extraction",)
    assert router.route("hello there").route == "greet"
    assert router.route("hello there", metadata={"task_type": "chat"}).route == "greet"
    batch = router.route_batch(["hi", "bye"], metadata={"task_type": "extraction"})
    assert [d.method for d in batch] == ["rule", "rule"]
    d = asyncio.run(router.aroute("hello there", metadata={"task_type": "extraction"}))
    assert_rule_decision(d, "code", "extraction")


# ---------------------------------------------------------------- order


def test_first_rule_wins_in_file_then_rule_order(router_with: Any) -> None:
    router = router_with(greet=[{"name": "g", "any": ["python"]}],
                         code=[{"name": "c1", "any": ["snake"]}, {"name": "c2", "any": ["python"]}])
    assert_rule_decision(router.route("python snake"), "code", "c1")  # code.yaml < greet.yaml
    assert_rule_decision(router.route("python"), "code", "c2")
    assert [(r.route, r.name) for r in router.rules.rules] == [("code", "c1"), ("code", "c2"),
                                                               ("greet", "g")]


def test_order_holds_between_keyword_and_size_rules(router_with: Any) -> None:
    router = router_with(code=[{"name": "short", "max_words": 3}],
                         greet=[{"name": "python", "any": ["python"]}])
    assert_rule_decision(router.route("python please"), "code", "short")
    assert_rule_decision(router.route("python is a language i like"), "greet", "python")


def test_a_higher_priority_is_checked_first(router_with: Any) -> None:
    router = router_with(greet=[{"name": "g", "any": ["python"], "priority": 5}],
                         code=[{"name": "c", "any": ["python"]}])
    assert_rule_decision(router.route("python"), "greet", "g")


def test_batches_mix_rule_and_index_decisions_in_order(router_with: Any) -> None:
    router = router_with(greet=[{"name": "g", "any": ["howdy"]}])
    queries = ["implement binary search in java", "howdy partner", "good morning friend"]
    batch = router.route_batch(queries)
    assert [d.method for d in batch] == ["index", "rule", "index"]
    assert [d.route for d in batch] == ["code", "greet", "greet"]
    assert [d.query for d in batch] == queries


def test_decision_json_carries_the_rule(router_with: Any) -> None:
    router = router_with(greet=[{"name": "g", "any": ["howdy"]}])
    d = router.route("howdy").to_dict()
    assert d["method"] == "rule"
    assert d["rule"] == {"route": "greet", "rule": "g", "condition": "any", "matched": ["howdy"]}
    assert router.route("implement binary search in java").to_dict()["rule"] is None


# ---------------------------------------------------------------- dispatch


def test_dispatch_passes_metadata_to_the_rules(write_routes: WriteRoutes, tiny_index: Path,
                                               fault_server: MakeFaultServer,
                                               tmp_path: Path) -> None:
    ok = fault_server([200])
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"]["local"]["fast"]["base_url"] = ok.openai_base_url
    routes = write_routes(with_rules(code=[{"name": "x", "metadata": {"task_type": "extraction"}}]),
                          catalogue)
    router = Router.load(routes, tiny_index, classifier=False)
    r = dispatch("hello there", router=router, metadata={"task_type": "extraction"},
                 max_tokens=8)
    assert r.text and r.route == "code" and r.decision.method == "rule"
    assert "metadata" not in ok.bodies[-1], "request metadata is for the rules only"
    assert r.decision.rule is not None
    assert r.decision.rule.matched == ("task_type=extraction",)
    d = Dispatcher(router, trace=tmp_path / "trace.jsonl")
    assert d.dispatch("hello there", max_tokens=8).decision.method == "index"
    r = asyncio.run(d.adispatch("hello there", metadata={"task_type": "extraction"},
                                max_tokens=8))
    assert (r.route, r.decision.method) == ("code", "rule")
    records = read_trace(tmp_path / "trace.jsonl")
    assert [x["rule"] for x in records] == [None, {"route": "code", "rule": "x",
                                                   "condition": "metadata"}]


# ---------------------------------------------------------------- validation


def test_bad_rules_are_reported_at_once_naming_file_route_rule_and_field(
        write_routes: WriteRoutes) -> None:
    routes = with_rules(code=[
        {"name": "bad_regex", "regex": "(unclosed"},
        {"name": "empty"},
        {"name": "typo", "anyy": ["x"]},
        {"name": "bounds", "min_words": 5, "max_words": 2},
        {"name": "no_words", "any": []},
        {"name": "punct", "any": ["++"]},
    ])
    with pytest.raises(ConfigError) as exc:
        load_routes(write_routes(routes))
    text = str(exc.value)
    assert "code.yaml: route 'code': rule 'bad_regex': field 'rules[1].regex': invalid regular " \
           "expression: missing ), unterminated subpattern at position 0" in text
    assert "rule 'empty': field 'rules[2]': the rule has no condition" in text
    assert "rule 'typo': field 'rules[3].anyy': unknown key" in text
    assert "rule 'bounds': field 'rules[4]': min_words (5) is greater than max_words (2)" in text
    assert "rule 'no_words': field 'rules[5].any': must list at least one keyword" in text
    assert "rule 'punct': field 'rules[6].any': keyword #1 ('++') has no letter or digit" in text


def test_rule_names_are_unique_within_a_route(write_routes: WriteRoutes) -> None:
    routes = with_rules(code=[{"name": "a", "any": ["x"]}, {"name": "a", "any": ["y"]}])
    with pytest.raises(ConfigError, match="rule name 'a' appears twice"):
        load_routes(write_routes(routes))


def test_editing_rules_leaves_the_index_fresh(write_routes: WriteRoutes, tiny_index: Path) -> None:
    plain = load_routes(write_routes(name="plain"))
    ruled = load_routes(write_routes(with_rules(code=[{"name": "c", "any": ["python"]}]),
                                     name="ruled"))
    assert [r.content_hash() for r in plain.routes] == [r.content_hash() for r in ruled.routes]
    RouteIndex.load(tiny_index, ruled)  # would raise StaleIndexError


# ---------------------------------------------------------------- lint


def rule_findings(routes: Path, index: Path) -> list[tuple[str, str, str | None, str]]:
    route_set = load_routes(routes)
    return [(f.level, f.route, f.utterance, f.message)
            for f in lint(route_set, RouteIndex.load(index, route_set)) if "rule '" in f.message]


def test_lint_flags_shadowed_rules(write_routes: WriteRoutes, tiny_index: Path) -> None:
    routes = write_routes(with_rules(
        code=[{"name": "wide", "any": ["python", "java", "rust"]},
              {"name": "same", "any": ["Java", "rust", "python"]}],
        greet=[{"name": "narrow", "any": ["java"]}, {"name": "long", "min_chars": 10},
               {"name": "longer", "min_chars": 20, "any": ["hey"]}]))
    found = rule_findings(routes, tiny_index)
    assert ("warning", "code", None, "rule 'same' never fires: rule 'wide' of route 'code' is "
            "checked first and has identical conditions; remove one, narrow the earlier rule "
            "or give this one a higher priority") in found
    assert any(level == "error" and route == "greet" and "rule 'narrow' never fires: rule "
               "'wide' of route 'code'" in msg for level, route, _, msg in found)
    assert any("rule 'longer' never fires: rule 'long' of route 'greet' is checked first and "
               "fires on everything it fires on" in msg for *_, msg in found)


def test_lint_flags_rules_that_catch_other_routes_utterances(write_routes: WriteRoutes,
                                                             tiny_index: Path) -> None:
    routes = write_routes(with_rules(greet=[{"name": "hello", "any": ["hello", "list"]}]))
    found = rule_findings(routes, tiny_index)
    errors = [(u, m) for level, route, u, m in found if level == "error" and route == "greet"]
    assert errors == [("write a python function to sort a list",
                       "rule 'hello' fires on 2 utterance(s) of route 'code' (code.yaml): "
                       "'write a python function to sort a list'; 'reverse a linked list in C': "
                       "such queries would be misrouted here; narrow the rule")]


def test_lint_warns_about_rules_that_miss_their_own_utterances(write_routes: WriteRoutes,
                                                               tiny_index: Path) -> None:
    routes = write_routes(with_rules(code=[{"name": "cobol", "any": ["cobol"]},
                                           {"name": "huge", "min_chars": 5000},
                                           {"name": "meta", "metadata": {"k": "v"}}]))
    found = rule_findings(routes, tiny_index)
    assert found == [("warning", "code", None, "rule 'cobol' fires on none of this route's "
                      "utterances: check its keywords, or add utterances like the queries it "
                      "is meant for")], "size and metadata rules are not expected to"


def test_example_rules_route_and_lint_clean(router: Router, example_routes: Path,
                                            example_index: Path) -> None:
    assert len(router.rules) >= 5
    cases = {"is this review sarcastic? yes or no": "classification_extraction",
             "design a scalable backend for a ride sharing app": "architecture_design",
             "compare and contrast keynesian and austrian economics": "analysis_synthesis",
             "solve x^2 - 5x + 6 = 0 step by step": "math_reasoning",
             "please read all of this: " + "lorem ipsum dolor " * 400: "analysis_synthesis"}
    for query, route in cases.items():
        d = router.route(query)
        assert (d.route, d.method) == (route, "rule"), query
    d = router.route("hello", metadata={"task_type": "extraction"})
    assert (d.route, d.method) == ("classification_extraction", "rule")
    assert [f for f in rule_findings(example_routes, example_index)] == []


def test_cli_route_takes_metadata_and_shows_the_rule(example_routes: Path, example_index: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["route", "--routes", str(example_routes), "--index", str(example_index),
               "--meta", "task_type=extraction", "hello there"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "route   classification_extraction   (method: rule)" in out
    assert "rule    extraction_task of classification_extraction: metadata " \
           "'task_type=extraction'" in out


def test_in_a_conversation_rules_see_the_latest_user_turn_then_context_takes_over(
        router_with: Any) -> None:
    """A rule fires on the newest user turn of chat messages (with the request's metadata);
    when none fires, the conversation-aware index decides as it would without rules."""
    r = router_with(code=[{"name": "sql", "any": ["sql"]}],
                    greet=[{"name": "by_task", "metadata": {"task_type": "chat"}}])
    chat = [{"role": "user", "content": "write a python function to sort a list"},
            {"role": "assistant", "content": "def sort_list(xs): return sorted(xs)"},
            {"role": "user", "content": "now the same as a SQL query please"}]
    assert_rule_decision(r.route(chat), "code", "sql")
    assert_rule_decision(r.route([*chat[:2], {"role": "user", "content": "thanks"}],
                                 metadata={"task_type": "chat"}), "greet", "by_task")
    follow_up = [*chat[:2], {"role": "user", "content": "now make it faster"}]
    plain = router_with().route(follow_up)
    d = r.route(follow_up)
    assert d.method != "rule" and d.rule is None
    assert (d.route, d.method, d.context) == (plain.route, plain.method, plain.context)
    assert "rules" in d.timings_ms
