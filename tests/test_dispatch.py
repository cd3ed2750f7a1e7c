"""dispatch(): the route's model answers through the real SDKs; retryable failures are retried
and failed over with every attempt recorded; traces are written. (What each kind of failure does
to the chain: test_dispatch_failover.py; streams: test_streaming.py; traces: test_trace.py.)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from semroute.dispatching import Dispatcher
from semroute.errors import AllModelsFailedError, NoRouteError, QueryError
from semroute.telemetry import JsonlSink, read_trace
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import dispatcher_factory, live_anthropic, live_openai, shared_index
from tests.support.llm_server import LLMServer


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One index for the whole module: model chains are not part of it."""
    return shared_index(tmp_path_factory.mktemp("dispatch"))


@pytest.fixture
def make_dispatcher(tmp_path: Path, index: Path) -> Callable[..., Dispatcher]:
    return dispatcher_factory(tmp_path, index)


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_dispatch_answers_with_usage_and_cost(make_dispatcher: Callable[..., Dispatcher],
                                              llm_server: LLMServer, flavour: str) -> None:
    spec = live_openai(llm_server) if flavour == "openai" else live_anthropic(llm_server)
    d = make_dispatcher({"live": spec}, ["live"])
    r = d.dispatch("write a python function to sort a list", max_tokens=16,
                   temperature=0)  # a deterministic answer from the real model
    assert r.text.strip()
    assert r.route == "code" and r.decision.method == "index"
    assert r.provider == flavour and r.model_key == "live"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    expected = (r.usage.input_tokens * 2.0 + r.usage.output_tokens * 8.0) / 1e6
    assert r.cost_usd == pytest.approx(expected)
    assert [a.ok for a in r.attempts] == [True]
    assert {"decide", "model", "total"} <= set(r.latency_ms)


def test_failover_from_dead_and_failing_endpoints_to_the_live_one(
        make_dispatcher: Callable[..., Dispatcher], llm_server: LLMServer,
        fault_server: MakeFaultServer, refused_url: str) -> None:
    flaky = fault_server([429, 500])
    d = make_dispatcher({
        "dead": {"provider": "openai", "model": "dead", "base_url": f"{refused_url}/v1"},
        "flaky": {"provider": "anthropic", "model": "flaky", "base_url": flaky.base_url},
        "live": live_openai(llm_server)}, ["dead", "flaky", "live"])
    r = d.dispatch("write a python function to sort a list", max_tokens=8)
    assert r.model_key == "live" and r.text
    tried = [(a.model_key, a.try_number, a.ok, a.status) for a in r.attempts]
    assert tried == [("dead", 1, False, None), ("dead", 2, False, None),
                     ("flaky", 1, False, 429), ("flaky", 2, False, 500), ("live", 1, True, None)]
    assert flaky.hits == 2
    assert all(a.error for a in r.attempts if not a.ok)

    again = d.dispatch("implement binary search in java", max_tokens=8)
    assert [a.model_key for a in again.attempts] == ["live"], "failing models are cooled down"
    assert flaky.hits == 2


def test_retry_honours_retry_after_then_succeeds(make_dispatcher: Callable[..., Dispatcher],
                                                 fault_server: MakeFaultServer) -> None:
    flaky = fault_server([503, 200], retry_after="0.05")
    d = make_dispatcher({"f": {"provider": "openai", "model": "f",
                               "base_url": flaky.openai_base_url}}, ["f"])
    r = d.dispatch("hello there")
    assert [(a.try_number, a.ok, a.status) for a in r.attempts] == [(1, False, 503),
                                                                     (2, True, None)]


def test_every_model_failing_raises_one_error_listing_every_attempt(
        make_dispatcher: Callable[..., Dispatcher], fault_server: MakeFaultServer,
        refused_url: str) -> None:
    flaky = fault_server([500])
    d = make_dispatcher({
        "dead": {"provider": "openai", "model": "dead", "base_url": f"{refused_url}/v1"},
        "flaky": {"provider": "openai", "model": "flaky", "base_url": flaky.openai_base_url}},
        ["dead", "flaky"])
    with pytest.raises(AllModelsFailedError) as info:
        d.dispatch("hello there")
    assert len(info.value.attempts) == 4
    msg = str(info.value)
    assert "dead" in msg and "flaky" in msg and "500" in msg
    [line] = read_trace(d.trace.path)  # type: ignore[union-attr]
    assert line["error"] == "all models failed" and len(line["attempts"]) == 4


