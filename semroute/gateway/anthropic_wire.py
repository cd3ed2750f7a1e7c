"""The Anthropic Messages wire format: the request as the gateway accepts it (pydantic), and
the message body, stream events and error body it answers with."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from semroute.dispatching import Response
from semroute.errors import GatewayError
from semroute.gateway.calls import ChatCall, bad_field, neutral_call_messages, tool_extra
from semroute.providers import ToolCallDelta, arguments_object

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "refusal"}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class Block(_Wire):
    type: str


class TextBlock(_Wire):
    type: Literal["text"]
    text: str


class AnthropicMessage(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class MessagesRequest(_Wire):
    """`POST /v1/messages`. `metadata.user_id` is the caller's user; its other keys are
    request metadata for route rules; `tools`, `tool_choice` and `stop_sequences` are read
    into their neutral form (any provider can serve them)."""

    model: str = Field(min_length=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlock] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    stop_sequences: list[str] | None = None
    metadata: dict[str, str] | None = None


def parse_anthropic(body: Any) -> ChatCall:
    """A ChatCall from a request body; GatewayError 400 naming the field otherwise."""
    try:
        req = MessagesRequest.model_validate(body)
    except ValidationError as exc:
        raise bad_field(exc) from None
    raw: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        if not m.content:
            raise GatewayError(400, f"field 'messages[{i}].content': must not be empty",
                               param=f"messages[{i}].content")
        content = m.content if isinstance(m.content, str) else [b.model_dump()
                                                                 for b in m.content]
        raw.append({"role": m.role, "content": content})
    messages = neutral_call_messages(raw, list(range(len(raw))))
    if not any(m["role"] == "user" for m in messages):
        raise GatewayError(400, "field 'messages': needs at least one user message",
                           param="messages")
    system = req.system if isinstance(req.system, str) or req.system is None else \
        "\n\n".join(b.text for b in req.system)
    metadata = dict(req.metadata or {})
    user = metadata.pop("user_id", None)
    extra: dict[str, Any] = {k: v for k, v in (("temperature", req.temperature),
                                                ("top_p", req.top_p)) if v is not None}
    extra.update(tool_extra(req.tools, req.tool_choice, None, req.stop_sequences,
                            "stop_sequences"))
    return ChatCall(api="anthropic", model=req.model, messages=messages, system=system or None,
                    max_tokens=req.max_tokens, stream=req.stream, extra=extra, user=user,
                    metadata=metadata)


def stop_reason(r: Response) -> str:
    return STOP_REASONS.get(r.finish_reason or "stop", r.finish_reason or "end_turn")


def tool_use_json(r: Response) -> list[dict[str, Any]]:
    """The answer's tool calls as `tool_use` blocks (arguments parsed into `input`)."""
    return [{"type": "tool_use", "id": c.id, "name": c.name,
             "input": arguments_object(c.arguments)} for c in r.tool_calls]


def content_json(r: Response) -> list[dict[str, Any]]:
    """The message's content: its text block (unless it only calls tools), then tool_use."""
    text = [{"type": "text", "text": r.text}] if r.text or not r.tool_calls else []
    return text + tool_use_json(r)


def message_json(r: Response) -> dict[str, Any]:
    """The `message` body of a finished answer."""
    return {
        "id": f"msg_{r.request_id}", "type": "message", "role": "assistant", "model": r.model,
        "content": content_json(r), "stop_reason": stop_reason(r),
        "stop_sequence": None,
        "usage": {"input_tokens": r.usage.input_tokens, "output_tokens": r.usage.output_tokens},
    }


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


class EventWriter:
    """SSE events of one streamed answer: message_start; content blocks as the output comes
    (a text block with a content_block_delta per text delta; a tool_use block per tool call,
    opened with its id and name, then an input_json_delta per argument fragment; each block
    stopped when the next starts); message_delta (stop reason and usage), message_stop. An
    answer with no output at all still has an (empty) text block."""

    def __init__(self, r: Response) -> None:
        self.r = r
        self.blocks = 0  # blocks opened so far; the open one is blocks - 1
        self.open: tuple[str, int] | None = None  # ("text", -1) or ("tool", call index)

    def start(self) -> bytes:
        r = self.r
        message: dict[str, Any] = {
            "id": f"msg_{r.request_id}", "type": "message", "role": "assistant",
            "model": r.model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}
        return event("message_start", {"message": message})

    def _switch(self, kind: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self._stop()
        self.open, self.blocks = kind, self.blocks + 1
        return out + event("content_block_start",
                           {"index": self.blocks - 1, "content_block": block})

    def _stop(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return event("content_block_stop", {"index": self.blocks - 1})

    def text(self, chunk: str) -> bytes:
        head = b"" if self.open == ("text", -1) else self._switch(
            ("text", -1), {"type": "text", "text": ""})
        return head + event("content_block_delta", {
            "index": self.blocks - 1, "delta": {"type": "text_delta", "text": chunk}})

    def tool(self, d: ToolCallDelta) -> bytes:
        head = b""
        if self.open != ("tool", d.index):
            head = self._switch(("tool", d.index), {
                "type": "tool_use", "id": d.id or f"toolu_{d.index}", "name": d.name or "",
                "input": {}})
        if not d.arguments:
            return head
        return head + event("content_block_delta", {
            "index": self.blocks - 1,
            "delta": {"type": "input_json_delta", "partial_json": d.arguments}})

    def end(self) -> bytes:
        r = self.r
        out = self._switch(("text", -1), {"type": "text", "text": ""}) if not self.blocks \
            else b""
        return (out + self._stop()
                + event("message_delta", {
                    "delta": {"stop_reason": stop_reason(r), "stop_sequence": None},
                    "usage": {"input_tokens": r.usage.input_tokens,
                              "output_tokens": r.usage.output_tokens}})
                + event("message_stop", {}))


ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 502: "api_error",
    503: "overloaded_error", 504: "api_error",
}


def error_json(status: int, message: str, *, param: str | None = None,
               attempts: list[dict[str, Any]] | None = None,
               request_id: str | None = None) -> dict[str, Any]:
    """Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`, plus the
    attempts made, the field at fault and the request id."""
    error: dict[str, Any] = {"type": ANTHROPIC_ERRORS.get(status, "api_error"),
                             "message": message}
    if param is not None:
        error["param"] = param
    if attempts is not None:
        error["attempts"] = attempts
    body: dict[str, Any] = {"type": "error", "error": error}
    if request_id is not None:
        body["request_id"] = request_id
    return body
