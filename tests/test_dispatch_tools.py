"""Tool use in the library: `dispatch(..., tools=, tool_choice=, stop=)` against loopback
upstreams of both wire formats (tests/support/tool_turns.py). The model's calls come back
in `Response.tool_calls` (whole or at the end of a stream, assembled from fragments), the
trace keeps only their names and count, a tool result routes nowhere (the user's question
does), and a cascade accepts a tool-call answer instead of escalating."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.config import ModelSpec
from semroute.dispatching import Dispatcher
from semroute.errors import StreamInterruptedError
from semroute.providers import Tool, ToolCall, ToolCallDelta, make_provider, neutral_messages
from semroute.telemetry import read_trace
from tests.dispatch_support import entry, load, shared_index, write_set
from tests.support.faults import FaultyServer

ASK = "what's the weather like in Paris today, do I need an umbrella"
WEATHER = Tool("get_weather", "The weather in a city.",
               {"type": "object", "properties": {"city": {"type": "string"}}})
PARIS = '{"city": "Paris"}'


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("tools"))


@pytest.fixture
def upstream() -> Iterator[FaultyServer]:
    with FaultyServer("up", {"ok": 1.0}) as server:
        yield server


def dispatcher(tmp_path: Path, index: Path, models: dict[str, dict[str, Any]],
               chain: list[str], **route: Any) -> Dispatcher:
    routes = write_set(tmp_path / "routes", models, chain)
    if route:
        for f in routes.glob("*.yaml"):
            if f.name != "models.yaml":
                f.write_text(yaml.safe_dump({**yaml.safe_load(f.read_text()), **route}))
    return Dispatcher(load(routes, index, classifier=False), trace=tmp_path / "trace.jsonl")


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_dispatch_returns_the_models_tool_calls_and_traces_only_their_names(
        tmp_path: Path, index: Path, upstream: FaultyServer, flavour: str) -> None:
    d = dispatcher(tmp_path, index, {"m": entry(flavour, upstream.base_url)}, ["m"])
    r = d.dispatch(ASK, tools=[WEATHER], tool_choice="required", stop=["END"])
    prefix = "call_" if flavour == "openai" else "toolu_"
    assert r.tool_calls == (ToolCall(f"{prefix}01", "get_weather", PARIS),)
    assert r.finish_reason == "tool_calls"
    assert r.text == ("" if flavour == "openai" else "Let me check.")
    body = upstream.bodies[-1]
    if flavour == "openai":
        assert (body["tool_choice"], body["stop"]) == ("required", ["END"])
        assert body["tools"][0]["function"]["name"] == "get_weather"
    else:
        assert (body["tool_choice"], body["stop_sequences"]) == ({"type": "any"}, ["END"])
        assert body["tools"][0]["input_schema"] == WEATHER.parameters
    [line] = read_trace(tmp_path / "trace.jsonl")
    assert line["tool_calls"] == {"count": 1, "names": ["get_weather"]}
    assert "Paris" not in json.dumps(line), "never the arguments"


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_a_streamed_answer_assembles_parallel_calls_from_fragments(
        tmp_path: Path, index: Path, flavour: str) -> None:
    with FaultyServer("up", {"ok": 1.0}, tool_calls=2) as up:
        d = dispatcher(tmp_path, index, {"m": entry(flavour, up.base_url)}, ["m"])
        with d.dispatch(ASK, tools=[WEATHER], stream=True) as r:
            items = list(r.events())

        async def astream() -> tuple[list[str], tuple[ToolCall, ...]]:
            ar = await d.adispatch(ASK, tools=[WEATHER], stream=True)
            got = [c async for c in ar]
            return got, ar.tool_calls

        achunks, acalls = asyncio.run(astream())
    chunks = [i for i in items if isinstance(i, str)]
    fragments = [(i.index, i.name, i.arguments) for i in items if isinstance(i, ToolCallDelta)]
    assert chunks == achunks == ([] if flavour == "openai" else ["Let me check."])
    # numbered 0, 1 whatever the upstream's block indexes; name first, then two fragments
    assert [(n, name) for n, name, _ in fragments] == [
        (0, "get_weather"), (0, None), (0, None), (1, "get_weather"), (1, None), (1, None)]
    assert "".join(a or "" for n, _, a in fragments if n == 1) == PARIS
    assert r.stream_state == "complete" and r.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in r.tool_calls] == [
        ("get_weather", {"city": "Paris"})] * 2
    assert len({c.id for c in r.tool_calls}) == 2
    assert acalls == r.tool_calls
    assert read_trace(tmp_path / "trace.jsonl")[0]["tool_calls"]["count"] == 2


def test_the_tool_loop_in_the_library_routes_on_the_users_question(
        tmp_path: Path, index: Path, upstream: FaultyServer) -> None:
    d = dispatcher(tmp_path, index, {"m": entry("anthropic", upstream.base_url)}, ["m"])
    history: list[dict[str, Any]] = [{"role": "user", "content": ASK}]
    first = d.dispatch(history, tools=[WEATHER])
    history += [{"role": "assistant", "content": first.text, "tool_calls": first.tool_calls},
                {"role": "tool", "tool_call_id": first.tool_calls[0].id,
                 "content": "rain, 11 degrees"}]
    final = d.dispatch(history, tools=[WEATHER])
    assert final.text == "up [ok] tool said: rain, 11 degrees END" and not final.tool_calls
    assert final.decision.query == ASK and final.route == first.route
    sent = upstream.bodies[-1]["messages"]
    assert sent[-2]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
         "input": {"city": "Paris"}}]
    assert sent[-1] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "rain, 11 degrees"}]}


def test_a_cascade_accepts_a_tool_call_instead_of_escalating(
        tmp_path: Path, index: Path, upstream: FaultyServer) -> None:
    with FaultyServer("strong", {"ok": 1.0}) as strong:
        d = dispatcher(tmp_path, index, {"cheap": entry("openai", upstream.base_url),
                                         "strong": entry("openai", strong.base_url)},
                       ["cheap"], cascade={"models": ["cheap", "strong"],
                                           "gates": ["non_empty", "not_refusal"]})
        r = d.dispatch(ASK, tools=[WEATHER])
        assert not strong.hits, "the strong model was never asked"
        streamed = d.dispatch(ASK, tools=[WEATHER], stream=True)  # gated: cheap, whole
        items = list(streamed.events())
        assert not strong.hits
    assert r.model_key == "cheap" and r.tool_calls[0].name == "get_weather"
    assert r.cascade is not None and r.cascade.accepted
    assert "tool call" in r.cascade.steps[0].why
    assert items == [ToolCallDelta(0, "call_01", "get_weather", PARIS)]


def test_a_parallel_route_picks_among_tool_call_answers_by_what_they_say(
        tmp_path: Path, index: Path, upstream: FaultyServer) -> None:
    with FaultyServer("two", {"ok": 1.0}, tool_calls=2) as two:
        d = dispatcher(tmp_path, index, {"gpt": entry("openai", two.base_url),
                                         "claude": entry("anthropic", upstream.base_url)},
                       ["gpt"], parallel={"models": ["gpt", "claude"], "pick": "longest"})
        r = d.dispatch(ASK, tools=[WEATHER])
    # gpt has no text but two calls; claude says "Let me check." and makes one call: the
    # picker sees each answer's calls as text, so gpt's is the longer answer
    assert r.model_key == "gpt" and r.text == "" and len(r.tool_calls) == 2
    assert r.parallel is not None and r.parallel.answered == ("gpt", "claude")
    assert "characters" in r.parallel.reason


def test_both_wire_shapes_of_a_tool_loop_read_the_same() -> None:
    openai_form = [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function",
             "function": {"name": "get_weather", "arguments": PARIS}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "rain"},
        {"role": "user", "content": "thanks, and tomorrow?"}]
    anthropic_form = [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "rain"},
                                     {"type": "text", "text": "thanks, and tomorrow?"}]}]
    neutral = neutral_messages(openai_form)
    assert neutral_messages(anthropic_form) == [
        *neutral[:3], {"role": "user", "content": [
            {"type": "text", "text": "thanks, and tomorrow?"}]}]
    assert neutral[1]["tool_calls"] == (ToolCall("t1", "get_weather", PARIS),)
    assert neutral[2] == {"role": "tool", "tool_call_id": "t1", "content": "rain",
                          "is_error": False}


def test_a_provider_translates_openai_shaped_history_for_anthropic(
        upstream: FaultyServer) -> None:
    spec = ModelSpec("m", "anthropic", "claude-x", base_url=upstream.base_url)
    done = make_provider(spec).complete([
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call.1", "type": "function",
             "function": {"name": "get_weather", "arguments": PARIS}}]},
        {"role": "tool", "tool_call_id": "call.1", "content": "rain"},
        {"role": "user", "content": "and tomorrow?"}], tools=[WEATHER], max_tokens=32)
    assert done.text == "up [ok] tool said: rain END"  # the result reached it
    sent = upstream.bodies[-1]["messages"]
    assert sent[1]["content"] == [{"type": "tool_use", "id": "call_1", "name": "get_weather",
                                   "input": {"city": "Paris"}}]  # an id the API accepts
    assert sent[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "rain"},
        {"type": "text", "text": "and tomorrow?"}]}


def test_an_error_result_and_a_tool_choice_without_tools_in_chat_completions(
        upstream: FaultyServer) -> None:
    spec = ModelSpec("m", "openai", "gpt-x", base_url=f"{upstream.base_url}/v1")
    done = make_provider(spec).complete([
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "is_error": True, "content": [
                                          {"type": "text", "text": "city unknown"}]}]}],
        tool_choice="none", max_tokens=32)
    assert done.text == "up [ok] tool said: Error: city unknown END"
    body = upstream.bodies[-1]
    assert "tool_choice" not in body and "tools" not in body  # no tools: nothing to choose
    assert body["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "get_weather",
                                                      "arguments": "{}"}}]}


def test_a_stream_cut_inside_a_tool_call_is_interrupted_not_half_returned(
        tmp_path: Path, index: Path) -> None:
    with FaultyServer("cut", {"ok": 1.0}, script=["cut_after_text"]) as cut:
        d = dispatcher(tmp_path, index, {"m": entry("openai", cut.base_url)}, ["m"])
        r = d.dispatch(ASK, tools=[WEATHER], stream=True)  # primed on the call's name
        got: list[Any] = []
        with pytest.raises(StreamInterruptedError):
            for item in r.events():
                got.append(item)
    assert [g.name for g in got] == ["get_weather", None]  # the name, one fragment
    assert r.stream_state == "interrupted" and r.tool_calls == ()
