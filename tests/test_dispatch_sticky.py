"""Stickiness, for real: SDK calls to loopback servers that record which model was asked.

- never_downgrade keeps a conversation on the strongest tier it reached, until the TTL (an
  injected clock) has passed since the router itself last chose that tier;
- same_model keeps the model that answered, but never defeats failover;
- derived conversation ids are stable across turns and differ across conversations;
- a user keeps their model unless the tier must rise; off changes nothing;
- 16 threads over 4 conversations keep the policy consistent; bad settings are named.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

import semroute
from semroute.config import StickinessSettings, load_routes
from semroute.dispatching import Dispatcher, DispatchState, Response
from semroute.errors import ConfigError
from semroute.policies import conversation_key
from semroute.routing import Router
from semroute.state import MemoryStore
from semroute.telemetry import read_trace
from tests.conftest import TINY_ROUTES
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import SseServer, catalogue, entry, shared_index
from tests.support.llm_server import FaultServer

STRONG = "write a python function to sort a list"  # route code, tier powerful
WEAK = "hi there"  # route greet, tier fast
TIERS = {"greet": "fast", "code": "powerful"}
CHAINS = {"greet": ["fast"], "code": ["powerful"]}
TTL = 100.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def write_tiered(directory: Path, models: dict[str, dict[str, Any]], *,
                 chains: dict[str, list[str]] | None = None,
                 route_tiers: dict[str, Any] | None = None, **router: Any) -> Path:
    """TINY_ROUTES with a chain and a metadata.tier per route; `router` settings on top of
    `tiers: [fast, balanced, powerful]` (pass tiers=None in `router` to drop it)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, spec in TINY_ROUTES.items():
        spec = copy.deepcopy(spec)
        spec["model"] = (chains or CHAINS)[stem]
        tier = (route_tiers or TIERS).get(stem)
        if tier is not None:
            spec["metadata"] = {"tier": tier}
        (directory / f"{stem}.yaml").write_text(yaml.safe_dump(spec))
    settings: dict[str, Any] = {"tiers": ["fast", "balanced", "powerful"],
                                "attempts_per_model": 1}
    settings.update(router)
    if settings["tiers"] is None:
        del settings["tiers"]
    (directory / "models.yaml").write_text(yaml.safe_dump(catalogue(models, **settings)))
    return directory


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("sticky"))


def models(fast: FaultServer, powerful: FaultServer | None = None) -> dict[str, Any]:
    return {"fast": entry("openai", fast.base_url, model="fast-model"),
            "powerful": entry("openai", (powerful or fast).base_url, model="powerful-model")}


def make(tmp_path: Path, index: Path, catalogue_models: dict[str, Any], clock: Clock,
         **router: Any) -> Dispatcher:
    routes = write_tiered(tmp_path / "routes", catalogue_models, **router)
    return Dispatcher(Router.load(routes, index, classifier=False),
                      trace=tmp_path / "trace.jsonl", store=MemoryStore(clock=clock))


def asked(server: FaultServer) -> str:
    """The model id of the server's latest request."""
    return str(server.bodies[-1]["model"])


