"""Adapter for the Anthropic Messages API (Anthropic itself, llama-server's /v1/messages).

Constrained output forces a tool whose input schema is an enum of the labels. Servers that
answer a forced tool with plain text (llama-server with small models) are handled by parsing
the text for a label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import anthropic

from semroute.config import Usage
from semroute.providers.base import Provider
from semroute.providers.clients import POOL_LIMITS
from semroute.providers.errors import SdkErrors
from semroute.providers.request import (
    ChatRequest,
    Content,
    label_schema,
    merge_extra,
    post_arguments,
)
from semroute.providers.streaming import StreamDelta
from semroute.providers.tools import ToolCall, ToolCallDelta, ToolChoice, arguments_object

MESSAGES_PATH = "/v1/messages"
TOOL_NAME = "choose_label"
BAD_ID = re.compile(r"[^a-zA-Z0-9_-]")  # the Messages API takes tool_use ids of these only
DATA_URL = re.compile(r"data:(?P<media_type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider(Provider[anthropic.Anthropic, anthropic.AsyncAnthropic]):
    """Messages through the official `anthropic` SDK (its generic `post`, reading the response
    and each stream event as plain JSON: see `post_arguments`)."""

    name = "anthropic"
    default_key_env = "ANTHROPIC_API_KEY"
    sdk_errors = SdkErrors(
        status=anthropic.APIStatusError,
        timeout=anthropic.APITimeoutError,
        connection=anthropic.APIConnectionError,
        base=anthropic.AnthropicError,
    )
    structured_modes = ("auto", "tool")

    def _base_url(self) -> str | None:
        # The SDK appends /v1/messages itself; accept catalogue URLs written with /v1.
        url = self.spec.base_url
        return url.rstrip("/").removesuffix("/v1") if url else None

    def _new_client(self, api_key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=api_key, base_url=self._base_url(), max_retries=0,
                                   http_client=anthropic.DefaultHttpxClient(limits=POOL_LIMITS))

    def _new_async_client(self, api_key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=api_key, base_url=self._base_url(), max_retries=0,
            http_client=anthropic.DefaultAioHttpClient(limits=POOL_LIMITS))

    def _build(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.spec.model,
            "messages": anthropic_messages(request.messages),
            "max_tokens": request.max_tokens,
        }
        if request.system:
            kwargs["system"] = request.system
        if request.temperature is not None:
            # This SDK's create() has no `temperature` parameter; the API still takes it.
            kwargs["extra_body"] = {"temperature": request.temperature}
        if request.labels:
            kwargs["tools"] = [
                {
                    "name": TOOL_NAME,
                    "description": "Answer with exactly one of the allowed labels.",
                    "input_schema": label_schema(request.labels),
                }
            ]
            kwargs["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        elif request.tools:
            kwargs["tools"] = [
                {"name": t.name, **({"description": t.description} if t.description else {}),
                 "input_schema": dict(t.parameters)}
                for t in request.tools
            ]
        if request.tool_choice is not None and request.tools and not request.labels:
            kwargs["tool_choice"] = anthropic_tool_choice(request.tool_choice)
        if request.stop:
            kwargs["stop_sequences"] = list(request.stop)
        if stream:
            kwargs["stream"] = True
        return merge_extra(kwargs, request.extra)

    def _create(self, client: anthropic.Anthropic, kwargs: dict[str, Any]) -> Any:
        body, options = post_arguments(kwargs)
        return client.post(MESSAGES_PATH, body=body, options=options, cast_to=object,
                           stream=bool(body.get("stream")), stream_cls=anthropic.Stream[object])

    async def _acreate(self, client: anthropic.AsyncAnthropic, kwargs: dict[str, Any]) -> Any:
        body, options = post_arguments(kwargs)
        return await client.post(MESSAGES_PATH, body=body, options=options, cast_to=object,
                                 stream=bool(body.get("stream")),
                                 stream_cls=anthropic.AsyncStream[object])

    def _parse(
        self, response: dict[str, Any], request: ChatRequest
    ) -> tuple[str, str | None, Usage, str | None, tuple[ToolCall, ...]]:
        content = response.get("content")
        if not isinstance(content, list):
            raise ValueError("the response has no content list")
        parts: list[str] = []
        calls: list[ToolCall] = []
        for block in content:
            kind = block.get("type")
            if kind == "text":
                parts.append(block.get("text") or "")
            elif kind == "tool_use" and request.labels:  # our label tool: its input
                parts.append(json.dumps(block.get("input")))
            elif kind == "tool_use":
                calls.append(ToolCall(block.get("id") or f"call_{len(calls)}", block["name"],
                                      json.dumps(block.get("input") or {})))
        usage = response.get("usage") or {}
        tokens = Usage(_input_tokens(usage) or 0, usage.get("output_tokens") or 0)
        return ("".join(parts), response.get("model"), tokens,
                _finish(response.get("stop_reason")), tuple(calls))

    def _delta(self, event: dict[str, Any], request: ChatRequest) -> StreamDelta:
        kind = event.get("type")
        if kind == "message_start":
            msg = event.get("message") or {}
            usage = msg.get("usage") or {}
            return StreamDelta(model=msg.get("model"), input_tokens=_input_tokens(usage),
                               output_tokens=usage.get("output_tokens"))
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use" or request.labels:
                return StreamDelta()
            return StreamDelta(tool_calls=[
                ToolCallDelta(event.get("index", 0), block.get("id"), block.get("name"))])
        if kind == "content_block_delta":
            d = event.get("delta") or {}
            if d.get("type") == "text_delta":
                return StreamDelta(text=d.get("text"))
            if d.get("type") == "input_json_delta" and request.labels:  # label tool: as text
                return StreamDelta(text=d.get("partial_json"))
            if d.get("type") == "input_json_delta":
                return StreamDelta(tool_calls=[
                    ToolCallDelta(event.get("index", 0), arguments=d.get("partial_json"))])
        if kind == "message_delta":
            usage = event.get("usage") or {}
            return StreamDelta(
                input_tokens=_input_tokens(usage),
                output_tokens=usage.get("output_tokens"),
                finish_reason=_finish((event.get("delta") or {}).get("stop_reason")),
            )
        return StreamDelta()


def anthropic_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral messages (tools.py) as the Messages API takes them: assistant tool calls as
    `tool_use` blocks after the text; tool results as `tool_result` blocks opening a user
    turn (consecutive results and the user text after them share that turn)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = anthropic_content(m["content"])
        if m["role"] == "tool":
            block: dict[str, Any] = {"type": "tool_result",
                                     "tool_use_id": BAD_ID.sub("_", m["tool_call_id"]),
                                     "content": content}
            if m.get("is_error"):
                block["is_error"] = True
            if out and out[-1]["role"] == "user" and _results_only(out[-1]["content"]):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        calls: tuple[ToolCall, ...] = m.get("tool_calls", ())
        if calls:
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            content = [b for b in blocks if b.get("type") != "text" or b.get("text")] + [
                {"type": "tool_use", "id": BAD_ID.sub("_", c.id), "name": c.name,
                 "input": arguments_object(c.arguments)} for c in calls]
        if m["role"] == "user" and out and out[-1]["role"] == "user" and _results_only(
                out[-1]["content"]):  # the user's words after the results: the same turn
            extra = [{"type": "text", "text": content}] if isinstance(content, str) else content
            out[-1]["content"].extend(extra)
            continue
        out.append({"role": m["role"], "content": content})
    return out


def _results_only(content: Any) -> bool:
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


def anthropic_tool_choice(choice: ToolChoice) -> dict[str, Any]:
    """`tool_choice` as the Messages API takes it (`required` is its `any`)."""
    kind = {"required": "any"}.get(choice.mode, choice.mode)
    out: dict[str, Any] = {"type": kind}
    if choice.mode == "tool":
        out["name"] = choice.name
    if choice.parallel is False and choice.mode != "none":
        out["disable_parallel_tool_use"] = True
    return out


def anthropic_content(content: Content) -> Content:
    """Content as the Messages API takes it: text parts are already Anthropic text blocks;
    OpenAI `image_url` parts (data: or http(s) URLs) become image blocks; others pass."""
    if isinstance(content, str):
        return content
    return [_anthropic_part(p) for p in content]


def _anthropic_part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") != "image_url":
        return part
    image = part.get("image_url")
    url = str(image.get("url") if isinstance(image, dict) else image)
    data = DATA_URL.fullmatch(url)
    if data:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": data["media_type"], "data": data["data"]},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _input_tokens(usage: dict[str, Any]) -> int | None:
    """Anthropic counts prompt-cache reads and writes apart from `input_tokens`; add them up."""
    base = usage.get("input_tokens")
    if not isinstance(base, int):
        return None  # e.g. a message_delta that only reports output tokens
    cached = (usage.get(n) for n in ("cache_read_input_tokens", "cache_creation_input_tokens"))
    return base + sum(c for c in cached if isinstance(c, int))


def _finish(reason: str | None) -> str | None:
    return FINISH.get(reason, reason) if reason else None
