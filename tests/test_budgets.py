"""Budgets, for real: SDK calls to loopback servers and the local llama-server, priced by a test
catalogue, counted in a real SQLite file.

- `max_cost_usd` keeps the chain's models that fit, else the strongest model that fits, else
  refuses naming the request, the estimate and the cap;
- period caps downgrade or refuse, naming the cap, the spend and when it resets; a new period
  (an injected clock) starts from zero; failed requests cost nothing; streams and async count
  what they really cost;
- two real processes spending against one SQLite file enforce one cap.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.config import RouterSettings, load_routes
from semroute.dispatching import Dispatcher
from semroute.errors import AllModelsFailedError, BudgetExceededError, ConfigError
from semroute.policies import Budgets, estimate_input_tokens, period_bounds, text_tokens
from semroute.routing import Router
from semroute.state import MemoryStore, SqliteStore
from semroute.telemetry import read_trace
from tests.conftest import TINY_ROUTES
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import catalogue, entry, live_openai, shared_index
from tests.support.llm_server import FaultServer, LLMServer

REPO = Path(__file__).resolve().parent.parent
WEAK, STRONG = "hi there", "write a python function to sort a list"  # greet, code
MAX_TOKENS = 8
PER_TOKEN = 1e6  # a price of $1 per token makes every cost a whole number of dollars
# The fault server reports 3 prompt + 3 completion tokens for every answer.
ACTUAL = {"dear": 6.0, "mid": 6 * 0.8, "cheap": 6 * 0.1}


def bound(query: str, key: str) -> float:
    """The cost bound a dispatch of `query` (no system prompt) estimates for model `key`."""
    tokens = estimate_input_tokens([{"role": "user", "content": query}]) + MAX_TOKENS
    return tokens * ACTUAL[key] / 6


class Clock:
    """Epoch seconds the test moves by hand: one minute before midnight UTC."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 23, 59, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("budgets"))


def priced(server: FaultServer) -> dict[str, Any]:
    """dear ($1/token), mid ($0.8) and cheap ($0.1), all answered by `server`."""
    return {k: entry("openai", server.base_url, model=f"{k}-model",
                     input_price=PER_TOKEN * ACTUAL[k] / 6, output_price=PER_TOKEN * ACTUAL[k] / 6)
            for k in ACTUAL}


