"""Cascades: a route may try a cheap model first, check its answer with gates, and escalate.

- an accepted answer costs one call; a rejected one escalates, and every step is paid for;
- a judge gate's call is paid for too, marked in the attempts, and runs only after the free
  gates passed; its output is constrained to the scores 1-10;
- a cheap model that fails escalates like a failed gate; when the last step fails, the
  latest gated-out answer is returned rather than nothing, and the outcome says so;
- a self_confidence gate asks the cheap step for a confidence and strips it from the answer;
- sync and async give the same outcome; streams follow `cascade.stream` (README "Cascades");
- Response.cascade and the trace's `cascade` list every step, never the answer's text;
- config errors name the file, the route and the field.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.config import load_routes
from semroute.dispatching import Dispatcher, Response
from semroute.errors import AllModelsFailedError, ConfigError
from semroute.telemetry import read_trace
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import SseServer, entry, live_openai, load, shared_index, write_set
from tests.support.llm_server import LLMServer

QUERY = "write a python function to sort a list"
CALL_COST = (3 * 2.0 + 3 * 8.0) / 1e6  # a fault-server call: 3 tokens in, 3 out, at PRICES
STREAM_COST = (7 * 2.0 + 5 * 8.0) / 1e6  # an SseServer stream: 7 in, 5 out
GOOD = "def sort(xs): return sorted(xs)"

MakeCascade = Callable[..., Dispatcher]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("cascade"))


def write_cascade_set(directory: Path, models: dict[str, dict[str, Any]],
                      cascade: dict[str, Any], chain: list[str] | None = None,
                      **extra: Any) -> Path:
    """Every TINY_ROUTES route with `cascade` (and any `extra` keys) and `model` chain."""
    routes = write_set(directory, models, chain or [next(iter(models))])
    for f in routes.glob("*.yaml"):
        if f.name != "models.yaml":
            data = yaml.safe_load(f.read_text())
            data.update(cascade=cascade, **extra)
            f.write_text(yaml.safe_dump(data))
    return routes


@pytest.fixture
def make(tmp_path: Path, index: Path) -> MakeCascade:
    def build(models: dict[str, dict[str, Any]], cascade: dict[str, Any], *,
              chain: list[str] | None = None) -> Dispatcher:
        routes = write_cascade_set(tmp_path / "routes", models, cascade, chain)
        return Dispatcher(load(routes, index, classifier=False), trace=tmp_path / "trace.jsonl")
    return build


def trace_of(d: Dispatcher) -> list[dict[str, Any]]:
    return read_trace(d.trace.path)  # type: ignore[union-attr]


def servers(fault_server: MakeFaultServer, texts: dict[str, str | None]) -> dict[str, Any]:
    """A loopback OpenAI-speaking server per model key answering its text (None: 500s)."""
    return {k: (fault_server([500]) if t is None else fault_server([200], reply_text=t))
            for k, t in texts.items()}


def catalogue_of(started: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: entry("openai", s.base_url) for k, s in started.items()}


def steps(r: Response) -> list[tuple[str | None, str, str | None]]:
    assert r.cascade is not None
    return [(s.model_key, s.verdict, s.gate) for s in r.cascade.steps]


def test_an_accepted_cheap_answer_costs_one_call_and_its_confidence_is_stripped(
        make: MakeCascade, fault_server: MakeFaultServer) -> None:
    s = servers(fault_server, {"cheap": f"{GOOD}\nConfidence: 0.9", "strong": "strong"})
    d = make(catalogue_of(s), {"models": ["cheap", "strong"], "gates": [
        "non_empty", "not_refusal", {"self_confidence": {"min": 0.7}}]})
    r = d.dispatch(QUERY)
    assert (r.model_key, r.text) == ("cheap", GOOD)
    assert s["strong"].hits == 0 and s["cheap"].hits == 1
    assert steps(r) == [("cheap", "accepted", None)]
    assert r.cascade is not None and r.cascade.accepted and r.cascade.steps[0].confidence == 0.9
    assert r.cost_usd == pytest.approx(CALL_COST)
    system = s["cheap"].bodies[0]["messages"][0]["content"]
    assert "Confidence: X" in system and "Answer in one short sentence." in system
    [line] = trace_of(d)
    assert line["cascade"]["accepted"] and line["cascade"]["steps"][0]["verdict"] == "accepted"
    assert "sorted" not in json.dumps(line), "no answer text in the trace"


def test_a_rejected_answer_escalates_and_both_steps_are_paid_for(
        make: MakeCascade, fault_server: MakeFaultServer) -> None:
    s = servers(fault_server, {"cheap": "I'm sorry, but I can't help with that.",
                               "strong": GOOD})
    d = make(catalogue_of(s), {"models": ["cheap", "strong"],
                               "gates": ["non_empty", "not_refusal"]})
    r = d.dispatch(QUERY)
    assert (r.model_key, r.text) == ("strong", GOOD)
    assert steps(r) == [("cheap", "escalated", "not_refusal"), ("strong", "final", None)]
    assert r.cascade is not None and not r.cascade.accepted
    assert "refusal" in r.cascade.steps[0].why and "not gated" in r.cascade.reason
    assert r.cost_usd == pytest.approx(2 * CALL_COST)
    assert (r.usage.input_tokens, r.usage.output_tokens) == (6, 6)
    assert [(a.model_key, a.ok, a.picked) for a in r.attempts] == [
        ("cheap", True, False), ("strong", True, True)]
    [line] = trace_of(d)
    assert line["cost_usd"] == pytest.approx(2 * CALL_COST) and line["model_key"] == "strong"
    assert [st["cost_usd"] for st in line["cascade"]["steps"]] == [
        pytest.approx(CALL_COST), pytest.approx(CALL_COST)]
    assert "sorry" not in json.dumps(line["cascade"]).lower(), "reasons never quote the answer"


@pytest.mark.parametrize(("score", "accepted", "calls"), [("8", True, 2), ("3", False, 3)])
def test_the_judges_call_is_paid_for_and_marked(
        make: MakeCascade, fault_server: MakeFaultServer, score: str, accepted: bool,
        calls: int) -> None:
    s = servers(fault_server, {"cheap": GOOD, "strong": "strong answer", "judge": score})
    d = make(catalogue_of(s), {"models": ["cheap", "strong"],
                               "gates": [{"judge": {"model": "judge", "min_score": 0.7}}]})
    r = d.dispatch(QUERY)
    assert r.model_key == ("cheap" if accepted else "strong")
    assert r.cost_usd == pytest.approx(calls * CALL_COST), "answers and the judge, all paid"
    assert r.cascade is not None
    first = r.cascade.steps[0]
    assert first.judge_score == int(score) and first.gate_cost_usd == pytest.approx(CALL_COST)
    assert first.verdict == ("accepted" if accepted else "escalated")
    assert [a.model_key for a in r.attempts if a.judge] == ["judge"]
    body = s["judge"].bodies[0]
    assert body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == \
        [str(n) for n in range(1, 11)], "the judge can only answer with a score"
    assert QUERY in body["messages"][-1]["content"] and GOOD in body["messages"][-1]["content"]


def test_free_gates_run_before_the_judge_so_a_failed_one_costs_no_judge_call(
        make: MakeCascade, fault_server: MakeFaultServer) -> None:
    s = servers(fault_server, {"cheap": "not json at all", "strong": '{"ok": true}',
                               "judge": "9"})
    d = make(catalogue_of(s), {"models": ["cheap", "strong"],
                               "gates": [{"judge": {"model": "judge"}}, "json"]})
    r = d.dispatch(QUERY)
    assert steps(r) == [("cheap", "escalated", "json"), ("strong", "final", None)]
    assert s["judge"].hits == 0 and r.cost_usd == pytest.approx(2 * CALL_COST)


def test_a_failing_cheap_model_escalates_after_its_retries(
        make: MakeCascade, fault_server: MakeFaultServer) -> None:
    s = servers(fault_server, {"cheap": None, "strong": GOOD})
    d = make(catalogue_of(s), {"models": ["cheap", "strong"], "gates": ["non_empty"]})
    r = d.dispatch(QUERY)
    assert steps(r) == [(None, "escalated", None), ("strong", "final", None)]
    assert r.cascade is not None and "no model answered" in r.cascade.steps[0].why
    assert [(a.model_key, a.ok) for a in r.attempts] == [
        ("cheap", False), ("cheap", False), ("strong", True)]
    assert r.cost_usd == pytest.approx(CALL_COST), "a failed call costs nothing"


def test_a_step_may_be_a_failover_chain_and_the_last_step_falls_back_on_the_route_model(
        make: MakeCascade, fault_server: MakeFaultServer) -> None:
    s = servers(fault_server, {"cheap": None, "cheap2": "[]", "strong": None,
                               "route_model": GOOD})
    d = make(catalogue_of(s), {"models": [["cheap", "cheap2"], "strong"], "gates": ["json"]},
             chain=["route_model"])
    r = d.dispatch(QUERY)
    assert r.model_key == "cheap2" and r.cascade is not None and r.cascade.accepted
    d2 = make(catalogue_of(s), {"models": ["cheap", "strong"], "gates": ["json"]},
              chain=["route_model"])
    r2 = d2.dispatch(QUERY)
    assert r2.model_key == "route_model" and r2.cascade is not None
    assert r2.cascade.steps[-1].models == ("strong", "route_model")


def test_when_the_last_step_fails_the_gated_out_answer_is_returned_and_said_so(
        make: MakeCascade, fault_server: MakeFaultServer) -> None:
    s = servers(fault_server, {"cheap": "plain text, no JSON", "strong": None})
    d = make(catalogue_of(s), {"models": ["cheap", "strong"], "gates": ["json"]})
    r = d.dispatch(QUERY)
    assert (r.model_key, r.text) == ("cheap", "plain text, no JSON")
    assert steps(r) == [("cheap", "final", "json"), (None, "escalated", None)]
    assert r.cascade is not None and not r.cascade.accepted
    assert "the last step failed" in r.cascade.reason
    assert r.cost_usd == pytest.approx(CALL_COST)


def test_when_no_step_answers_one_error_lists_every_attempt(
        make: MakeCascade, fault_server: MakeFaultServer) -> None:
    s = servers(fault_server, {"cheap": None, "strong": None})
    d = make(catalogue_of(s), {"models": ["cheap", "strong"], "gates": ["non_empty"]})
    with pytest.raises(AllModelsFailedError) as info:
        d.dispatch(QUERY)
    assert [a.model_key for a in info.value.attempts] == ["cheap", "cheap", "strong", "strong"]
    [line] = trace_of(d)
    assert line["error"] == "all models failed" and len(line["attempts"]) == 4


def comparable(r: Response) -> tuple[Any, ...]:
    assert r.cascade is not None
    cut = [(s.model_key, s.verdict, s.gate, s.why, s.cost_usd, s.gate_cost_usd, s.confidence,
            s.judge_score) for s in r.cascade.steps]
    return (r.model_key, r.text, r.cost_usd, r.usage, cut, r.cascade.reason,
            [(a.model_key, a.ok, a.judge, a.picked) for a in r.attempts])


def test_sync_and_async_give_the_same_outcome(
        make: MakeCascade, fault_server: MakeFaultServer) -> None:
    s = servers(fault_server, {"cheap": f"{GOOD}\nConfidence: 0.5", "mid": f"{GOOD}\n(9/10)",
                               "strong": GOOD, "judge": "9"})
    d = make(catalogue_of(s), {"models": ["cheap", "mid", "strong"], "gates": [
        "not_refusal", {"self_confidence": {"min": 0.7}}, {"judge": {"model": "judge"}}]})
    sync = d.dispatch(QUERY)
    async_ = asyncio.run(d.adispatch(QUERY))
    assert comparable(sync) == comparable(async_)
    assert steps(sync) == [("cheap", "escalated", "self_confidence"),
                           ("mid", "escalated", "self_confidence"), ("strong", "final", None)]
    assert sync.cascade is not None and "missing" in sync.cascade.steps[1].why


@pytest.fixture
def sse() -> Any:
    server = SseServer(["ok"])
    yield server
    server.stop()


def test_a_stream_gets_an_accepted_cheap_answer_replayed_without_calling_the_last_step(
        make: MakeCascade, fault_server: MakeFaultServer, sse: SseServer) -> None:
    s = servers(fault_server, {"cheap": GOOD})
    d = make({**catalogue_of(s), "strong": entry("openai", sse.base_url)},
             {"models": ["cheap", "strong"], "gates": ["non_empty"]})
    with d.dispatch(QUERY, stream=True) as r:
        assert list(r) == [GOOD] and r.stream_state == "complete"
    assert sse.hits == 0 and r.cost_usd == pytest.approx(CALL_COST)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_whose_cheap_answer_is_rejected_streams_the_last_step_live(
        make: MakeCascade, fault_server: MakeFaultServer, sse: SseServer, mode: str) -> None:
    s = servers(fault_server, {"cheap": ""})
    d = make({**catalogue_of(s), "strong": entry("openai", sse.base_url)},
             {"models": ["cheap", "strong"], "gates": ["non_empty"]})
    if mode == "sync":
        r = d.dispatch(QUERY, stream=True)
        assert r.stream_state == "open"
        chunks = list(r)
    else:
        async def consume() -> tuple[Response, list[str]]:
            r = await d.adispatch(QUERY, stream=True)
            return r, [c async for c in r]
        r, chunks = asyncio.run(consume())
    assert "".join(chunks) == "Hello from the stream." and len(chunks) > 1
    assert r.stream_state == "complete" and r.cascade is not None and r.cascade.streamed
    assert r.cost_usd == pytest.approx(CALL_COST + STREAM_COST), "both steps are paid for"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (3 + 7, 3 + 5)
    [line] = trace_of(d)
    assert line["stream"]["state"] == "complete" and line["cost_usd"] == pytest.approx(
        CALL_COST + STREAM_COST)
    last = line["cascade"]["steps"][-1]
    assert (last["verdict"], last["output_tokens"]) == ("final", 5)
    assert last["cost_usd"] == pytest.approx(STREAM_COST)


def test_stream_last_sends_a_stream_straight_to_the_last_step(
        make: MakeCascade, fault_server: MakeFaultServer, sse: SseServer) -> None:
    s = servers(fault_server, {"cheap": GOOD})
    d = make({**catalogue_of(s), "strong": entry("openai", sse.base_url)},
             {"models": ["cheap", "strong"], "gates": ["non_empty"], "stream": "last"})
    with d.dispatch(QUERY, stream=True) as r:
        assert "".join(r) == "Hello from the stream."
    assert s["cheap"].hits == 0 and r.cascade is not None and len(r.cascade.steps) == 1
    assert d.dispatch(QUERY).model_key == "cheap", "non-streamed requests still climb"


def test_config_errors_name_the_file_the_route_and_the_field(tmp_path: Path) -> None:
    models = {"fast": entry("openai", "http://127.0.0.1:9"),
              "strong": entry("openai", "http://127.0.0.1:9")}
    cases: Sequence[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"models": ["fast", "missing"], "gates": ["json"]}, {},
         r"code.yaml: route 'code': field 'cascade.models': 'missing' is not in profile"),
        ({"models": ["fast", "strong"], "gates": ["json", {"judge": {"model": "nope"}}]}, {},
         r"field 'cascade.gates\[2\].judge.model': 'nope' is not in profile"),
        ({"models": ["fast", "strong"], "gates": [{"regex": "(x"}]}, {},
         r"route 'code': field 'cascade.gates\[1\].regex': invalid regular expression"),
        ({"models": ["fast", "strong"], "gates": ["json"]},
         {"parallel": {"models": ["fast", "strong"], "pick": "first"}},
         r"route 'code': field 'cascade': a route either asks models in parallel or "
         r"cascades"),
        ({"models": ["fast", "strong"], "gates": ["json"], "stream": "sometimes"}, {},
         r"field 'cascade.stream'"),
    ]
    for i, (cascade, extra, pattern) in enumerate(cases):
        routes = write_cascade_set(tmp_path / f"r{i}", models, cascade, **extra)
        with pytest.raises(ConfigError, match=pattern):
            load_routes(routes)


@pytest.mark.parametrize("gates", [
    [{"judge": {"model": "judge", "min_score": 0.1}}],
    ["non_empty", {"self_confidence": {"min": 0.5}}],
])
def test_the_real_local_model_climbs_consistently(
        tmp_path: Path, index: Path, llm_server: LLMServer, gates: list[Any]) -> None:
    """On llama-server (SmolLM2-135M): the judge, constrained by the server, always gives a
    score from 1 to 10 and is priced; a confidence the small model may or may not state is
    either parsed or reported missing; the totals are the steps' sums either way."""
    models = {"cheap": live_openai(llm_server), "strong": live_openai(llm_server),
              "judge": live_openai(llm_server)}
    routes = write_cascade_set(tmp_path / "routes", models,
                               {"models": ["cheap", "strong"], "gates": gates},
                               chain=["strong"])
    d = Dispatcher(load(routes, index, classifier=False))
    r = d.dispatch("hello, how are you", max_tokens=48)
    assert r.cascade is not None and r.text.strip()
    first = r.cascade.steps[0]
    assert first.ok and first.input_tokens > 0
    if "judge" in json.dumps(gates):
        assert first.judge_score is not None and 1 <= first.judge_score <= 10
        assert first.gate_cost_usd > 0, "the judge's call is priced"
        assert [a.judge for a in r.attempts].count(True) == 1
    elif first.confidence is None:
        assert (first.verdict, first.gate) == ("escalated", "self_confidence")
        assert "missing" in first.why or "garbled" in first.why
    else:
        assert first.verdict == ("accepted" if first.confidence >= 0.5 else "escalated")
    assert r.cost_usd == pytest.approx(sum(s.cost_usd + s.gate_cost_usd
                                           for s in r.cascade.steps))


