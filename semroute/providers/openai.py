"""Adapter for OpenAI-compatible chat completions (OpenAI itself, llama-server, vLLM, ...).

Constrained output uses `response_format` json_schema with an enum (OpenAI enforces it as a
strict structured output, llama-server compiles it to a grammar), or with
`structured="grammar"` llama.cpp's GBNF grammar, which emits the bare label.
"""

from __future__ import annotations

from typing import Any

import openai

from semroute.config import Usage
from semroute.providers.base import Provider
from semroute.providers.clients import POOL_LIMITS
from semroute.providers.errors import SdkErrors
from semroute.providers.request import (
    ChatRequest,
    Content,
    label_grammar,
    label_schema,
    merge_extra,
    message_text,
    post_arguments,
)
from semroute.providers.streaming import StreamDelta
from semroute.providers.tools import ToolCall, ToolCallDelta, ToolChoice

CHAT_PATH = "/chat/completions"


class OpenAIProvider(Provider[openai.OpenAI, openai.AsyncOpenAI]):
    """Chat completions through the official `openai` SDK (its generic `post`, reading the
    response and each stream event as plain JSON: see `post_arguments`)."""

    name = "openai"
    default_key_env = "OPENAI_API_KEY"
    sdk_errors = SdkErrors(
        status=openai.APIStatusError,
        timeout=openai.APITimeoutError,
        connection=openai.APIConnectionError,
        base=openai.OpenAIError,
    )
    structured_modes = ("auto", "json_schema", "grammar")

    def _new_client(self, api_key: str) -> openai.OpenAI:
        return openai.OpenAI(api_key=api_key, base_url=self.spec.base_url, max_retries=0,
                             http_client=openai.DefaultHttpxClient(limits=POOL_LIMITS))

    def _new_async_client(self, api_key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=api_key, base_url=self.spec.base_url, max_retries=0,
                                  http_client=openai.DefaultAioHttpClient(limits=POOL_LIMITS))

    def _build(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(openai_message(m) for m in request.messages)
        kwargs: dict[str, Any] = {
            "model": self.spec.model,
            "messages": messages,
            # OpenAI's own API wants max_completion_tokens (its reasoning models reject
            # max_tokens); OpenAI-compatible servers (base_url set) often know only max_tokens.
            "max_completion_tokens" if self.spec.base_url is None else "max_tokens":
                request.max_tokens,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.labels and self.spec.structured == "grammar":
            kwargs["extra_body"] = {"grammar": label_grammar(request.labels)}
        elif request.labels:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "label",
                    "strict": True,
                    "schema": label_schema(request.labels),
                },
            }
        if request.tools and not request.labels:
            kwargs["tools"] = [{"type": "function", "function": {
                "name": t.name, **({"description": t.description} if t.description else {}),
                "parameters": dict(t.parameters)}} for t in request.tools]
        if request.tool_choice is not None and request.tools and not request.labels:
            kwargs.update(openai_tool_choice(request.tool_choice))
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        return merge_extra(kwargs, request.extra)

    def _create(self, client: openai.OpenAI, kwargs: dict[str, Any]) -> Any:
        body, options = post_arguments(kwargs)
        return client.post(CHAT_PATH, body=body, options=options, cast_to=object,
                           stream=bool(body.get("stream")), stream_cls=openai.Stream[object])

    async def _acreate(self, client: openai.AsyncOpenAI, kwargs: dict[str, Any]) -> Any:
        body, options = post_arguments(kwargs)
        return await client.post(CHAT_PATH, body=body, options=options, cast_to=object,
                                 stream=bool(body.get("stream")),
                                 stream_cls=openai.AsyncStream[object])

    def _parse(
        self, response: dict[str, Any], request: ChatRequest
    ) -> tuple[str, str | None, Usage, str | None, tuple[ToolCall, ...]]:
        choices = response.get("choices")
        if not isinstance(choices, list):
            raise ValueError("the response has no choices")
        choice = choices[0] if choices else {}  # `[]`: nothing generated, an empty answer
        message = choice.get("message") or {}
        calls = tuple(
            ToolCall(c.get("id") or f"call_{i}", c["function"]["name"],
                     c["function"].get("arguments") or "{}")
            for i, c in enumerate(message.get("tool_calls") or [])
            if c.get("function") is not None  # "custom" tools carry no function
        )
        return (message.get("content") or "", response.get("model"),
                _usage(response.get("usage")), choice.get("finish_reason"), calls)

    def _delta(self, event: dict[str, Any], request: ChatRequest) -> StreamDelta:
        delta = StreamDelta(model=event.get("model") or None)
        choices = event.get("choices")
        if choices:
            choice = choices[0]
            d = choice.get("delta") or {}
            delta.text = d.get("content")
            delta.finish_reason = choice.get("finish_reason")
            for i, c in enumerate(d.get("tool_calls") or []):
                fn = c.get("function") or {}
                delta.tool_calls.append(ToolCallDelta(
                    c.get("index", i), c.get("id") or None, fn.get("name"), fn.get("arguments")))
        if event.get("usage") is not None:
            usage = _usage(event["usage"])
            delta.input_tokens, delta.output_tokens = usage.input_tokens, usage.output_tokens
        return delta


def openai_message(m: dict[str, Any]) -> dict[str, Any]:
    """A neutral message (tools.py) as Chat Completions takes it: assistant tool calls as
    `tool_calls` (content null when there is no text), tool results as `tool` messages."""
    if m["role"] == "tool":
        text = message_text(m["content"])
        if m.get("is_error"):  # Chat Completions has no error flag for a tool result
            text = f"Error: {text}"
        return {"role": "tool", "tool_call_id": m["tool_call_id"], "content": text}
    out: dict[str, Any] = {"role": m["role"], "content": openai_content(m["content"])}
    calls: tuple[ToolCall, ...] = m.get("tool_calls", ())
    if calls:
        out["content"] = out["content"] or None
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments}}
                             for c in calls]
    return out


def openai_tool_choice(choice: ToolChoice) -> dict[str, Any]:
    """`tool_choice` (and `parallel_tool_calls`) as Chat Completions takes them."""
    out: dict[str, Any] = {"tool_choice": choice.mode if choice.mode != "tool" else {
        "type": "function", "function": {"name": choice.name}}}
    if choice.parallel is not None:
        out["parallel_tool_calls"] = choice.parallel
    return out


def openai_content(content: Content) -> Content:
    """Content as Chat Completions takes it: OpenAI parts pass unchanged, Anthropic-style image
    blocks (`{"type": "image", "source": ...}`) become `image_url` parts."""
    if isinstance(content, str):
        return content
    return [_openai_part(p) for p in content]


def _openai_part(part: dict[str, Any]) -> dict[str, Any]:
    source = part.get("source")
    if part.get("type") != "image" or not isinstance(source, dict):
        return part
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    else:
        url = str(source.get("url"))
    return {"type": "image_url", "image_url": {"url": url}}


def _usage(usage: dict[str, Any] | None) -> Usage:
    if not usage:
        return Usage()
    return Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
