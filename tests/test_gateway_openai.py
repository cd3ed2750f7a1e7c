"""The gateway speaks OpenAI's Chat Completions: the official `openai` SDK (sync, async,
streaming) and curl get routed answers from the real local model, with the decision in the
response headers, usage in the final stream chunk, and OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from semroute.gateway import create_app
from tests.dispatch_support import live_anthropic, live_openai, shared_index, write_set
from tests.support.gateway import RunningGateway, run_gateway
from tests.support.llm_server import LLMServer

CODE_QUERY = "write a python function to sort a list"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            llm_server: LLMServer) -> Iterator[RunningGateway]:
    """TINY_ROUTES (greet, code) all on `fast` (llama-server through the OpenAI SDK); `backup`
    is the same server through the Anthropic SDK, reachable by naming it."""
    root = tmp_path_factory.mktemp("gateway-openai")
    index = shared_index(root)
    routes = write_set(root / "served", {"fast": live_openai(llm_server),
                                         "backup": live_anthropic(llm_server)}, ["fast"])
    gw = run_gateway(create_app(routes, index))
    yield gw
    gw.stop()


def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.openai_base_url, api_key="unused", max_retries=0)


def test_sync_sdk_gets_a_routed_answer_with_the_decision_headers(gateway: RunningGateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="semroute", messages=[{"role": "user", "content": CODE_QUERY}], max_tokens=12,
        temperature=0)
    done = raw.parse()
    assert done.choices[0].message.content
    assert done.choices[0].finish_reason in ("stop", "length")
    assert done.usage is not None and done.usage.prompt_tokens > 0
    assert done.usage.completion_tokens > 0
    h = raw.headers
    assert h["x-semroute-route"] == "code" and h["x-semroute-method"] == "index"
    assert h["x-semroute-model"] == "fast"
    assert float(h["x-semroute-score"]) > 0 and float(h["x-semroute-margin"]) > 0
    assert len(h["x-semroute-request-id"]) == 32
    assert done.id == f"chatcmpl-{h['x-semroute-request-id']}"


def test_content_parts_and_system_messages_are_accepted(gateway: RunningGateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="semroute", max_tokens=8,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "hello, how are you"}]}])
    assert raw.headers["x-semroute-route"] == "greet"
    assert raw.parse().choices[0].message.content


def test_async_sdk(gateway: RunningGateway) -> None:
    async def ask() -> list[str]:
        c = openai.AsyncOpenAI(base_url=gateway.openai_base_url, api_key="unused", max_retries=0)
        async with c:
            answers = await asyncio.gather(*[c.chat.completions.create(
                model="semroute", messages=[{"role": "user", "content": q}], max_tokens=8)
                for q in (CODE_QUERY, "good morning friend")])
        return [a.choices[0].message.content or "" for a in answers]

    assert all(asyncio.run(ask()))


def test_streaming_puts_usage_in_the_final_chunk(gateway: RunningGateway) -> None:
    with client(gateway).chat.completions.with_streaming_response.create(
            model="semroute", messages=[{"role": "user", "content": CODE_QUERY}],
            max_tokens=12, stream=True, stream_options={"include_usage": True}) as raw:
        assert raw.headers["x-semroute-route"] == "code"
        assert raw.headers["content-type"].startswith("text/event-stream")
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 0
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason in ("stop", "length")


def test_streaming_without_include_usage_sends_no_usage(gateway: RunningGateway) -> None:
    chunks = list(client(gateway).chat.completions.create(
        model="semroute", messages=[{"role": "user", "content": "hi there"}], max_tokens=6,
        stream=True))
    assert chunks and all(c.usage is None and c.choices for c in chunks)


def test_a_catalogue_key_or_model_id_is_sent_there_without_routing(gateway: RunningGateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="backup", messages=[{"role": "user", "content": CODE_QUERY}], max_tokens=8)
    assert raw.headers["x-semroute-method"] == "explicit"
    assert raw.headers["x-semroute-model"] == "backup"  # llama-server via the Anthropic SDK
    assert raw.headers["x-semroute-route"] == "model:backup"
    assert raw.parse().choices[0].message.content
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="local", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert raw.headers["x-semroute-method"] == "explicit"
    assert raw.headers["x-semroute-model"] in ("fast", "backup")  # both serve model id local


def test_models_lists_semroute_and_the_catalogue_keys(gateway: RunningGateway) -> None:
    ids = [m.id for m in client(gateway).models.list()]
    assert ids[0] == "semroute" and sorted(ids[1:]) == ["backup", "fast"]


def test_unknown_model_is_a_404_in_openai_format(gateway: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(gateway).chat.completions.create(
            model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}])
    err = caught.value.body
    assert isinstance(err, dict)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "gpt-nonexistent" in err["message"] and "GET /v1/models" in err["message"]


def test_a_bad_body_is_a_400_naming_the_field(gateway: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(
            model="semroute", messages=[{"role": "robot", "content": "hi"}])
    err = caught.value.body
    assert isinstance(err, dict) and err["type"] == "invalid_request_error"
    assert err["param"] == "messages[0].role", err
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="semroute", messages=[])
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "messages"


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "60", *args], capture_output=True,
                          text=True, check=True)


def test_curl_gets_an_answer_and_the_headers(gateway: RunningGateway, tmp_path: Path) -> None:
    body = json.dumps({"model": "semroute", "max_tokens": 8,
                       "messages": [{"role": "user", "content": CODE_QUERY}]})
    headers = tmp_path / "headers.txt"
    out = curl("-D", str(headers), "-H", "content-type: application/json", "-d", body,
               f"{gateway.openai_base_url}/chat/completions")
    answer = json.loads(out.stdout)
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]
    head = headers.read_text().lower()
    assert "x-semroute-route: code" in head and "x-semroute-method: index" in head


def test_curl_streams_server_sent_events_ending_in_done(gateway: RunningGateway) -> None:
    body = json.dumps({"model": "semroute", "max_tokens": 8, "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "hello, how are you"}]})
    out = curl("-N", "-H", "content-type: application/json", "-d", body,
               f"{gateway.openai_base_url}/chat/completions")
    frames = [ln.removeprefix("data: ") for ln in out.stdout.splitlines() if ln]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["usage"]["completion_tokens"] > 0