def test_semroute_routes_shows_the_example_cascades(capsys: pytest.CaptureFixture[str]) -> None:
    from semroute.cli import main

    assert main(["routes", "--routes", str(Path(__file__).parent.parent / "routes")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("simple_qa"))
    assert "(cascade: fast|fast_backup -> balanced|balanced_backup; gates non_empty, " \
           "not_refusal, self_confidence)" in line


def test_an_anthropic_judge_is_constrained_by_a_forced_tool(
        make: MakeCascade, fault_server: MakeFaultServer) -> None:
    """The fault server's Anthropic side answers a forced tool with its first label, "1"."""
    s = servers(fault_server, {"cheap": GOOD, "strong": "strong answer"})
    judge = fault_server([200])
    d = make({**catalogue_of(s), "judge": entry("anthropic", judge.base_url)},
             {"models": ["cheap", "strong"], "gates": [{"judge": {"model": "judge"}}]})
    r = d.dispatch(QUERY)
    assert steps(r) == [("cheap", "escalated", "judge"), ("strong", "final", None)]
    assert r.cascade is not None and r.cascade.steps[0].judge_score == 1
    assert "scored 1/10" in r.cascade.steps[0].why
    tool = judge.bodies[0]["tools"][0]
    assert tool["input_schema"]["properties"]["label"]["enum"] == [str(n) for n in range(1, 11)]
    assert r.cost_usd == pytest.approx(3 * CALL_COST)


def test_budgets_count_every_step_and_a_cascade_that_cannot_fit_serves_its_plain_chain(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    """The whole climb (both steps) is counted against a period cap; with a `max_cost_usd`
    below the climb's worst case, the route's own `model` chain serves instead."""
    from semroute.policies import Budgets, estimate_input_tokens
    from semroute.state import SqliteStore

    s = servers(fault_server, {"cheap": "I'm sorry, but I can't help with that.",
                               "strong": GOOD})
    routes = write_cascade_set(tmp_path / "routes", catalogue_of(s),
                               {"models": ["cheap", "strong"], "gates": ["not_refusal"]},
                               chain=["cheap"])
    models_yaml = routes / "models.yaml"
    cat = yaml.safe_load(models_yaml.read_text())
    cat["router"]["budgets"] = {"store": str(tmp_path / "state.db"), "caps": [
        {"name": "daily", "scope": "route", "period": "day", "limit_usd": 1.0,
         "policy": "refuse"}]}
    models_yaml.write_text(yaml.safe_dump(cat))
    router = load(routes, index, classifier=False)
    settings = router.routes.settings.budgets
    d = Dispatcher(router, budgets=Budgets(settings, SqliteStore(settings.store)))
    r = d.dispatch(QUERY, max_tokens=8)
    assert r.model_key == "strong" and r.cost_usd == pytest.approx(2 * CALL_COST)
    assert d.state.budgets.spent("daily", r.route) == pytest.approx(2 * CALL_COST)
    tokens = estimate_input_tokens([{"role": "user", "content": QUERY}],
                                   "Answer in one short sentence.")
    one_call = (tokens * 2.0 + 8 * 8.0) / 1e6  # the bound of one step; the climb's is two
    r2 = d.dispatch(QUERY, max_tokens=8, max_cost_usd=1.5 * one_call)
    assert r2.cascade is None, "a cascade that cannot fit the request's cap must not climb"
    assert r2.model_key == "cheap" and r2.text.startswith("I'm sorry")
