"""Adapter for the Anthropic Messages API (Anthropic itself, llama-server's /v1/messages).

Constrained output forces a tool whose input schema is an enum of the labels. Servers that
answer a forced tool with plain text (llama-server with small models) are handled by parsing
the text for a label.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anthropic
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent

from semroute.config import Usage
from semroute.providers.base import Provider, post_arguments
from semroute.providers.errors import SdkErrors
from semroute.providers.request import (
    ChatRequest,
    Content,
    label_schema,
    merge_extra,
)
from semroute.providers.streaming import StreamDelta

MESSAGES_PATH = "/v1/messages"
TOOL_NAME = "choose_label"
DATA_URL = re.compile(r"data:(?P<media_type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider(Provider[anthropic.Anthropic, anthropic.AsyncAnthropic]):
    """Messages through the official `anthropic` SDK (its generic `post`, with the SDK's own
    response and stream types: see `post_arguments`)."""

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
        return anthropic.Anthropic(api_key=api_key, base_url=self._base_url(), max_retries=0)

    def _new_async_client(self, api_key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(api_key=api_key, base_url=self._base_url(), max_retries=0)

    def _build(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [
                {**m, "content": anthropic_content(m["content"])} for m in request.messages
            ],
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
        if stream:
            kwargs["stream"] = True
        return merge_extra(kwargs, request.extra)

    def _create(self, client: anthropic.Anthropic, kwargs: dict[str, Any]) -> Any:
        body, options = post_arguments(kwargs)
        return client.post(MESSAGES_PATH, body=body, options=options, cast_to=AnthropicMessage,
                           stream=bool(body.get("stream")),
                           stream_cls=anthropic.Stream[RawMessageStreamEvent])

    async def _acreate(self, client: anthropic.AsyncAnthropic, kwargs: dict[str, Any]) -> Any:
        body, options = post_arguments(kwargs)
        return await client.post(MESSAGES_PATH, body=body, options=options,
                                 cast_to=AnthropicMessage, stream=bool(body.get("stream")),
                                 stream_cls=anthropic.AsyncStream[RawMessageStreamEvent])

    def _parse(self, response: Any) -> tuple[str, str | None, Usage, str | None]:
        parts: list[str] = []
        for block in response.content:
            if block.type == "text":
                parts.append(block.text)
            elif block.type == "tool_use":
                parts.append(json.dumps(block.input))
        usage = Usage(_input_tokens(response.usage) or 0, response.usage.output_tokens or 0)
        return "".join(parts), response.model, usage, _finish(response.stop_reason)

    def _delta(self, event: Any) -> StreamDelta:
        kind = event.type
        if kind == "message_start":
            msg = event.message
            return StreamDelta(
                model=msg.model,
                input_tokens=_input_tokens(msg.usage),
                output_tokens=msg.usage.output_tokens,
            )
        if kind == "content_block_delta":
            d = event.delta
            if d.type == "text_delta":
                return StreamDelta(text=d.text)
            if d.type == "input_json_delta":
                return StreamDelta(text=d.partial_json)
        if kind == "message_delta":
            usage = event.usage
            return StreamDelta(
                input_tokens=_input_tokens(usage),
                output_tokens=usage.output_tokens,
                finish_reason=_finish(event.delta.stop_reason),
            )
        return StreamDelta()


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


def _input_tokens(usage: Any) -> int | None:
    """Anthropic counts prompt-cache reads and writes apart from `input_tokens`; add them up."""
    base = getattr(usage, "input_tokens", None)
    if not isinstance(base, int):
        return None  # e.g. a message_delta that only reports output tokens
    cached = (
        getattr(usage, n, None) for n in ("cache_read_input_tokens", "cache_creation_input_tokens")
    )
    return base + sum(c for c in cached if isinstance(c, int))


def _finish(reason: str | None) -> str | None:
    return FINISH.get(reason, reason) if reason else None