def write_routes(directory: Path, models: dict[str, Any], chains: dict[str, list[str]],
                 **router: Any) -> Path:
    """TINY_ROUTES (greet: tier fast, code: tier powerful) with the given chains."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, spec in TINY_ROUTES.items():
        spec = copy.deepcopy(spec)
        spec["model"] = chains[stem]
        spec["metadata"] = {"tier": "fast" if stem == "greet" else "powerful"}
        (directory / f"{stem}.yaml").write_text(yaml.safe_dump(spec))
    settings: dict[str, Any] = {"tiers": ["fast", "powerful"], "attempts_per_model": 1}
    settings.update(router)
    (directory / "models.yaml").write_text(yaml.safe_dump(catalogue(models, **settings)))
    return directory


def make(tmp_path: Path, index: Path, models: dict[str, Any], chains: dict[str, list[str]],
         caps: list[dict[str, Any]] | None = None, clock: Clock | None = None) -> Dispatcher:
    routes = write_routes(tmp_path / "routes", models, chains,
                          budgets={"store": str(tmp_path / "state.db"), "caps": caps or []})
    router = Router.load(routes, index, classifier=False)
    s = router.routes.settings.budgets
    budgets = Budgets(s, SqliteStore(s.store), clock=clock or Clock())
    return Dispatcher(router, trace=tmp_path / "trace.jsonl", budgets=budgets)


def asked(server: FaultServer) -> list[str]:
    return [str(b["model"]) for b in server.bodies]


def test_max_cost_keeps_the_chain_models_that_fit(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    d = make(tmp_path, index, priced(srv), {"greet": ["cheap"], "code": ["dear", "mid", "cheap"]})
    cap = (bound(STRONG, "dear") + bound(STRONG, "mid")) / 2  # mid and cheap fit, dear not
    r = d.dispatch(STRONG, max_tokens=MAX_TOKENS, max_cost_usd=cap)
    assert (r.route, r.model_key, asked(srv)) == ("code", "mid", ["mid-model"])
    assert r.budget is not None
    assert (r.budget["from_model"], r.budget["to_model"], r.budget["chain"]) == \
        ("dear", "mid", ["mid", "cheap"])
    assert r.budget["estimate_usd"] == pytest.approx(bound(STRONG, "mid")), \
        "the reservation bounds the dearest model that may answer"
    assert "skipped dear" in r.budget["reason"]
    assert r.budget["cost_usd"] == r.cost_usd == pytest.approx(ACTUAL["mid"])
    unlimited = d.dispatch(STRONG, max_tokens=MAX_TOKENS)
    assert (unlimited.model_key, unlimited.budget) == ("dear", None)
    trace = read_trace(tmp_path / "trace.jsonl")
    assert trace[0]["budget"] == r.budget and trace[1]["budget"] is None


def test_when_no_chain_model_fits_the_strongest_that_fits_serves(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    d = make(tmp_path, index, priced(srv), {"greet": ["cheap"], "code": ["dear"]})
    r = d.dispatch(STRONG, max_tokens=MAX_TOKENS, max_cost_usd=bound(STRONG, "dear") * 0.9)
    # mid is dearer, but no route uses it; cheap serves a tiered route (fast): tier first
    assert (r.model_key, asked(srv)) == ("cheap", ["cheap-model"])
    assert r.budget is not None and r.budget["chain"] == ["cheap", "mid"]
    assert "strongest model that fits, 'cheap'" in r.budget["reason"]


def test_nothing_fits_max_cost_refuses_naming_request_and_estimate(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    d = make(tmp_path, index, priced(srv), {"greet": ["cheap"], "code": ["dear"]})
    with pytest.raises(BudgetExceededError) as err:
        d.dispatch(STRONG, max_tokens=MAX_TOKENS, max_cost_usd=0.01)
    e = err.value
    assert srv.hits == 0, "no model was called"
    assert e.request_id is not None and e.request_id in str(e)
    assert e.estimate_usd == pytest.approx(bound(STRONG, "cheap"))
    assert f"${bound(STRONG, 'cheap'):.6f}" in str(e) and "max_cost_usd $0.01" in str(e)
    assert (e.max_cost_usd, e.cap) == (0.01, None)
    [rec] = read_trace(tmp_path / "trace.jsonl")
    assert rec["request_id"] == e.request_id and "max_cost_usd" in rec["error"]


def test_a_refusing_cap_names_the_cap_its_spend_and_when_it_resets(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv, clock = fault_server([200]), Clock()
    est = bound(WEAK, "dear")
    limit = 2 * ACTUAL["dear"] + est  # three requests fit (the third exactly), a fourth not
    caps = [{"name": "per-user-daily", "scope": "user", "period": "day", "limit_usd": limit}]
    d = make(tmp_path, index, priced(srv), {"greet": ["dear"], "code": ["dear"]}, caps, clock)
    for _ in range(3):
        r = d.dispatch(WEAK, max_tokens=MAX_TOKENS, user="alice")
        assert r.model_key == "dear"
    assert d.state.budgets.spent("per-user-daily", "alice") == pytest.approx(3 * ACTUAL["dear"])
    assert d.dispatch(WEAK, max_tokens=MAX_TOKENS, user="bob").model_key == "dear", \
        "each user has their own counter"
    assert d.dispatch(WEAK, max_tokens=MAX_TOKENS).budget is None, "no user: no user cap"
    with pytest.raises(BudgetExceededError) as err:
        d.dispatch(WEAK, max_tokens=MAX_TOKENS, user="alice")
    e = err.value
    assert (e.cap, e.limit_usd, e.resets_at) == ("per-user-daily", limit,
                                                 "2026-12-02T00:00:00+00:00")
    assert e.spent_usd == pytest.approx(3 * ACTUAL["dear"])
    assert "cap 'per-user-daily'" in str(e) and "$18.000000 spent" in str(e)
    assert "resets at 2026-12-02T00:00:00+00:00" in str(e) and "alice" not in str(e)
    assert srv.hits == 5

    clock.now += 60  # midnight UTC: a new day, a new counter
    r = d.dispatch(WEAK, max_tokens=MAX_TOKENS, user="alice")
    assert r.budget is not None and r.budget["caps"][0]["spent_usd"] == 0.0
    assert r.budget["caps"][0]["resets_at"] == "2026-12-03T00:00:00+00:00"
    text = (tmp_path / "trace.jsonl").read_text()
    assert "alice" not in text and "bob" not in text, "user ids never reach a trace"
    with sqlite3.connect(tmp_path / "state.db") as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM semroute_kv")]
    assert len(keys) == 3 and not any("alice" in k or "bob" in k for k in keys)


def test_a_downgrading_cap_serves_the_cheapest_then_refuses_when_that_does_not_fit(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    limit = ACTUAL["dear"] + bound(WEAK, "dear") - 0.5  # one dear answer, then downgrades
    caps = [{"name": "team", "scope": "client_key", "match": "team-a", "period": "month",
             "limit_usd": limit, "policy": "downgrade"}]
    d = make(tmp_path, index, priced(srv), {"greet": ["dear", "mid", "cheap"],
                                            "code": ["dear"]}, caps)
    first = d.dispatch(WEAK, max_tokens=MAX_TOKENS, client_key="team-a")
    second = d.dispatch(WEAK, max_tokens=MAX_TOKENS, client_key="team-a")
    assert (first.model_key, second.model_key) == ("dear", "cheap")
    assert second.budget is not None and second.budget["to_model"] == "cheap"
    assert "cap 'team'" in second.budget["reason"] and "downgraded to 'cheap'" in \
        second.budget["reason"]
    assert second.budget["caps"][0]["resets_at"] == "2027-01-01T00:00:00+00:00"
    other = d.dispatch(WEAK, max_tokens=MAX_TOKENS, client_key="team-b")
    assert (other.model_key, other.budget) == ("dear", None), "the cap matches team-a only"
    assert d.state.budgets.spent("team") == pytest.approx(ACTUAL["dear"] + ACTUAL["cheap"])

    # downgrade_to a model that does not fit either: refused, naming the downgrade
    caps[0].update(limit_usd=bound(WEAK, "mid") - 0.5, downgrade_to="mid", name="tight")
    d2 = make(tmp_path / "2", index, priced(srv), {"greet": ["dear"], "code": ["dear"]}, caps)
    with pytest.raises(BudgetExceededError, match="even the downgrade to 'mid'") as err:
        d2.dispatch(WEAK, max_tokens=MAX_TOKENS, client_key="team-a")
    assert err.value.cap == "tight" and err.value.resets_at == "2027-01-01T00:00:00+00:00"


def test_a_failed_request_costs_nothing_and_route_caps_count_per_route(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    bad, good = fault_server([500]), fault_server([200])
    models = {**priced(good), "broken": entry("openai", bad.base_url, input_price=PER_TOKEN,
                                              output_price=PER_TOKEN)}
    caps = [{"name": "per-route", "scope": "route", "period": "hour", "limit_usd": 100}]
    d = make(tmp_path, index, models, {"greet": ["broken"], "code": ["dear"]}, caps)
    with pytest.raises(AllModelsFailedError):
        d.dispatch(WEAK, max_tokens=MAX_TOKENS)
    assert d.state.budgets.spent("per-route", "greet") == 0.0, "the reservation is returned"
    d.dispatch(STRONG, max_tokens=MAX_TOKENS)
    assert d.state.budgets.spent("per-route", "code") == pytest.approx(ACTUAL["dear"])
    assert d.state.budgets.spent("per-route", "greet") == 0.0
    failed = read_trace(tmp_path / "trace.jsonl")[0]
    assert failed["budget"]["cost_usd"] == 0.0 and failed["error"] == "all models failed"


def test_streams_and_async_count_what_they_really_cost(
        tmp_path: Path, index: Path, llm_server: LLMServer) -> None:
    caps = [{"name": "all", "scope": "route", "period": "day", "limit_usd": 1.0}]
    d = make(tmp_path, index, {"m": live_openai(llm_server)}, {"greet": ["m"], "code": ["m"]},
             caps)
    with d.dispatch(WEAK, max_tokens=MAX_TOKENS, stream=True) as s:
        text = "".join(s)
    assert text and s.stream_state == "complete" and s.cost_usd > 0
    assert s.budget is not None and s.budget["cost_usd"] == s.cost_usd
    assert d.state.budgets.spent("all", "greet") == pytest.approx(s.cost_usd)

    async def twice() -> list[float]:
        a = await d.adispatch(WEAK, max_tokens=MAX_TOKENS)
        async with await d.adispatch(WEAK, max_tokens=MAX_TOKENS, stream=True) as b:
            async for _ in b:
                pass
        return [a.cost_usd, b.cost_usd]

    import asyncio

    costs = asyncio.run(twice())
    assert d.state.budgets.spent("all", "greet") == pytest.approx(s.cost_usd + sum(costs))


def test_bad_budget_settings_are_named(tmp_path: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    caps = [{"name": "x", "scope": "route", "match": "nope", "period": "day", "limit_usd": 1},
            {"name": "y", "scope": "user", "period": "week", "limit_usd": 1},
            {"name": "z", "scope": "user", "period": "day", "limit_usd": 1,
             "policy": "downgrade", "downgrade_to": "missing"}]
    routes = write_routes(tmp_path / "r", priced(srv), {"greet": ["dear"], "code": ["dear"]},
                          budgets={"caps": caps})
    with pytest.raises(ConfigError) as err:
        load_routes(routes)
    text = str(err.value)
    assert "field 'router.budgets.caps[2].period': Input should be 'hour', 'day' or 'month'" \
        in text, text
    caps.pop(1)
    write_routes(routes, priced(srv), {"greet": ["dear"], "code": ["dear"]},
                 budgets={"caps": caps})
    with pytest.raises(ConfigError) as err:
        load_routes(routes)
    text = str(err.value)
    assert "field 'router.budgets.caps[1].match': cap 'x' names no route or step 'nope'" in text
    assert "field 'router.budgets.caps[2].downgrade_to': 'missing' is not in profile" in text
    bare = RouterSettings.model_validate({"budgets": [  # a bare list of caps; api_key alias
        {"name": "k", "scope": "api_key", "period": "hour", "limit_usd": 2}]})
    assert bare.budgets.caps[0].scope == "client_key" and bare.budgets.store == ".semroute/state.db"


WORKER = """
import json, sys
from semroute.dispatching import Dispatcher
from semroute.errors import BudgetExceededError
from semroute.routing import Router
d = Dispatcher(Router.load(sys.argv[1], sys.argv[2], classifier=False))
out = {"answered": 0, "refused": []}
for _ in range(int(sys.argv[3])):
    try:
        d.dispatch("hi there", max_tokens=8, client_key="shared-key")
        out["answered"] += 1
    except BudgetExceededError as exc:
        out["refused"].append(exc.cap)
