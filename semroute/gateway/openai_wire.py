"""The OpenAI Chat Completions wire format: the request as the gateway accepts it (pydantic),
and the JSON body, stream chunks and error body it answers with."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from semroute.dispatching import Response
from semroute.errors import GatewayError
from semroute.gateway.calls import ChatCall, bad_field, neutral_call_messages, tool_extra
from semroute.providers import ToolCallDelta

DEFAULT_MAX_TOKENS = 1024


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI grows fields; unknown ones are ignored


class ContentPart(_Wire):
    type: str


class OpenAIMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Wire):
    include_usage: bool = False


class ChatCompletionRequest(_Wire):
    """`POST /v1/chat/completions`. `tools`, `tool_choice`, `parallel_tool_calls` and `stop`
    are read into their neutral form (any provider can serve them); `temperature` and `top_p`
    go to the model as they are; `user` and `metadata` are the caller's (never sent on)."""

    model: str = Field(min_length=1)
    messages: list[OpenAIMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None


def parse_openai(body: Any) -> ChatCall:
    """A ChatCall from a request body; GatewayError 400 naming the field otherwise."""
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise bad_field(exc) from None
    systems: list[str] = []
    raw: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        content: str | list[dict[str, Any]] | None = m.content if not isinstance(
            m.content, list) else [p.model_dump() for p in m.content]
        if m.role in ("system", "developer"):
            if not isinstance(content, str):
                content = "\n".join(str(p.get("text", "")) for p in content or [])
            systems.append(content)
        elif not content and not (m.role == "assistant" and m.tool_calls) and m.role != "tool":
            raise GatewayError(400, f"field 'messages[{i}].content': must not be empty",
                               param=f"messages[{i}].content")
        else:
            raw.append({"role": m.role, "content": content, "tool_calls": m.tool_calls,
                        "tool_call_id": m.tool_call_id})
    messages = neutral_call_messages(raw, [i for i, m in enumerate(req.messages)
                                           if m.role not in ("system", "developer")])
    if not any(m["role"] == "user" for m in messages):
        raise GatewayError(400, "field 'messages': needs at least one user message",
                           param="messages")
    extra: dict[str, Any] = {k: v for k, v in (("temperature", req.temperature),
                                                ("top_p", req.top_p)) if v is not None}
    extra.update(tool_extra(req.tools, req.tool_choice, req.parallel_tool_calls, req.stop,
                            "stop"))
    return ChatCall(
        api="openai", model=req.model, messages=messages,
        system="\n\n".join(systems) or None,
        max_tokens=req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS,
        stream=req.stream,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        extra=extra, user=req.user, metadata=dict(req.metadata or {}))


def usage_json(r: Response) -> dict[str, int]:
    u = r.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens}


def tool_calls_json(r: Response) -> list[dict[str, Any]]:
    """The answer's tool calls as Chat Completions' `message.tool_calls`."""
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}} for c in r.tool_calls]


def message_json(r: Response) -> dict[str, Any]:
    """The assistant message: its text (null when it only calls tools) and tool calls."""
    if not r.tool_calls:
        return {"role": "assistant", "content": r.text}
    return {"role": "assistant", "content": r.text or None, "tool_calls": tool_calls_json(r)}


def completion_json(r: Response) -> dict[str, Any]:
    """The `chat.completion` body of a finished answer."""
    return {
        "id": f"chatcmpl-{r.request_id}", "object": "chat.completion",
        "created": int(time.time()), "model": r.model,
        "choices": [{"index": 0, "message": message_json(r),
                     "finish_reason": r.finish_reason or "stop", "logprobs": None}],
        "usage": usage_json(r),
    }


class ChunkWriter:
    """SSE frames of one streamed answer: a role chunk, one chunk per text delta and per
    tool-call fragment (`delta.tool_calls`: the call's index, id, type and name first, then
    argument fragments), the finish chunk, the usage chunk (when asked:
    `stream_options.include_usage`), then `[DONE]`."""

    def __init__(self, r: Response, include_usage: bool) -> None:
        self.r, self.include_usage = r, include_usage
        self.created = int(time.time())

    def _frame(self, choices: list[dict[str, Any]], usage: Mapping[str, int] | None = None,
               ) -> bytes:
        body: dict[str, Any] = {"id": f"chatcmpl-{self.r.request_id}",
                                "object": "chat.completion.chunk", "created": self.created,
                                "model": self.r.model, "choices": choices}
        if self.include_usage:
            body["usage"] = usage
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def start(self) -> bytes:
        return self._frame([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "finish_reason": None}])

    def text(self, chunk: str) -> bytes:
        return self._frame([{"index": 0, "delta": {"content": chunk}, "finish_reason": None}])

    def tool(self, d: ToolCallDelta) -> bytes:
        call: dict[str, Any] = {"index": d.index}
        if d.id is not None or d.name is not None:  # the call's first fragment
            call.update(id=d.id, type="function",
                        function={"name": d.name, "arguments": d.arguments or ""})
        else:
            call["function"] = {"arguments": d.arguments or ""}
        return self._frame([{"index": 0, "delta": {"tool_calls": [call]},
                             "finish_reason": None}])

    def end(self) -> bytes:
        out = self._frame([{"index": 0, "delta": {},
                            "finish_reason": self.r.finish_reason or "stop"}])
        if self.include_usage:
            out += self._frame([], usage_json(self.r))
        return out + b"data: [DONE]\n\n"


def error_json(status: int, message: str, *, param: str | None = None,
               attempts: list[dict[str, Any]] | None = None,
               request_id: str | None = None) -> dict[str, Any]:
    """OpenAI's error body: `{"error": {"message", "type", "code", "param"}}`, plus the
    attempts made and the request id."""
    kind, code = OPENAI_ERRORS.get(status, ("api_error", None))
    error: dict[str, Any] = {"message": message, "type": kind, "code": code, "param": param}
    if attempts is not None:
        error["attempts"] = attempts
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("upstream_error", "all_models_failed"),
    503: ("service_unavailable", "unavailable"),
    504: ("upstream_error", "timeout"),
}
