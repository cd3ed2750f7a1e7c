"""Parallel-then-pick: a route may ask several models at once and return the best answer.

- the models are asked concurrently (sync: worker threads, async: gather), one plan for both;
- a failing model does not sink the others; fewer than `min_answers` answers raise
  AllModelsFailedError listing every attempt;
- the answer is picked by `first`, `longest`, a judge model (output constrained to the
  answers' numbers; an invalid or failed judge falls back to the first answer) or a picker
  registered in code (never imported from the route file);
- every call is paid for and traced: cost_usd sums them, attempts list them (the picked one
  marked), Response.parallel and the trace's `parallel` say who answered and why one won;
- streaming a parallel route uses its `model` chain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from semroute.config import load_routes
from semroute.dispatching import Dispatcher
from semroute.errors import AllModelsFailedError, ConfigError
from semroute.providers import Parallel, Plan, Sleep, run_async, run_sync
from semroute.telemetry import read_trace
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import entry, live_openai, load, shared_index, write_set
from tests.support.llm_server import OK_TEXT, LLMServer

QUERY = "write a python function to sort a list"
CALL_COST = (3 * 2.0 + 3 * 8.0) / 1e6  # a fault-server call: 3 tokens in, 3 out, at PRICES

MakeParallel = Callable[..., Dispatcher]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("parallel"))


def write_parallel_set(directory: Path, models: dict[str, dict[str, Any]],
                       parallel: dict[str, Any], chain: list[str] | None = None) -> Path:
    """Every TINY_ROUTES route with `parallel` and the `model` chain `chain`."""
    routes = write_set(directory, models, chain or [next(iter(models))])
    for f in routes.glob("*.yaml"):
        if f.name != "models.yaml":
            data = yaml.safe_load(f.read_text())
            data["parallel"] = parallel
            f.write_text(yaml.safe_dump(data))
    return routes


@pytest.fixture
def make(tmp_path: Path, index: Path) -> MakeParallel:
    def build(models: dict[str, dict[str, Any]], parallel: dict[str, Any], *,
              chain: list[str] | None = None, **kwargs: Any) -> Dispatcher:
        routes = write_parallel_set(tmp_path / "routes", models, parallel, chain)
        return Dispatcher(load(routes, index, classifier=False), trace=tmp_path / "trace.jsonl",
                          **kwargs)
    return build


def trace_of(d: Dispatcher) -> list[dict[str, Any]]:
    return read_trace(d.trace.path)  # type: ignore[union-attr]


def answering(fault_server: MakeFaultServer, texts: Sequence[str | None],
              **kw: Any) -> dict[str, dict[str, Any]]:
    """One OpenAI-speaking model per text, keyed m0, m1, ...; None: a server answering 500."""
    return {f"m{i}": entry("openai", (fault_server([500], **kw) if t is None else
                                      fault_server([200], reply_text=t, **kw)).base_url)
            for i, t in enumerate(texts)}


def test_one_failing_model_does_not_sink_the_others_and_every_call_is_paid_for(
        make: MakeParallel, fault_server: MakeFaultServer) -> None:
    models = answering(fault_server, [None, "a longer answer from m1", "short m2"])
    d = make(models, {"models": ["m0", "m1", "m2"], "pick": "longest"})
    r = d.dispatch(QUERY)
    assert (r.model_key, r.text) == ("m1", "a longer answer from m1")
    p = r.parallel
    assert p is not None and p.models == ("m0", "m1", "m2") and p.answered == ("m1", "m2")
    assert p.picked == "m1" and "longest" in p.reason
    assert r.cost_usd == pytest.approx(2 * CALL_COST), "both answers are paid for"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (6, 6)
    assert [(a.model_key, a.ok) for a in r.attempts] == [
        ("m0", False), ("m0", False), ("m1", True), ("m2", True)], "m0 was retried, then given up"
    assert [a.model_key for a in r.attempts if a.picked] == ["m1"]
    [line] = trace_of(d)
    assert line["cost_usd"] == pytest.approx(r.cost_usd) and line["model_key"] == "m1"
    tp = line["parallel"]
    assert tp["picked"] == "m1" and tp["answered"] == ["m1", "m2"]
    calls = {c["model_key"]: c for c in tp["calls"]}
    assert calls["m0"]["ok"] is False and "500" in calls["m0"]["error"]
    assert calls["m1"]["cost_usd"] == pytest.approx(CALL_COST) and calls["m2"]["latency_ms"] > 0
    assert [a["picked"] for a in line["attempts"]] == [False, False, True, False]


def test_when_too_few_answer_one_error_lists_every_attempt(
        make: MakeParallel, fault_server: MakeFaultServer, refused_url: str) -> None:
    flaky, denied, ok = fault_server([500]), fault_server([401]), fault_server([200])
    d = make({"flaky": entry("openai", flaky.base_url),
              "denied": entry("anthropic", denied.base_url),
              "dead": entry("openai", refused_url), "ok": entry("openai", ok.base_url)},
             {"models": ["flaky", "denied", "dead"], "pick": "first"})
    with pytest.raises(AllModelsFailedError) as info:
        d.dispatch(QUERY)
    err = info.value
    assert sorted((a.model_key, a.try_number, a.status) for a in err.attempts) == [
        ("dead", 1, None), ("dead", 2, None), ("denied", 1, 401), ("flaky", 1, 500),
        ("flaky", 2, 500)]
    assert not any(a.ok for a in err.attempts) and ok.hits == 0
    assert "min_answers" in "".join(getattr(err, "__notes__", []))
    [line] = trace_of(d)
    assert line["error"] == "all models failed" and len(line["attempts"]) == 5
    assert line["request_id"] == err.request_id


def test_min_answers_demands_enough_answers(
        make: MakeParallel, fault_server: MakeFaultServer) -> None:
    models = answering(fault_server, [None, "only one answers", None])
    d = make(models, {"models": ["m0", "m1", "m2"], "pick": "first", "min_answers": 2})
    with pytest.raises(AllModelsFailedError) as info:
        d.dispatch(QUERY)
    assert [a.model_key for a in info.value.attempts if a.ok] == ["m1"]


def test_a_picker_registered_in_code_chooses(
        make: MakeParallel, fault_server: MakeFaultServer) -> None:
    models = answering(fault_server, ["a long winded answer", "terse", "medium answer"])
    seen: list[tuple[str, list[str]]] = []

    def shortest(query: str, answers: Sequence[str]) -> list[float]:
        seen.append((query, list(answers)))
        return [-len(a) for a in answers]

    d = make(models, {"models": ["m0", "m1", "m2"], "pick": "shortest"},
             pickers={"shortest": shortest, "third": lambda q, a: 2})
    r = d.dispatch(QUERY)
    assert (r.model_key, r.text) == ("m1", "terse")
    assert seen == [(QUERY, ["a long winded answer", "terse", "medium answer"])]
    assert r.parallel is not None and r.parallel.scores == (-20.0, -5.0, -13.0)
    assert "picker 'shortest'" in r.parallel.reason
    assert trace_of(d)[0]["parallel"]["scores"] == [-20.0, -5.0, -13.0]
    assert d.dispatch(QUERY).model_key == "m1", "the same answers, the same pick"


@pytest.mark.parametrize("picker", [lambda q, a: np.int64(1),
                                    lambda q, a: np.array([0.1, 0.9]), lambda q, a: (0, 1)])
def test_a_picker_may_answer_with_numpy_values_or_any_sequence_of_scores(
        make: MakeParallel, fault_server: MakeFaultServer, picker: Callable[..., Any]) -> None:
    models = answering(fault_server, ["first", "second"])
    d = make(models, {"models": ["m0", "m1"], "pick": "mine"}, pickers={"mine": picker})
    assert d.dispatch(QUERY).text == "second"


@pytest.mark.parametrize("picker", [lambda q, a: 7, lambda q, a: [1.0], lambda q, a: 1 / 0])
def test_a_picker_that_fails_or_answers_nonsense_falls_back_to_the_first_answer(
        make: MakeParallel, fault_server: MakeFaultServer, picker: Callable[..., Any]) -> None:
    models = answering(fault_server, ["first", "second"])
    d = make(models, {"models": ["m0", "m1"], "pick": "mine"}, pickers={"mine": picker})
    r = d.dispatch(QUERY)
    assert r.model_key == "m0" and r.parallel is not None
    assert "fell back to the first answer" in r.parallel.reason


def test_an_unregistered_picker_is_a_clear_error_naming_the_route(
        make: MakeParallel, fault_server: MakeFaultServer) -> None:
    models = answering(fault_server, ["a", "b"])
    with pytest.raises(ConfigError, match=r"route '.*': field 'parallel.pick': no picker "
                                          r"named 'mine'"):
        make(models, {"models": ["m0", "m1"], "pick": "mine"}, pickers={"other": len})
    d = make(models, {"models": ["m0", "m1"], "pick": "mine"})  # no pickers: checked on use
    with pytest.raises(ConfigError, match="no picker named 'mine'"):
        d.dispatch(QUERY)


def test_the_judge_sees_numbered_answers_in_a_seeded_shuffle_and_its_number_wins(
        make: MakeParallel, fault_server: MakeFaultServer) -> None:
    """The fault server as judge always answers the first allowed label, "1": the winner is
    whichever answer the seeded shuffle showed first, and the same query shows the same order."""
    judge = fault_server([200])
    models = {**answering(fault_server, ["alpha", "beta", "gamma"]),
              "judge": entry("openai", judge.base_url)}
    d = make(models, {"models": ["m0", "m1", "m2"], "pick": "judge", "judge_model": "judge"})
    r = d.dispatch(QUERY)
    p = r.parallel
    assert p is not None and p.judge_answer == "1" and p.picked in {"m0", "m1", "m2"}
    body = judge.bodies[0]
    prompt = body["messages"][-1]["content"]
    assert QUERY in prompt
    shown = [w for w in ("alpha", "beta", "gamma") if f"Answer 1:\n{w}" in prompt]
    assert shown == [r.text], "the answer shown as number 1 is the one returned"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == \
        ["1", "2", "3"], "the judge can only answer with a number"
    assert r.cost_usd == pytest.approx(4 * CALL_COST), "three answers and the judge"
    assert [a.model_key for a in r.attempts if a.judge] == ["judge"]
    assert [c.role for c in p.calls] == ["answer", "answer", "answer", "judge"]
    assert d.dispatch(QUERY).model_key == r.model_key, "the shuffle is seeded by the query"


@pytest.mark.parametrize("judge_statuses,reply", [([401], None), ([200], "the best is B")])
def test_a_failed_or_invalid_judge_falls_back_to_the_first_answer(
        make: MakeParallel, fault_server: MakeFaultServer, judge_statuses: list[int],
        reply: str | None) -> None:
    judge = fault_server(judge_statuses, reply_text=reply)
    models = {**answering(fault_server, ["alpha", "beta"]),
              "judge": entry("openai", judge.base_url)}
    d = make(models, {"models": ["m0", "m1"], "pick": "judge", "judge_model": "judge"})
    r = d.dispatch(QUERY)
    assert r.model_key == "m0" and r.text == "alpha"
    assert r.parallel is not None and r.parallel.judge_answer is None
    assert "fell back to the first answer" in r.parallel.reason
    assert trace_of(d)[0]["parallel"]["reason"] == r.parallel.reason


def test_the_judge_path_against_the_real_model(
        make: MakeParallel, fault_server: MakeFaultServer, llm_server: LLMServer) -> None:
    models = {**answering(fault_server, ["Use sorted(xs).", "def f(xs): return sorted(xs)",
                                         "Lists cannot be sorted."]),
              "judge": live_openai(llm_server)}
    d = make(models, {"models": ["m0", "m1", "m2"], "pick": "judge", "judge_model": "judge"})
    r = d.dispatch(QUERY)
    p = r.parallel
    assert p is not None and p.picked in p.answered and r.model_key == p.picked
    assert r.text in {"Use sorted(xs).", "def f(xs): return sorted(xs)", "Lists cannot be sorted."}
    assert p.judge_answer in {"1", "2", "3", None}, p.reason
    print(f"\njudge: {p.reason}")
    judge_call = p.calls[-1]
    assert judge_call.role == "judge" and judge_call.ok and judge_call.cost_usd > 0
    assert r.cost_usd == pytest.approx(3 * CALL_COST + judge_call.cost_usd)
    [line] = trace_of(d)
    assert line["parallel"]["picked"] == p.picked and line["parallel"]["calls"][-1]["role"] == \
        "judge"


def test_async_dispatch_asks_in_parallel_the_same_way(
        make: MakeParallel, fault_server: MakeFaultServer) -> None:
    models = answering(fault_server, [None, "a longer answer from m1", "short m2"])
    d = make(models, {"models": ["m0", "m1", "m2"], "pick": "longest"})
    r = asyncio.run(d.adispatch(QUERY))
    assert r.model_key == "m1" and r.parallel is not None and r.parallel.answered == ("m1", "m2")
    assert r.cost_usd == pytest.approx(2 * CALL_COST)
    assert [a.model_key for a in r.attempts if a.picked] == ["m1"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_models_are_really_asked_at_once(
        make: MakeParallel, fault_server: MakeFaultServer, mode: str) -> None:
    models = answering(fault_server, ["a", "bb", "ccc"], delay_s=0.5)
    d = make(models, {"models": ["m0", "m1", "m2"], "pick": "longest"})
    t0 = time.perf_counter()
    r = d.dispatch(QUERY) if mode == "sync" else asyncio.run(d.adispatch(QUERY))
    took = time.perf_counter() - t0
    assert r.text == "ccc" and r.parallel is not None and len(r.parallel.answered) == 3
    assert took < 1.2, f"three 0.5 s answers took {took:.2f} s: not concurrent"
    assert all(c.latency_ms >= 450 for c in r.parallel.calls)


def test_streaming_a_parallel_route_uses_its_model_chain(
        make: MakeParallel, fault_server: MakeFaultServer, llm_server: LLMServer) -> None:
    models = {**answering(fault_server, ["a", "b"]), "live": live_openai(llm_server)}
    d = make(models, {"models": ["m0", "m1"], "pick": "first"}, chain=["live"])
    with d.dispatch(QUERY, max_tokens=8, stream=True) as s:
        text = "".join(s)
    assert s.model_key == "live" and s.parallel is None and text == s.text
    assert OK_TEXT not in text


# ---------------------------------------------------------------- the Parallel effect

def napping(seconds: float, value: int) -> Plan[int]:
    yield Sleep(seconds)
    if value < 0:
        raise ValueError(f"bad value {value}")
    return value


def fan_out() -> Plan[list[object]]:
    outcomes: list[object] = yield Parallel((napping(0.3, 1), napping(0.3, -1), napping(0.3, 3)))
    return outcomes


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_parallel_effect_runs_plans_at_once_and_returns_failures_as_outcomes(
        mode: str) -> None:
    t0 = time.perf_counter()
    got = run_sync(fan_out()) if mode == "sync" else asyncio.run(run_async(fan_out()))
    assert time.perf_counter() - t0 < 0.8, "three 0.3 s plans ran one after another"
    one, bad, three = got
    assert (one, three) == (1, 3)
    assert isinstance(bad, ValueError) and "bad value -1" in str(bad)


# ---------------------------------------------------------------- route-file validation

def problems_for(tmp_path: Path, parallel: Any,
                 models: tuple[str, ...] = ("a", "b", "j")) -> str:
    cat = {k: {"provider": "openai", "model": k} for k in models}
    routes = write_parallel_set(tmp_path / "routes", cat, parallel)
    with pytest.raises(ConfigError) as info:
        load_routes(routes)
    return str(info.value)


@pytest.mark.parametrize("parallel,field,why", [
    ({"models": ["a", "zz"], "pick": "first"}, "parallel.models", "'zz' is not in profile"),
    ({"models": ["a", "b"], "judge_model": "zz"}, "parallel.judge_model",
     "'zz' is not in profile"),
    ({"models": ["a", "b"]}, "parallel", "pick: judge needs judge_model"),
    ({"models": ["a", "b"], "pick": "longest", "judge_model": "j"}, "parallel.judge_model",
     "only used with pick: judge"),
    ({"models": ["a"], "pick": "first"}, "parallel.models", "at least 2"),
    ({"models": ["a", "a"], "pick": "first"}, "parallel.models", "repeated: a"),
    ({"models": ["a", "b"], "pick": "first", "min_answers": 3}, "parallel.min_answers",
     "3 answers cannot come from 2 models"),
    ({"models": ["a", "b"], "pick": "my.module:fn()"}, "parallel.pick", "match pattern"),
    ({"models": ["a", "b"], "pick": "first", "judge": "j"}, "parallel.judge", "unknown key"),
])
def test_parallel_errors_name_file_route_and_field(tmp_path: Path, parallel: dict[str, Any],
                                                   field: str, why: str) -> None:
    text = problems_for(tmp_path, parallel)
    assert f"field '{field}'" in text and why in text, text
    assert "route '" in text and ".yaml" in text


def test_a_valid_parallel_block_loads(tmp_path: Path) -> None:
    cat = {k: {"provider": "openai", "model": k} for k in ("a", "b", "j")}
    routes = load_routes(write_parallel_set(
        tmp_path / "routes", cat, {"models": ["a", "b"], "judge_model": "j", "min_answers": 2}))
    p = routes.routes[0].parallel
    assert p is not None and (p.models, p.pick, p.judge_model, p.min_answers) == (
        ["a", "b"], "judge", "j", 2)
