"""Shadow evaluation (`router.shadow`): a sampled share of answered requests is also sent to a
reference model off the caller's path, and a judge compares the two answers twice, positions
swapped:

- a judge that always says "A" (pure position bias) yields a tie; a consistent judge that
  prefers the reference's answer yields 0, one that prefers the routed answer 1;
- the verdict, its cost (reference + judge calls) and a `"kind": "shadow"` trace line are
  written; nothing of it enters the caller's Response, attempts or cost;
- sampling is deterministic per request id and per route; the reference's own answers are
  not shadowed; streams are shadowed once complete;
- a full queue drops and counts without slowing the caller; a failing reference or store
  costs the caller nothing;
- bad settings are named with file and field.
Loopback scripted models throughout (tests/support/scripted_model.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.config import load_routes
from semroute.dispatching import Dispatcher
from semroute.dispatching.shadowing import combine, sampled
from semroute.errors import ConfigError
from semroute.outcomes import OutcomeStore
from semroute.telemetry import read_trace
from tests.dispatch_support import SseServer, entry, load, shared_index, write_set
from tests.support.scripted_model import ScriptedModel, always, prefers

QUERY = "write a python function to sort a list"
CALL_COST = (3 * 2.0 + 3 * 8.0) / 1e6


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("shadow"))


@pytest.fixture
def models() -> Iterator[Callable[..., ScriptedModel]]:
    started: list[ScriptedModel] = []

    def make(**kw: Any) -> ScriptedModel:
        started.append(ScriptedModel(**kw).start())
        return started[-1]

    yield make
    for m in started:
        m.stop()


def shadowed(tmp_path: Path, index: Path, catalogue: dict[str, dict[str, Any]],
             **shadow: Any) -> Dispatcher:
    routes = write_set(tmp_path / "routes", catalogue, ["fast"],
                       shadow={"rate": 1.0, "reference": "frontier", **shadow})
    return Dispatcher(load(routes, index, classifier=False), trace=tmp_path / "trace.jsonl")


def verdicts(d: Dispatcher) -> list[Any]:
    d.shadow.worker.join()
    assert d.recorder is not None
    with OutcomeStore(d.recorder.path) as store:
        return store.shadow()


def test_a_judge_that_always_says_A_yields_a_tie(tmp_path: Path, index: Path,
                                                  models: Callable[..., ScriptedModel]) -> None:
    fast, frontier = models(answer="routed"), models(answer="reference",
                                                     judge=always("A"))
    d = shadowed(tmp_path, index, {"fast": fast.entry(), "frontier": frontier.entry()})
    r = d.dispatch(QUERY)
    (v,) = verdicts(d)
    assert (v.request_id, v.route, v.model, v.reference, v.judge) == (
        r.request_id, "code", "fast", "frontier", "frontier")
    assert v.verdicts == ("A", "A") and v.score == 0.5
    assert v.cost_usd == pytest.approx(3 * CALL_COST), "the reference and two judge calls"
    prompts = [b["messages"][-1]["content"] for b in frontier.judged()]
    assert sorted(p.index("routed") < p.index("reference") for p in prompts) == [False, True], \
        "each answer was shown first once"
    assert r.cost_usd == pytest.approx(CALL_COST) and len(r.attempts) == 1, \
        "the caller's response holds none of it"
    (line,) = [x for x in read_trace(tmp_path / "trace.jsonl") if x.get("kind") == "shadow"]
    assert line["score"] == 0.5 and line["verdicts"] == ["A", "A"] and line["error"] is None
    assert len(line["attempts"]) == 3 and "query" not in line
    assert d.shadow.counters() == {"sampled": 1, "written": 1, "dropped": 0, "failed": 0,
                                   "skipped": 0, "over_budget": 0}


@pytest.mark.parametrize(("marker", "score", "labels"), [
    ("reference", 0.0, ("B", "A")),  # the reference's answer is better in both orders
    ("routed", 1.0, ("A", "B")),
])
def test_a_consistent_judge_scores_the_routed_answer(
        tmp_path: Path, index: Path, models: Callable[..., ScriptedModel], marker: str,
        score: float, labels: tuple[str, str]) -> None:
    fast = models(answer="the routed answer")
    frontier = models(answer="the reference answer")
    judge = models(judge=prefers(marker))
    d = shadowed(tmp_path, index, {"fast": fast.entry(), "frontier": frontier.entry(),
                                   "judge": judge.entry()}, judge="judge")
    d.dispatch(QUERY)
    (v,) = verdicts(d)
    assert (v.judge, v.score, v.verdicts) == ("judge", score, labels)
    assert frontier.judged() == [] and len(judge.judged()) == 2


def test_combining_orders() -> None:
    assert combine(["A", "B"]) == 1.0 and combine(["B", "A"]) == 0.0
    assert combine(["A", "A"]) == combine(["B", "B"]) == combine(["tie", "tie"]) == 0.5
    assert combine(["A", "tie"]) == 0.75


def test_sampling_is_deterministic_per_request_id_and_route(
        tmp_path: Path, index: Path, models: Callable[..., ScriptedModel]) -> None:
    ids = [f"{i:032x}" for i in range(4000)]
    share = sum(sampled(i, 0.25) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert [sampled(i, 0.25) for i in ids] == [sampled(i, 0.25) for i in ids]
    assert not any(sampled(i, 0.0) for i in ids) and all(sampled(i, 1.0) for i in ids)
    fast, frontier = models(), models(judge=always("tie"))
    d = shadowed(tmp_path, index, {"fast": fast.entry(), "frontier": frontier.entry()},
                 rate=0.0, routes={"greet": 1.0})
    d.dispatch(QUERY)  # code: rate 0
    greet = d.dispatch("hello, how are you")
    assert [v.request_id for v in verdicts(d)] == [greet.request_id]


def test_the_reference_answering_itself_is_not_shadowed(
        tmp_path: Path, index: Path, models: Callable[..., ScriptedModel]) -> None:
    frontier = models(judge=always("A"))
    routes = write_set(tmp_path / "routes", {"frontier": frontier.entry()}, ["frontier"],
                       shadow={"rate": 1.0, "reference": "frontier"})
    d = Dispatcher(load(routes, index, classifier=False))
    d.dispatch(QUERY)
    assert d.shadow.sampled == 0 and len(frontier.requests) == 1


def test_a_stream_is_shadowed_once_complete(tmp_path: Path, index: Path,
                                            models: Callable[..., ScriptedModel]) -> None:
    sse, frontier = SseServer(["ok"]), models(answer="reference", judge=always("B"))
    try:
        d = shadowed(tmp_path, index, {"fast": entry("openai", sse.base_url),
                                       "frontier": frontier.entry()})
        r = d.dispatch(QUERY, stream=True)
        time.sleep(0.2)
        assert d.shadow.sampled == 0, "nothing before the stream ended"
        assert "".join(r) == "Hello from the stream."
        (v,) = verdicts(d)
        assert v.score == 0.5 and v.verdicts == ("B", "B")
        prompt = frontier.judged()[0]["messages"][-1]["content"]
        assert "Hello from the stream." in prompt
        closed = d.dispatch(QUERY, stream=True)
        closed.close()
        d.shadow.worker.join()
        assert d.shadow.sampled == 1, "a stream closed early is not shadowed"
    finally:
        sse.stop()


def test_a_full_queue_drops_and_counts_without_slowing_the_caller(
        tmp_path: Path, index: Path, models: Callable[..., ScriptedModel]) -> None:
    fast, frontier = models(), models(delay_s=0.3, judge=always("A"))
    d = shadowed(tmp_path, index, {"fast": fast.entry(), "frontier": frontier.entry()},
                 max_queued=1)
    t0 = time.perf_counter()
    for _ in range(6):
        d.dispatch(QUERY)
    took = time.perf_counter() - t0
    assert took < 0.3 * 3, f"six dispatches took {took:.2f} s: the caller waited on shadows"
    d.shadow.worker.join()
    c = d.shadow.counters()
    assert c["sampled"] == 6 and c["dropped"] >= 3
    assert c["written"] + c["dropped"] == 6 and c["failed"] == 0


def test_a_failing_reference_or_store_costs_the_caller_nothing(
        tmp_path: Path, index: Path, models: Callable[..., ScriptedModel]) -> None:
    fast, frontier = models(answer="routed"), models(status=500)
    d = shadowed(tmp_path, index, {"fast": fast.entry(), "frontier": frontier.entry()})
    r = d.dispatch(QUERY)
    assert r.text == "routed"
    d.shadow.worker.join()
    assert d.shadow.failed == 1 and d.shadow.written == 0
    (line,) = [x for x in read_trace(tmp_path / "trace.jsonl") if x.get("kind") == "shadow"]
    assert "AllModelsFailedError" in line["error"]
    assert d.cooldowns.is_cooling("frontier"), "the reference failed like any model"
    d.dispatch(QUERY)
    d.shadow.worker.join()
    assert d.shadow.skipped == 1, "a cooling reference is not called"

    bad = tmp_path / "dir-not-a-store"
    bad.mkdir()
    good = models(judge=always("A"))
    routes = write_set(tmp_path / "r2", {"fast": fast.entry(), "frontier": good.entry()},
                       ["fast"], shadow={"rate": 1.0, "reference": "frontier"},
                       outcomes={"path": str(bad)})
    d2 = Dispatcher(load(routes, index, classifier=False))
    assert d2.dispatch(QUERY).text == "routed"
    d2.shadow.worker.join()
    assert d2.shadow.failed == 1


@pytest.mark.parametrize(("shadow", "problem"), [
    ({"rate": 0.1}, "a shadow rate above 0 needs `reference`"),
    ({"rate": 0.1, "reference": "gpt-9"}, "field 'router.shadow.reference': 'gpt-9' is not in"),
    ({"rate": 0.1, "reference": "fast", "judge": "nope"},
     "field 'router.shadow.judge': 'nope' is not in"),
    ({"reference": "fast", "routes": {"billing": 0.5}},
     "field 'router.shadow.routes.billing': no route"),
    ({"reference": "fast", "routes": {"code": 2.0}}, "each route's rate must be in [0, 1]"),
    ({"rate": 1.5, "reference": "fast"}, "router.shadow.rate"),
])
def test_bad_settings_are_named(tmp_path: Path, shadow: dict[str, Any], problem: str) -> None:
    routes = write_set(tmp_path / "routes", {"fast": entry("openai", "http://127.0.0.1:9")},
                       ["fast"], shadow=shadow)
    with pytest.raises(ConfigError) as err:
        load_routes(routes)
    assert problem in str(err.value) and "models.yaml" in str(err.value)


def test_shadow_settings_round_trip_in_yaml(tmp_path: Path) -> None:
    routes = write_set(tmp_path / "routes", {"fast": entry("openai", "http://127.0.0.1:9")},
                       ["fast"], shadow={"rate": 0.02, "reference": "fast",
                                         "routes": {"step:plan": 0.5, "model:fast": 0.0}})
    cat = yaml.safe_load((routes / "models.yaml").read_text())
    cat["steps"] = {"plan": "fast"}
    (routes / "models.yaml").write_text(yaml.safe_dump(cat))
    s = load_routes(routes).settings.shadow
    assert (s.rate_for("code"), s.rate_for("step:plan"), s.judge_key) == (0.02, 0.5, "fast")


def test_async_dispatch_is_shadowed_and_budgets_never_count_shadow_calls(
        tmp_path: Path, index: Path, models: Callable[..., ScriptedModel]) -> None:
    fast, frontier = models(answer="routed"), models(answer="reference", judge=always("B"))
    routes = write_set(tmp_path / "routes", {"fast": fast.entry(), "frontier": frontier.entry()},
                       ["fast"], shadow={"rate": 1.0, "reference": "frontier"},
                       budgets={"store": str(tmp_path / "budgets.db"),
                                "caps": [{"name": "all", "scope": "route", "period": "day",
                                          "limit_usd": 1.0}]})
    d = Dispatcher(load(routes, index, classifier=False))
    r = asyncio.run(d.adispatch(QUERY))
    (v,) = verdicts(d)
    assert v.request_id == r.request_id and v.cost_usd == pytest.approx(3 * CALL_COST)
    assert d.state.budgets.spent("all", "code") == pytest.approx(CALL_COST), \
        "the caller's call only"


def test_a_cascade_answer_is_shadowed(tmp_path: Path, index: Path,
                                      models: Callable[..., ScriptedModel]) -> None:
    cheap, strong = models(answer="cheap answer"), models(answer="strong answer")
    frontier = models(answer="reference", judge=prefers("reference"))
    routes = write_set(tmp_path / "routes", {"fast": cheap.entry(), "strong": strong.entry(),
                                             "frontier": frontier.entry()}, ["fast"],
                       shadow={"rate": 1.0, "reference": "frontier"},
                       outcomes={"log_requests": True})
    for f in routes.glob("*.yaml"):
        if f.name != "models.yaml":
            data = yaml.safe_load(f.read_text())
            data["cascade"] = {"models": ["fast", "strong"], "gates": ["non_empty"]}
            f.write_text(yaml.safe_dump(data))
    d = Dispatcher(load(routes, index, classifier=False))
    r = d.dispatch(QUERY)
    assert r.model_key == "fast" and r.cascade is not None
    (v,) = verdicts(d)
    assert (v.model, v.score) == ("fast", 0.0)
    assert d.recorder is not None
    d.recorder.join()
    with OutcomeStore(d.recorder.path) as store:
        got = store.request(r.request_id)
    assert got is not None and got.model == "fast" and got.method == "index"


def test_a_daily_shadow_budget_stops_sampling_once_spent(
        tmp_path: Path, index: Path, models: Callable[..., ScriptedModel]) -> None:
    fast, frontier = models(), models(judge=always("A"))
    d = shadowed(tmp_path, index, {"fast": fast.entry(), "frontier": frontier.entry()},
                 max_cost_usd_per_day=2.5 * CALL_COST)  # one evaluation costs 3 calls
    d.dispatch(QUERY)
    d.shadow.worker.join()
    d.dispatch(QUERY)
    d.shadow.worker.join()
    c = d.shadow.counters()
    assert (c["sampled"], c["written"], c["over_budget"]) == (1, 1, 1)
    assert d.shadow.spent_usd == pytest.approx(3 * CALL_COST)