print(json.dumps(out))
"""


def test_two_processes_spending_against_one_sqlite_file_enforce_one_cap(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    limit = 10 * ACTUAL["dear"]
    caps = [{"name": "shared", "scope": "client_key", "period": "month", "limit_usd": limit}]
    routes = write_routes(tmp_path / "routes", priced(srv), {"greet": ["dear"], "code": ["dear"]},
                          budgets={"store": str(tmp_path / "state.db"), "caps": caps})
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(routes), str(index), "15"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    answered = sum(o["answered"] for o in outs)
    refused = [c for o in outs for c in o["refused"]]
    with sqlite3.connect(tmp_path / "state.db") as conn:
        [(spent,)] = conn.execute("SELECT value FROM semroute_kv").fetchall()
    assert answered + len(refused) == 30 and set(refused) == {"shared"}
    # Each admission needs spent + the bound ($18: 10 prompt + 8 answer tokens) <= $60, and
    # each answer costs $6: one process alone answers 8 (spent 0, 6, ..., 42); two processes
    # with a cap each would answer 16.
    assert 6 <= answered <= 8, f"one cap for both processes: {outs}"
    assert float(spent) == pytest.approx(answered * ACTUAL["dear"]) and float(spent) <= limit
    assert srv.hits == answered


def test_the_estimate_counts_digits_bytes_messages_and_images() -> None:
    assert text_tokens("abcdef") == 2 and text_tokens("2026") == 4, "a token per digit"
    assert text_tokens("日本") == 2, "3 UTF-8 bytes a CJK character: about a token each"
    one = estimate_input_tokens([{"role": "user", "content": "abcdef"}])
    assert one == 3 + 4 + 2, "reply priming + message overhead + text"
    assert estimate_input_tokens([{"role": "user", "content": "abcdef"}], system="abc") == \
        one + 4 + 1
    parts = [{"type": "text", "text": "abcdef"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert estimate_input_tokens([{"role": "user", "content": parts}]) == one + 1600


def test_periods_are_calendar_periods_in_utc() -> None:
    t = datetime(2026, 12, 31, 23, 30, 5, tzinfo=UTC).timestamp()
    iso = [(a.isoformat(), b.isoformat()) for a, b in (period_bounds(p, t)
                                                         for p in ("hour", "day", "month"))]
    assert iso == [("2026-12-31T23:00:00+00:00", "2027-01-01T00:00:00+00:00"),
                   ("2026-12-31T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
                   ("2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00")]
    feb = period_bounds("month", datetime(2028, 2, 29, tzinfo=UTC).timestamp())
    assert feb[1] == datetime(2028, 3, 1, tzinfo=UTC)


def test_sixteen_threads_never_spend_past_a_cap(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    srv = fault_server([200])
    srv.delay_s = 0.02  # requests overlap: reservations, not luck, keep the cap
    routes = write_routes(tmp_path / "routes", priced(srv), {"greet": ["dear"], "code": ["dear"]},
                          budgets={"caps": [{"name": "c", "scope": "route", "period": "day",
                                             "limit_usd": 5 * ACTUAL["dear"]}]})
    router = Router.load(routes, index, classifier=False)
    d = Dispatcher(router, budgets=Budgets(router.routes.settings.budgets, MemoryStore()))

    def one(_: int) -> bool:
        try:
            d.dispatch(WEAK, max_tokens=MAX_TOKENS)
            return True
        except BudgetExceededError:
            return False

    with ThreadPoolExecutor(16) as pool:
        answered = sum(pool.map(one, range(32)))
    assert 1 <= answered <= 5 and srv.hits == answered
    assert d.state.budgets.spent("c", "greet") == pytest.approx(answered * ACTUAL["dear"])
    with pytest.raises(ValueError, match="max_cost_usd must be a positive"):
        d.dispatch(WEAK, max_cost_usd=0)


def test_a_cancelled_request_gives_its_reservation_back(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    import asyncio

    srv = fault_server([200], delay_s=5.0)
    caps = [{"name": "c", "scope": "route", "period": "day", "limit_usd": 100}]
    d = make(tmp_path, index, priced(srv), {"greet": ["dear"], "code": ["dear"]}, caps)

    async def cancel_midway() -> float:
        task = asyncio.create_task(d.adispatch(WEAK, max_tokens=MAX_TOKENS))
        while srv.hits == 0:  # the call is in flight: the bound is reserved
            await asyncio.sleep(0.01)
        held = d.state.budgets.spent("c", "greet")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return held

    assert asyncio.run(cancel_midway()) == pytest.approx(bound(WEAK, "dear"))
    assert d.state.budgets.spent("c", "greet") == 0.0