def test_streaming_yields_chunks_then_usage_and_a_trace(
        make_dispatcher: Callable[..., Dispatcher], llm_server: LLMServer) -> None:
    d = make_dispatcher({"live": live_openai(llm_server)}, ["live"])
    r = d.dispatch("write a python function to sort a list", max_tokens=16, stream=True,
                   temperature=0)
    assert isinstance(d.trace, JsonlSink) and not d.trace.path.exists(), \
        "traced when the stream ends"
    chunks = list(r)
    assert len(chunks) > 1
    assert r.text == "".join(chunks)
    assert r.usage.output_tokens > 0 and r.cost_usd > 0
    [line] = read_trace(d.trace.path)
    assert line["output_tokens"] == r.usage.output_tokens


def test_async_dispatch_and_async_streaming(make_dispatcher: Callable[..., Dispatcher],
                                            llm_server: LLMServer) -> None:
    d = make_dispatcher({"live": live_anthropic(llm_server)}, ["live"])

    async def main() -> tuple[Any, str, Any]:
        plain = await d.adispatch("hello there", max_tokens=8, temperature=0)
        streamed = await d.adispatch("hello there", max_tokens=8, stream=True,
                                     temperature=0)
        text = "".join([c async for c in streamed])
        return plain, text, streamed

    plain, text, streamed = asyncio.run(main())
    assert plain.text and plain.usage.output_tokens > 0
    assert text == streamed.text and streamed.usage.output_tokens > 0


def test_trace_lines_stay_whole_under_threads_and_asyncio(
        make_dispatcher: Callable[..., Dispatcher], fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    d = make_dispatcher({"ok": {"provider": "openai", "model": "ok",
                                "base_url": ok.openai_base_url}}, ["ok"])
    threads = [threading.Thread(target=d.dispatch, args=(f"hello number {i}",))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def many() -> None:
        await asyncio.gather(*(d.adispatch(f"write code number {i}") for i in range(8)))

    asyncio.run(many())
    lines = read_trace(d.trace.path)  # type: ignore[union-attr]
    assert len(lines) == 16
    assert len({line["request_id"] for line in lines}) == 16
    for line in lines:
        assert {"ts", "route", "method", "score", "margin", "candidates", "model", "provider",
                "attempts", "input_tokens", "output_tokens", "cost_usd",
                "latency_ms"} <= set(line)
        assert "query" not in line, "query text only when configured"


def test_query_text_is_traced_only_when_asked(make_dispatcher: Callable[..., Dispatcher],
                                              fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    d = make_dispatcher({"ok": {"provider": "openai", "model": "ok",
                                "base_url": ok.openai_base_url}}, ["ok"], include_query=True)
    d.dispatch("hello there")
    assert read_trace(d.trace.path)[0]["query"] == "hello there"  # type: ignore[union-attr]


def test_messages_route_on_the_latest_user_turn(make_dispatcher: Callable[..., Dispatcher],
                                                fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    d = make_dispatcher({"ok": {"provider": "openai", "model": "ok",
                                "base_url": ok.openai_base_url}}, ["ok"])
    r = d.dispatch([{"role": "user", "content": "hello there"},
                    {"role": "assistant", "content": "hi!"},
                    {"role": "user", "content": "write a python function to sort a list"}])
    assert r.route == "code"
    sent = ok.bodies[0]["messages"]
    assert sent[0] == {"role": "system", "content": "Answer in one short sentence."}
    assert len(sent) == 4


def test_no_route_and_no_default_is_a_clear_error(make_dispatcher: Callable[..., Dispatcher],
                                                  fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    d = make_dispatcher({"ok": {"provider": "openai", "model": "ok",
                                "base_url": ok.openai_base_url}}, ["ok"],
                        default_route=None, score_threshold=0.99)
    with pytest.raises(NoRouteError, match="default_route"):
        d.dispatch("zxqv blorp")
    assert ok.hits == 0


def test_naming_a_model_skips_routing_and_is_still_traced(
        make_dispatcher: Callable[..., Dispatcher], fault_server: MakeFaultServer,
        tmp_path: Path) -> None:
    first, named = fault_server([200]), fault_server([200])
    d = make_dispatcher({"first": {"provider": "openai", "model": "a",
                                   "base_url": f"{first.base_url}/v1"},
                         "named": {"provider": "anthropic", "model": "b",
                                   "base_url": named.base_url}}, ["first"])
    r = d.dispatch("write a python function to sort a list", model="named", max_tokens=8)
    assert (r.model_key, r.route, r.decision.method, r.decision.route) == (
        "named", "model:named", "explicit", "model:named")
    assert "named" in r.decision.reason and r.decision.candidates == ()
    assert first.hits == 0 and named.hits == 1
    assert "system" not in named.bodies[0]  # no route, so no route system prompt
    line = read_trace(tmp_path / "trace.jsonl")[-1]
    assert (line["method"], line["route"], line["model_key"]) == (
        "explicit", "model:named", "named")
    with pytest.raises(QueryError, match="model 'nowhere' is not a key of profile 'test'"):
        d.dispatch("hi", model="nowhere")
