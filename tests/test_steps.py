"""Agent steps: `dispatch(..., step="planning")` is served by the step's model chain from
models.yaml `steps:`, skipping semantic routing (method "step", no encoder run); no step routes
as before; unknown steps and bad step maps are named; budgets and traces cover steps."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

import semroute
from semroute.config import load_routes
from semroute.dispatching import Dispatcher
from semroute.errors import BudgetExceededError, ConfigError, UnknownStepError
from semroute.routing import Router
from semroute.telemetry import read_trace
from tests.conftest import TINY_ROUTES
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import catalogue, entry, live_anthropic, live_openai, shared_index
from tests.support.llm_server import FaultServer, LLMServer

STEPS = {"planning": ["strong", "backup"], "tool_call": "small", "summarise": ["small"]}
EXAMPLE = Path(__file__).resolve().parent.parent / "routes"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("steps"))


def write(directory: Path, models: dict[str, Any], steps: Any = None, **router: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for stem, spec in TINY_ROUTES.items():
        (directory / f"{stem}.yaml").write_text(yaml.safe_dump({**spec, "model": "small"}))
    cat = catalogue(models, attempts_per_model=1, **router)
    cat["steps"] = STEPS if steps is None else steps
    (directory / "models.yaml").write_text(yaml.safe_dump(cat))
    return directory


def three(srv: FaultServer, **extra: Any) -> dict[str, Any]:
    return {k: entry("openai", srv.base_url, model=f"{k}-model", **extra)
            for k in ("small", "strong", "backup")}


def test_a_step_skips_routing_and_is_served_by_its_chain(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    router = Router.load(write(tmp_path / "r", three(srv)), index, classifier=False)
    d = Dispatcher(router, trace=tmp_path / "t.jsonl")
    cache = router.matcher.cache
    r = d.dispatch("hi there", step="planning", max_tokens=8)
    assert (r.route, r.model_key, srv.bodies[-1]["model"]) == ("step:planning", "strong",
                                                                "strong-model")
    dec = r.decision
    assert (dec.route, dec.method, dec.score, dec.margin, dec.candidates) == \
        ("step:planning", "step", 1.0, 1.0, ())
    assert list(dec.timings_ms) == ["step"], "no rule, encoder or search ran"
    assert "agent step 'planning'" in dec.reason and "strong, backup" in dec.reason
    assert (cache.hits, cache.misses, len(cache)) == (0, 0, 0), "the encoder never ran"
    assert d.dispatch("hi there", step="tool_call", max_tokens=8).model_key == "small"
    routed = d.dispatch("hi there", max_tokens=8)
    assert (routed.route, routed.decision.method) == ("greet", "index"), "no step: routing"
    trace = read_trace(tmp_path / "t.jsonl")
    assert [(t["route"], t["method"]) for t in trace] == \
        [("step:planning", "step"), ("step:tool_call", "step"), ("greet", "index")]


def test_a_step_fails_over_along_its_list(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    down, up = fault_server([503]), fault_server([200])
    models = {**three(up), "strong": entry("openai", down.base_url, model="strong-model")}
    d = Dispatcher(Router.load(write(tmp_path / "r", models), index, classifier=False))
    r = d.dispatch("plan my week", step="planning", max_tokens=8)
    assert [(a.model_key, a.ok) for a in r.attempts] == [("strong", False), ("backup", True)]


def test_an_unknown_step_lists_the_known_ones(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    d = Dispatcher(Router.load(write(tmp_path / "r", three(srv)), index, classifier=False))
    with pytest.raises(UnknownStepError) as err:
        d.dispatch("hi", step="plannnig", max_tokens=8)
    assert "unknown agent step 'plannnig'" in str(err.value)
    assert "planning, summarise, tool_call" in str(err.value) and "models.yaml" in str(err.value)
    assert isinstance(err.value, ValueError) and srv.hits == 0


def test_bad_step_maps_are_named_with_file_and_field(tmp_path: Path,
                                                     fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    routes = write(tmp_path / "r", three(srv), steps={"planning": ["strong", "nope"],
                                                      "empty": [], "bad name": "small"})
    with pytest.raises(ConfigError) as err:
        load_routes(routes)
    text = str(err.value)
    assert f"{routes / 'models.yaml'}: field 'steps'" in text
    assert "step 'empty' must name at least one model key" in text
    write(routes, three(srv), steps={"planning": ["strong", "nope"]})
    with pytest.raises(ConfigError) as err:
        load_routes(routes)
    assert f"{routes / 'models.yaml'}: field 'steps.planning': 'nope' is not in profile " \
        "'test'" in str(err.value)


def test_budgets_apply_to_steps(tmp_path: Path, index: Path,
                                fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    models = three(srv, input_price=1e6, output_price=1e6)  # $1 per token; 6 tokens a call
    models["small"].update(input_price=1e5, output_price=1e5)  # $0.1 per token
    caps = [{"name": "planning-hourly", "scope": "route", "match": "step:planning",
             "period": "hour", "limit_usd": 30}]
    routes = write(tmp_path / "r", models,
                   budgets={"store": str(tmp_path / "state.db"), "caps": caps})
    d = Dispatcher(Router.load(routes, index, classifier=False))
    r = d.dispatch("hi", step="planning", max_tokens=8)
    assert r.budget is not None and r.budget["caps"][0]["name"] == "planning-hourly"
    cheap = d.dispatch("hi", step="summarise", max_tokens=8)
    assert cheap.budget is None, "the cap matches the planning step only"
    for _ in range(2):  # bound $16 (8 prompt + 8 answer tokens), cost $6: 3 fit in $30
        d.dispatch("hi", step="planning", max_tokens=8)
    with pytest.raises(BudgetExceededError, match="cap 'planning-hourly'") as err:
        d.dispatch("hi", step="planning", max_tokens=8)
    assert err.value.spent_usd == 18.0 and "route 'step:planning'" in str(err.value)
    small = d.dispatch("hi", step="planning", max_tokens=8, max_cost_usd=7.0)
    assert small.budget is not None and small.budget["chain"] == ["small"], \
        "max_cost_usd on a step: the strongest model that fits (and the cap then fits it)"


def test_steps_on_the_local_llm_sync_async_and_streamed(
        tmp_path: Path, index: Path, llm_server: LLMServer) -> None:
    models = {"small": live_openai(llm_server), "strong": live_anthropic(llm_server),
              "backup": live_openai(llm_server)}
    d = Dispatcher(Router.load(write(tmp_path / "r", models), index, classifier=False))
    r = d.dispatch("list three steps to boil an egg", step="planning", max_tokens=16)
    assert r.text and r.provider == "anthropic" and r.cost_usd > 0

    async def run() -> tuple[str, str]:
        a = await d.adispatch("summarise: eggs boil in ten minutes", step="summarise",
                              max_tokens=16)
        chunks = []
        async with await d.adispatch("which tool?", step="tool_call", max_tokens=16,
                                     stream=True) as s:
            async for c in s:
                chunks.append(c)
        assert s.decision.method == "step" and s.stream_state == "complete"
        return a.route, "".join(chunks)

    route, text = asyncio.run(run())
    assert route == "step:summarise" and text


def test_the_example_catalogue_maps_the_usual_agent_steps() -> None:
    routes = load_routes(EXAMPLE)
    assert {k: v[0] for k, v in routes.steps.items()} == {
        "planning": "powerful", "tool_call": "fast", "classify_result": "fast",
        "summarise": "balanced", "synthesis": "powerful"}
    assert semroute.UnknownStepError is UnknownStepError


def test_the_cli_takes_a_step_and_a_cost_cap(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    from semroute.cli.app import main

    srv = fault_server([200])
    models = three(srv, input_price=1e6, output_price=1e6)
    routes = write(tmp_path / "r", models)
    base = ["dispatch", "--routes", str(routes), "--index", str(index), "--no-trace",
            "--max-tokens", "8"]
    assert main([*base, "--step", "tool_call", "plan a trip"]) == 0
    out = capsys.readouterr().out
    assert "step:tool_call" in out and "step" in out and "small=openai:small-model" in out
    assert main([*base, "--step", "planning", "--max-cost-usd", "0.5", "plan a trip"]) == 2
    err = capsys.readouterr().err
    assert "semroute dispatch: error: request" in err and "max_cost_usd $0.5" in err
    assert main([*base, "--step", "nope", "plan a trip"]) == 2
    assert "unknown agent step 'nope'" in capsys.readouterr().err
