"""Tool use through the gateway, end to end: the official `openai` and `anthropic` SDKs send
tools to `semroute serve`, which sends them on to a loopback upstream speaking either wire
format (tests/support/tool_turns.py); the upstream's tool calls come back in the client's
format, whole or streamed, and the tool's result goes back for the final answer. Stop
sequences are translated the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from semroute.gateway import create_app
from tests.dispatch_support import entry, shared_index, write_set
from tests.support.faults import FaultyServer
from tests.support.gateway import RunningGateway, run_gateway

ASK = "what's the weather like in Paris today, do I need an umbrella"
WEATHER_OPENAI = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
WEATHER_ANTHROPIC = [{"name": "get_weather", "description": "The weather in a city.",
                      "input_schema": {"type": "object",
                                       "properties": {"city": {"type": "string"}},
                                       "required": ["city"]}}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultyServer]:
    """One loopback server answering both wire formats, tool-aware."""
    with FaultyServer("up", {"ok": 1.0}) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            upstream: FaultyServer) -> Iterator[RunningGateway]:
    """Every route's chain is `oai` (the upstream through the OpenAI SDK); `ant` is the same
    upstream through the Anthropic SDK, reached by naming it."""
    root = tmp_path_factory.mktemp("gateway-tools")
    routes = write_set(root / "served", {"oai": entry("openai", upstream.base_url),
                                         "ant": entry("anthropic", upstream.base_url)},
                       ["oai"])
    gw = run_gateway(create_app(routes, shared_index(root)))
    yield gw
    gw.stop()


def oai(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.openai_base_url, api_key="x", max_retries=0)


def ant(gw: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0)


def sent(upstream: FaultyServer) -> dict[str, Any]:
    return upstream.bodies[-1]


# ---------------------------------------------------------------- one turn


def test_an_openai_client_gets_the_openai_upstreams_tool_calls(
        gateway: RunningGateway, upstream: FaultyServer) -> None:
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model="semroute", messages=[{"role": "user", "content": ASK}], max_tokens=64,
        tools=WEATHER_OPENAI, tool_choice="auto")  # type: ignore[arg-type]
    done = raw.parse()
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
            for c in calls] == [("call_01", "get_weather", {"city": "Paris"})]
    assert raw.headers["x-semroute-model"] == "oai"
    body = sent(upstream)
    assert body["tools"] == WEATHER_OPENAI and body["tool_choice"] == "auto"


def test_an_anthropic_client_is_served_by_an_openai_upstream(
        gateway: RunningGateway, upstream: FaultyServer) -> None:
    msg = ant(gateway).messages.create(
        model="oai", max_tokens=64, messages=[{"role": "user", "content": ASK}],
        tools=WEATHER_ANTHROPIC,  # type: ignore[arg-type]
        tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert msg.stop_reason == "tool_use"
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [
        ("call_01", "get_weather", {"city": "Paris"})]
    assert all(b.type != "text" for b in msg.content)  # it only called the tool
    body = sent(upstream)
    assert body["tools"] == WEATHER_OPENAI  # translated to Chat Completions' shape
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False


def test_an_openai_client_is_served_by_an_anthropic_upstream(
        gateway: RunningGateway, upstream: FaultyServer) -> None:
    done = oai(gateway).chat.completions.create(
        model="ant", messages=[{"role": "user", "content": ASK}], max_tokens=64,
        tools=WEATHER_OPENAI,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."  # the upstream's text, then its call
    call = (choice.message.tool_calls or [])[0]
    assert (call.id, call.function.name) == ("toolu_01", "get_weather")  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    body = sent(upstream)
    assert body["tools"] == WEATHER_ANTHROPIC
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}


# ---------------------------------------------------------------- the whole loop


def test_a_two_turn_tool_loop_with_the_openai_sdk(gateway: RunningGateway,
                                                  upstream: FaultyServer) -> None:
    c = oai(gateway)
    history: list[Any] = [{"role": "user", "content": ASK}]
    first = c.chat.completions.with_raw_response.create(
        model="semroute", messages=history, max_tokens=64, tools=WEATHER_OPENAI)  # type: ignore[arg-type]
    asked = first.parse().choices[0].message
    call = (asked.tool_calls or [])[0]
    history += [asked.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "rain, 11 degrees"}]
    second = c.chat.completions.with_raw_response.create(
        model="semroute", messages=history, max_tokens=64, tools=WEATHER_OPENAI)  # type: ignore[arg-type]
    final = second.parse().choices[0]
    assert final.finish_reason == "stop" and final.message.tool_calls is None
    assert final.message.content == "up [ok] tool said: rain, 11 degrees END"
    # routed on the user's question both times, not on the tool's output
    assert second.headers["x-semroute-route"] == first.headers["x-semroute-route"]
    body = sent(upstream)
    assert body["messages"][-2]["tool_calls"][0]["id"] == call.id
    assert body["messages"][-1] == {"role": "tool", "tool_call_id": call.id,
                                    "content": "rain, 11 degrees"}


@pytest.mark.parametrize("upstream_model", ["oai", "ant"])
def test_a_two_turn_tool_loop_with_the_anthropic_sdk(gateway: RunningGateway,
                                                     upstream: FaultyServer,
                                                     upstream_model: str) -> None:
    c = ant(gateway)
    history: list[Any] = [{"role": "user", "content": ASK}]
    first = c.messages.create(model=upstream_model, max_tokens=64, messages=history,
                              tools=WEATHER_ANTHROPIC)  # type: ignore[arg-type]
    use = next(b for b in first.content if b.type == "tool_use")
    history += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                              "content": "rain, 11 degrees"}]}]
    final = c.messages.create(model=upstream_model, max_tokens=64, messages=history,
                              tools=WEATHER_ANTHROPIC)  # type: ignore[arg-type]
    assert final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "up [ok] tool said: rain, 11 degrees END"  # type: ignore[union-attr]
    body = sent(upstream)
    if upstream_model == "oai":  # the history, translated to Chat Completions
        assert body["messages"][-2]["tool_calls"][0]["function"] == {
            "name": "get_weather", "arguments": json.dumps({"city": "Paris"})}
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": use.id,
                                        "content": "rain, 11 degrees"}
    else:  # the history as it was sent
        assert body["messages"][-2]["content"][-1]["type"] == "tool_use"
        assert body["messages"][-1]["content"] == [
            {"type": "tool_result", "tool_use_id": use.id, "content": "rain, 11 degrees"}]


# ---------------------------------------------------------------- streams


def test_an_openai_stream_passes_tool_call_fragments_on_as_they_come(
        gateway: RunningGateway) -> None:
    chunks = list(oai(gateway).chat.completions.create(
        model="semroute", messages=[{"role": "user", "content": ASK}], max_tokens=64,
        tools=WEATHER_OPENAI, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}))
    deltas = [d for ch in chunks if ch.choices for d in (ch.choices[0].delta.tool_calls or [])]
    # passed on as they came: the call's id and name, then the upstream's two fragments
    assert [(d.index, d.id, d.function.name) for d in deltas  # type: ignore[union-attr]
            ] == [(0, "call_01", "get_weather"), (0, None, None), (0, None, None)]
    args = "".join(d.function.arguments or "" for d in deltas)  # type: ignore[union-attr]
    assert json.loads(args) == {"city": "Paris"}
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_the_openai_sdks_stream_helper_assembles_the_calls(gateway: RunningGateway) -> None:
    with oai(gateway).chat.completions.stream(
            model="ant", messages=[{"role": "user", "content": ASK}], max_tokens=64,
            tools=WEATHER_OPENAI) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert [(c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
            for c in message.tool_calls or []] == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize("upstream_model", ["oai", "ant"])
def test_an_anthropic_stream_delivers_tool_use_blocks(gateway: RunningGateway,
                                                      upstream_model: str) -> None:
    with ant(gateway).messages.stream(
            model=upstream_model, max_tokens=64, messages=[{"role": "user", "content": ASK}],
            tools=WEATHER_ANTHROPIC) as stream:  # type: ignore[arg-type]
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    use = final.content[-1]
    assert use.type == "tool_use" and (use.name, use.input) == (
        "get_weather", {"city": "Paris"})
    # the arguments arrived in the upstream's two fragments, as input_json_delta events
    assert sum(e.type == "input_json" for e in events) == 2
    texts = [b.text for b in final.content if b.type == "text"]
    assert texts == (["Let me check."] if upstream_model == "ant" else [])


# ---------------------------------------------------------------- stop sequences, errors


def test_stop_sequences_reach_the_model_in_its_own_words(gateway: RunningGateway,
                                                         upstream: FaultyServer) -> None:
    oai(gateway).chat.completions.create(
        model="ant", messages=[{"role": "user", "content": ASK}], max_tokens=8, stop="END")
    assert sent(upstream)["stop_sequences"] == ["END"]
    ant(gateway).messages.create(model="oai", max_tokens=8, stop_sequences=["END", "\n\n"],
                                 messages=[{"role": "user", "content": ASK}])
    assert sent(upstream)["stop"] == ["END", "\n\n"]


def test_a_tool_result_without_its_call_id_is_a_400_naming_it(
        gateway: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai(gateway).chat.completions.create(
            model="semroute", max_tokens=8, messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": ASK},
                {"role": "tool", "content": "rain"}])  # type: ignore[list-item]
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "messages[2]"
    assert "tool_call_id" in error["message"]
    with pytest.raises(anthropic.BadRequestError) as bad:
        ant(gateway).messages.create(model="semroute", max_tokens=8, tools=[
            {"type": "web_search_20250305", "name": "web_search"}],  # type: ignore[list-item]
            messages=[{"role": "user", "content": ASK}])
    assert "tools[0]" in str(bad.value)