def test_never_downgrade_holds_the_strongest_tier_until_the_ttl(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv, clock = fault_server([200]), Clock()
    d = make(tmp_path, index, models(srv), clock,
             stickiness={"mode": "never_downgrade", "ttl_seconds": TTL})
    first = d.dispatch(STRONG, conversation_id="chat-42", max_tokens=8)
    assert (first.route, first.model_key, asked(srv), first.sticky) == \
        ("code", "powerful", "powerful-model", None)

    clock.now += TTL - 10
    held = d.dispatch(WEAK, conversation_id="chat-42", max_tokens=8)
    assert held.decision.route == "greet", "the decision is the router's own"
    assert (held.route, held.model_key, asked(srv)) == ("code", "powerful", "powerful-model")
    assert held.sticky is not None
    cid = held.sticky["conversation_id"]
    assert held.sticky == {
        "mode": "never_downgrade", "conversation_id": cid, "user_id": None,
        "from_route": "greet", "to_route": "code", "from_model": "fast",
        "to_model": "powerful", "reason": held.sticky["reason"]}
    assert len(cid) == 32 and "chat-42" not in cid and "powerful" in held.sticky["reason"]
    other = d.dispatch(WEAK, conversation_id="chat-43", max_tokens=8)
    assert (other.route, other.model_key, other.sticky) == ("greet", "fast", None)

    clock.now += 11  # TTL passed since the router chose powerful; a held turn does not renew
    dropped = d.dispatch(WEAK, conversation_id="chat-42", max_tokens=8)
    assert (dropped.route, dropped.model_key, asked(srv), dropped.sticky) == \
        ("greet", "fast", "fast-model", None)

    records = read_trace(tmp_path / "trace.jsonl")
    assert [r["route"] for r in records] == ["code", "code", "greet", "greet"]
    assert records[1]["sticky"] == held.sticky and records[1]["method"] == "index"
    assert [r["sticky"] for r in records[2:]] == [None, None]
    assert "chat-42" not in (tmp_path / "trace.jsonl").read_text()


def test_same_model_keeps_the_model_but_never_defeats_failover(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    fast, powerful, clock = fault_server([200]), fault_server([200, 200, 503]), Clock()
    d = make(tmp_path, index, models(fast, powerful), clock,
             stickiness={"mode": "same_model", "ttl_seconds": TTL})
    conv = "support-ticket-7"
    assert d.dispatch(STRONG, conversation_id=conv, max_tokens=8).model_key == "powerful"

    kept = d.dispatch(WEAK, conversation_id=conv, max_tokens=8)
    assert (kept.route, kept.model_key, asked(powerful)) == ("greet", "powerful",
                                                             "powerful-model")
    assert kept.sticky is not None and kept.sticky["mode"] == "same_model"
    assert (kept.sticky["from_model"], kept.sticky["to_model"]) == ("fast", "powerful")

    failed_over = d.dispatch(WEAK, conversation_id=conv, max_tokens=8)  # powerful now 503s
    assert [(a.model_key, a.ok, a.status) for a in failed_over.attempts] == \
        [("powerful", False, 503), ("fast", True, None)]
    assert failed_over.model_key == "fast" and asked(fast) == "fast-model"

    after = d.dispatch(STRONG, conversation_id=conv, max_tokens=8)
    assert [a.model_key for a in after.attempts] == ["fast"], \
        "the conversation now keeps the model that answered it"
    assert after.route == "code" and after.sticky is not None

    fresh = d.dispatch(WEAK, conversation_id="another", max_tokens=8)
    assert (fresh.model_key, fresh.sticky) == ("fast", None)


def test_derived_conversation_ids_are_stable_and_distinct(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv, clock = fault_server([200]), Clock()
    d = make(tmp_path, index, models(srv), clock,
             stickiness={"mode": "never_downgrade", "ttl_seconds": TTL})
    turn1: list[Any] = [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": STRONG}]
    turn2 = [*turn1, {"role": "assistant", "content": "def f(x): return sorted(x)"},
             {"role": "user", "content": WEAK}]
    assert d.dispatch(turn1, max_tokens=8).route == "code"
    held = d.dispatch(turn2, max_tokens=8)
    assert held.route == "code" and held.sticky is not None
    assert held.sticky["conversation_id"] == conversation_key(turn1) == conversation_key(turn2)

    # Another conversation (another first turn, or another system prompt) is not held.
    other = [{"role": "user", "content": WEAK}]
    assert d.dispatch(other, max_tokens=8).sticky is None
    other_system = [{"role": "system", "content": "be verbose"}, *turn2[1:]]
    assert d.dispatch(other_system, max_tokens=8).route == "greet"

    assert conversation_key([{"role": "user", "content": f"  {STRONG}\n"}]) == \
        conversation_key([{"role": "user", "content": [{"type": "text", "text": STRONG}]}]), \
        "the first user turn is compared normalised (whitespace), text parts or string"
    assert conversation_key(turn1) != conversation_key(turn1[1:])
    assert conversation_key(turn1[1:]) != conversation_key(turn1[1:], system="be brief") != \
        conversation_key(turn1[1:], user="alice")
    assert conversation_key(turn1, conversation_id="x") == \
        conversation_key([], conversation_id="x") != conversation_key(turn1)
    assert conversation_key([{"role": "assistant", "content": "hello"}]) is None


def test_a_user_keeps_their_model_unless_the_tier_must_rise(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv, clock = fault_server([200]), Clock()
    d = make(tmp_path, index, models(srv), clock, stickiness={"user_ttl_seconds": TTL})
    assert d.dispatch(STRONG, user="alice", max_tokens=8).model_key == "powerful"
    kept = d.dispatch(WEAK, user="alice", max_tokens=8)
    assert (kept.route, kept.model_key, asked(srv)) == ("greet", "powerful", "powerful-model")
    assert kept.sticky is not None
    assert (kept.sticky["mode"], kept.sticky["conversation_id"]) == ("user", None)
    assert len(kept.sticky["user_id"]) == 32 and "alice" not in json.dumps(kept.sticky)
    assert d.dispatch(WEAK, user="bob", max_tokens=8).model_key == "fast"

    rises = d.dispatch(STRONG, user="bob", max_tokens=8)  # the tier must rise: it does
    assert (rises.model_key, rises.sticky) == ("powerful", None)
    assert d.dispatch(WEAK, user="bob", max_tokens=8).model_key == "powerful"

    clock.now += TTL + 1
    assert d.dispatch(WEAK, user="alice", max_tokens=8).model_key == "fast"


def test_off_changes_nothing_and_stores_nothing(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    routes = write_tiered(tmp_path / "routes", models(srv))
    assert load_routes(routes).settings.stickiness == StickinessSettings()
    store = MemoryStore()
    d = Dispatcher(Router.load(routes, index, classifier=False),
                   trace=tmp_path / "trace.jsonl", store=store)
    got = [d.dispatch(q, conversation_id="c", user="u", max_tokens=8) for q in (STRONG, WEAK)]
    assert [(r.route, r.model_key, r.sticky) for r in got] == \
        [("code", "powerful", None), ("greet", "fast", None)]
    assert len(store) == 0
    assert [r["sticky"] for r in read_trace(tmp_path / "trace.jsonl")] == [None, None]


def test_async_dispatch_shares_the_policy(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    srv = fault_server([200])
    d = make(tmp_path, index, models(srv), Clock(),
             stickiness={"mode": "never_downgrade", "ttl_seconds": TTL})
    d.dispatch(STRONG, conversation_id="mixed", max_tokens=8)  # sync turn, async follow-up

    async def main() -> Response:
        return await d.adispatch(WEAK, conversation_id="mixed", max_tokens=8)

    r = asyncio.run(main())
    assert (r.route, r.model_key) == ("code", "powerful") and r.sticky is not None


def test_sixteen_threads_over_four_conversations_stay_consistent(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    """Every weak turn that starts after a strong turn of its conversation has finished is
    held on the strong tier; no turn is lost; each conversation ends on the strong route."""
    srv = fault_server([200], delay_s=0.005)
    d = make(tmp_path, index, models(srv), Clock(),
             stickiness={"mode": "never_downgrade", "ttl_seconds": TTL})
    plan = [(f"conv-{c}", STRONG if (c + i) % 4 == 1 else WEAK)
            for i in range(12) for c in range(4)]
    done: list[tuple[str, str, float, float, Response]] = []
    lock = threading.Lock()

    def turn(conv: str, query: str) -> None:
        t0 = time.perf_counter()
        r = d.dispatch(query, conversation_id=conv, max_tokens=8)
        with lock:
            done.append((conv, query, t0, time.perf_counter(), r))

    with ThreadPoolExecutor(16) as pool:
        for f in [pool.submit(turn, c, q) for c, q in plan]:
            f.result()
    assert len(done) == len(plan) == len(read_trace(tmp_path / "trace.jsonl"))
    for conv, query, start, _, r in done:
        strong_done = any(c == conv and q == STRONG and end < start
                          for c, q, _, end, _ in done)
        if query == STRONG or strong_done:
            assert (r.route, r.model_key) == ("code", "powerful"), (conv, query)
        if r.route != r.decision.route:
            assert r.sticky is not None and r.sticky["to_route"] == "code"
    assert any(r.sticky for *_, r in done), "some weak turns were held"
    for c in range(4):
        last = d.dispatch(WEAK, conversation_id=f"conv-{c}", max_tokens=8)
        assert last.route == "code"


def test_stickiness_settings_are_validated_naming_file_route_and_field(
        tmp_path: Path) -> None:
    m = {"fast": {"provider": "openai", "model": "x"},
         "powerful": {"provider": "openai", "model": "y"}}

    def problems(name: str, **kw: Any) -> str:
        with pytest.raises(ConfigError) as err:
            load_routes(write_tiered(tmp_path / name, m, **kw))
        return str(err.value)

    msg = problems("no-tiers", tiers=None, stickiness={"mode": "never_downgrade"})
    assert "models.yaml: field 'router.tiers': required by router.stickiness.mode " \
           "'never_downgrade'" in msg
    assert "router.stickiness.user_ttl_seconds" in problems(
        "user", tiers=None, stickiness={"user_ttl_seconds": 60})
    msg = problems("bad-tier", route_tiers={"greet": "tiny", "code": None})
    assert "greet.yaml: route 'greet': field 'metadata.tier': 'tiny' is not one of " \
           "router.tiers (fast, balanced, powerful" in msg
    assert "code.yaml: route 'code': field 'metadata.tier': is missing" in msg
    assert "models.yaml: field 'router.tiers': tier names must be unique" in problems(
        "dup", tiers=["fast", "fast"])
    assert "field 'router.stickiness.mode'" in problems("mode", stickiness={"mode": "sticky"})
    assert "field 'router.stickiness.ttl_seconds'" in problems(
        "ttl", stickiness={"mode": "same_model", "ttl_seconds": 0})

    ok = write_tiered(tmp_path / "bare-off", m, tiers=None)
    (ok / "models.yaml").write_text((ok / "models.yaml").read_text()
                                    + "  stickiness: {mode: off}\n")
    assert load_routes(ok).settings.stickiness.mode == "off", "YAML's bare off is false"
    with pytest.raises(ConfigError, match=r"'router\.tiers': required by router\.stickiness"):
        DispatchState.create(load_routes(ok).settings,
                             stickiness=StickinessSettings(mode="never_downgrade"))


def test_module_level_and_streamed_dispatch_keep_the_conversation(
        tmp_path: Path, index: Path) -> None:
    """`semroute.dispatch(..., router=r)` shares one store per router; a stream is recorded
    once its first text arrived."""
    sse = SseServer(["ok"])
    try:
        routes = write_tiered(tmp_path / "routes", {
            "fast": entry("openai", sse.base_url, model="fast-model"),
            "powerful": entry("anthropic", sse.base_url, model="powerful-model")},
            stickiness={"mode": "never_downgrade"})
        router = Router.load(routes, index, classifier=False)
        with semroute.dispatch(STRONG, router=router, stream=True, conversation_id="s",
                               max_tokens=8) as first:
            assert "".join(first) == "Hello from the stream."
        with semroute.dispatch(WEAK, router=router, stream=True, conversation_id="s",
                               max_tokens=8) as held:
            assert "".join(held)
        assert (first.model_key, held.route, held.model_key) == ("powerful", "code", "powerful")
        assert held.sticky is not None and held.stream_state == "complete"
    finally:
        sse.stop()
