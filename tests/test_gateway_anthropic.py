"""The gateway speaks Anthropic's Messages API: the official `anthropic` SDK (sync, async,
streaming events) gets routed answers from the real local model with the decision headers,
and errors come back in Anthropic's error format."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator

import anthropic
import pytest

from semroute.gateway import create_app
from tests.dispatch_support import live_anthropic, live_openai, shared_index, write_set
from tests.support.gateway import RunningGateway, run_gateway
from tests.support.llm_server import LLMServer

CODE_QUERY = "write a python function to sort a list"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            llm_server: LLMServer) -> Iterator[RunningGateway]:
    """TINY_ROUTES all on `claude` (llama-server through the Anthropic SDK); `gpt` is the same
    server through the OpenAI SDK."""
    root = tmp_path_factory.mktemp("gateway-anthropic")
    index = shared_index(root)
    routes = write_set(root / "served", {"claude": live_anthropic(llm_server),
                                         "gpt": live_openai(llm_server)}, ["claude"])
    gw = run_gateway(create_app(routes, index))
    yield gw
    gw.stop()


def client(gateway: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0)


def test_sync_sdk_gets_a_routed_message_with_the_decision_headers(
        gateway: RunningGateway) -> None:
    raw = client(gateway).messages.with_raw_response.create(
        model="semroute", max_tokens=12, system="Answer in one short sentence.",
        messages=[{"role": "user", "content": CODE_QUERY}])
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    h = raw.headers
    assert (h["x-semroute-route"], h["x-semroute-method"], h["x-semroute-model"]) == (
        "code", "index", "claude")
    assert msg.id == f"msg_{h['x-semroute-request-id']}"


def test_text_blocks_and_a_system_block_list(gateway: RunningGateway) -> None:
    raw = client(gateway).messages.with_raw_response.create(
        model="semroute", max_tokens=8, system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "good morning friend"}]}])
    assert raw.headers["x-semroute-route"] == "greet"
    assert raw.parse().content[0].text


def test_async_sdk(gateway: RunningGateway) -> None:
    async def ask() -> str:
        c = anthropic.AsyncAnthropic(base_url=gateway.base_url, api_key="unused",
                                     max_retries=0)
        async with c:
            msg = await c.messages.create(model="semroute", max_tokens=8,
                                          messages=[{"role": "user", "content": "hi there"}])
        return msg.content[0].text if msg.content[0].type == "text" else ""

    assert asyncio.run(ask())


def test_streaming_events_and_final_usage(gateway: RunningGateway) -> None:
    with client(gateway).messages.stream(
            model="semroute", max_tokens=12,
            messages=[{"role": "user", "content": CODE_QUERY}]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop",
            "message_delta"} <= set(kinds)
    assert final.content[0].type == "text" and final.content[0].text
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_curl_streams_anthropic_events(gateway: RunningGateway) -> None:
    body = json.dumps({"model": "semroute", "max_tokens": 8, "stream": True,
                       "messages": [{"role": "user", "content": "hello, how are you"}]})
    out = subprocess.run(["curl", "-sS", "-N", "--max-time", "60", "-H",
                          "content-type: application/json", "-d", body,
                          f"{gateway.base_url}/v1/messages"],
                         capture_output=True, text=True, check=True).stdout
    events = [ln.removeprefix("event: ") for ln in out.splitlines() if ln.startswith("event:")]
    assert events[0] == "message_start" and events[-1] == "message_stop"


def test_naming_a_model_sends_it_there(gateway: RunningGateway) -> None:
    raw = client(gateway).messages.with_raw_response.create(
        model="gpt", max_tokens=8, messages=[{"role": "user", "content": CODE_QUERY}])
    assert (raw.headers["x-semroute-method"], raw.headers["x-semroute-model"]) == (
        "explicit", "gpt")
    assert raw.parse().content[0].text


def test_errors_are_in_anthropic_format(gateway: RunningGateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(gateway).messages.create(model="claude-nonexistent", max_tokens=8,
                                        messages=[{"role": "user", "content": "hi"}])
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "claude-nonexistent" in body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client(gateway).messages.create(model="semroute", max_tokens=0,
                                        messages=[{"role": "user", "content": "hi"}])
    body = bad.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == "max_tokens"
