"""Streams and pass-through behind the gateway, against loopback servers: a stream that
breaks after text ends with an in-band error event (both APIs), a client that leaves
mid-stream releases the upstream connection, a failing first model fails over, tools reach
the model as sent, and the caller's user and metadata never do."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai
import pytest
import yaml

from semroute.config import ClientKey
from semroute.errors import GatewayError
from semroute.gateway import ChatCall, create_app, dispatch_options
from tests.dispatch_support import SseServer, entry, shared_index, write_set
from tests.support.gateway import RunningGateway, run_gateway
from tests.support.llm_server import FaultServer

HI = [{"role": "user", "content": "write a python function to sort a list"}]


@dataclass
class Upstreams:
    flaky: FaultServer
    echo: FaultServer
    cut: SseServer
    endless: SseServer


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    u = Upstreams(FaultServer([500]).start(), FaultServer([200]).start(),
                  SseServer(["error_mid"]), SseServer(["endless"]))
    yield u
    u.flaky.stop(), u.echo.stop(), u.cut.stop(), u.endless.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            upstreams: Upstreams) -> Iterator[RunningGateway]:
    """Every route's chain is [flaky (500s), echo (answers)]; `cut`/`cut_a` stream two chunks
    then an error event (OpenAI / Anthropic flavour); `endless` streams until the client
    leaves."""
    root = tmp_path_factory.mktemp("gateway-streams")
    index = shared_index(root)
    routes = write_set(root / "served", {
        "flaky": entry("openai", upstreams.flaky.base_url),
        "echo": entry("openai", upstreams.echo.base_url),
        "cut": entry("openai", upstreams.cut.base_url),
        "cut_a": entry("anthropic", upstreams.cut.base_url),
        "endless": entry("openai", upstreams.endless.base_url)}, ["flaky", "echo"])
    greet = yaml.safe_load((routes / "greet.yaml").read_text())
    greet["rules"] = [{"name": "greeting_task", "metadata": {"task_type": "greeting"}}]
    (routes / "greet.yaml").write_text(yaml.safe_dump(greet))
    gw = run_gateway(create_app(routes, index))
    yield gw
    gw.stop()


def oai(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.openai_base_url, api_key="x", max_retries=0)


def metrics(gw: RunningGateway) -> str:
    with urllib.request.urlopen(f"{gw.base_url}/metrics", timeout=10) as r:
        return str(r.read().decode())


def test_a_failing_first_model_fails_over_and_is_counted(gateway: RunningGateway) -> None:
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model="semroute", messages=HI, max_tokens=8)
    assert raw.headers["x-semroute-model"] == "echo"
    assert raw.parse().choices[0].message.content
    assert 'semroute_failovers_total{route="code"} 1.0' in metrics(gateway)


def test_tools_reach_the_model_and_user_and_metadata_do_not(gateway: RunningGateway,
                                                            upstreams: Upstreams) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    oai(gateway).chat.completions.create(
        model="echo", messages=HI, max_tokens=8, tools=tools, tool_choice="auto",
        user="alice", metadata={"task_type": "codegen"}, temperature=0.5)
    sent = upstreams.echo.bodies[-1]
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["temperature"] == 0.5
    assert "user" not in sent and "metadata" not in sent


def test_an_openai_stream_that_breaks_after_text_ends_with_an_error_event(
        gateway: RunningGateway) -> None:
    got: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in oai(gateway).chat.completions.create(model="cut", messages=HI,
                                                          max_tokens=8, stream=True):
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(got) == "Hello from"
    assert "injected stream fault" in str(caught.value)
    assert 'semroute_requests_total{api="openai",status="stream_interrupted"}' in \
        metrics(gateway)


def test_an_anthropic_stream_that_breaks_after_text_ends_with_an_error_event(
        gateway: RunningGateway) -> None:
    c = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0)
    texts: list[str] = []
    with pytest.raises(anthropic.APIError) as caught, c.messages.stream(
            model="cut_a", max_tokens=8, messages=HI) as stream:
        texts.extend(stream.text_stream)
    assert "".join(texts) == "Hello from"
    assert "injected stream fault" in str(caught.value)


def test_a_client_leaving_mid_stream_releases_the_upstream(gateway: RunningGateway,
                                                           upstreams: Upstreams) -> None:
    stream = oai(gateway).chat.completions.create(model="endless", messages=HI,
                                                  max_tokens=8, stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert upstreams.endless.disconnected.wait(10), "the upstream stream was left open"
    deadline = time.monotonic() + 10
    while 'status="client_closed"' not in metrics(gateway):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "\nsemroute_in_flight 0.0\n" in metrics(gateway)


def test_request_metadata_from_body_or_headers_reaches_the_route_rules(
        gateway: RunningGateway) -> None:
    c = oai(gateway)
    plain = c.chat.completions.with_raw_response.create(model="semroute", messages=HI,
                                                        max_tokens=4)
    assert plain.headers["x-semroute-route"] == "code"
    by_body = c.chat.completions.with_raw_response.create(
        model="semroute", messages=HI, max_tokens=4, metadata={"task_type": "greeting"})
    by_header = c.chat.completions.with_raw_response.create(
        model="semroute", messages=HI, max_tokens=4,
        extra_headers={"x-semroute-meta-task_type": "greeting"})
    for raw in (by_body, by_header):
        assert (raw.headers["x-semroute-route"], raw.headers["x-semroute-method"]) == (
            "greet", "rule")


def test_one_function_maps_fields_and_headers_to_dispatch_options() -> None:
    call = ChatCall(api="openai", model="semroute", messages=HI, system=None, max_tokens=8,
                    stream=False, user="body-user", metadata={"task_type": "codegen"})
    key = ClientKey(name="team", sha256="a" * 64)
    assert dispatch_options(call, {}, key) == {
        "metadata": {"task_type": "codegen"}, "conversation_id": None, "user": "body-user",
        "client_key": "team"}
    assert dispatch_options(call, {}, None) == {
        "metadata": {"task_type": "codegen"}, "conversation_id": None, "user": "body-user"}
    headers = {"x-semroute-conversation-id": "conv-1", "x-semroute-user": "header-user",
               "x-semroute-meta-tier": "gold", "x-semroute-step": "planning",
               "x-semroute-max-cost-usd": "0.02"}
    assert dispatch_options(call, headers, key) == {
        "metadata": {"task_type": "codegen", "tier": "gold"}, "conversation_id": "conv-1",
        "user": "header-user", "step": "planning", "max_cost_usd": 0.02, "client_key": "team"}
    for bad in ("0", "-1", "nan", "inf", "a lot"):
        with pytest.raises(GatewayError, match="x-semroute-max-cost-usd"):
            dispatch_options(call, {"x-semroute-max-cost-usd": bad}, key)


def test_opentelemetry_spans_when_an_exporter_is_configured(tmp_path: Path,
                                                            upstreams: Upstreams) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    routes = write_set(tmp_path / "served", {
        "flaky": entry("openai", upstreams.flaky.base_url),
        "echo": entry("openai", upstreams.echo.base_url)}, ["flaky", "echo"])
    gw = run_gateway(create_app(routes, shared_index(tmp_path), span_exporter=exporter))
    try:
        raw = oai(gw).chat.completions.with_raw_response.create(model="semroute", messages=HI,
                                                                 max_tokens=8)
    finally:
        gw.stop()
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name != "semroute.model_call"}
    calls = [s for s in exporter.get_finished_spans() if s.name == "semroute.model_call"]
    root, decide = spans["semroute.request"], spans["semroute.decide"]
    assert root.attributes is not None and decide.parent is not None
    assert root.attributes["semroute.request_id"] == raw.headers["x-semroute-request-id"]
    assert (root.attributes["semroute.route"], root.attributes["semroute.method"]) == (
        "code", "index")
    assert decide.parent.span_id == root.context.span_id
    assert [(c.attributes or {}).get("semroute.model_key") for c in calls] == [
        "flaky", "flaky", "echo"]
    assert all(c.parent is not None and c.parent.span_id == root.context.span_id
               for c in calls)
    assert decide.end_time is not None and calls[0].start_time is not None
    assert decide.end_time <= calls[0].start_time  # laid end to end
