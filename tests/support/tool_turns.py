"""Tool use on the loopback fault servers (`faults.FaultyServer`): what an upstream that
knows tools answers, in the OpenAI and the Anthropic wire format, whole or streamed.

A request that offers `tools` (and does not set tool_choice none) and does not end with a
tool result is answered with `calls` tool calls (the tool tool_choice names, else the
first tools in order) with `arguments`; an Anthropic answer opens with the text "Let me
check." as Claude's do. A request that ends with a tool result is answered with text that
quotes the result: `<server> [<fault>] tool said: <result> END`. Streams split every call's
arguments into fragments, as real servers do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PREAMBLE = "Let me check."


@dataclass(frozen=True)
class ToolTurn:
    """The calls to make (name, id, arguments JSON), or the tool result to quote."""

    calls: tuple[tuple[str, str, str], ...] = ()
    result: str | None = None


def tool_turn(flavour: str, body: Mapping[str, Any], arguments: Mapping[str, Any],
              calls: int) -> ToolTurn | None:
    """What a tool-aware server does with `body`; None when tools play no part."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    result = _last_result(flavour, last)
    if result is not None:
        return ToolTurn(result=result)
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice in ("none", {"type": "none"}):
        return None
    names = [(t.get("function") or {}).get("name") if flavour == "openai" else t.get("name")
             for t in tools]
    named = None
    if isinstance(choice, Mapping):
        named = (choice.get("function") or {}).get("name") if flavour == "openai" else \
            choice.get("name")
    prefix = "call_" if flavour == "openai" else "toolu_"
    made = tuple((named or names[i % len(names)], f"{prefix}{i + 1:02d}", json.dumps(arguments))
                 for i in range(calls))
    return ToolTurn(calls=made)


def _last_result(flavour: str, last: Mapping[str, Any]) -> str | None:
    if flavour == "openai" and last.get("role") == "tool":
        return _text(last.get("content"))
    content = last.get("content")
    if flavour == "anthropic" and last.get("role") == "user" and isinstance(content, list):
        results = [b for b in content if b.get("type") == "tool_result"]
        if results:
            return " | ".join(_text(b.get("content")) for b in results)
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, Mapping))


def result_chunks(server: str, fault: str, result: str) -> list[str]:
    return [f"{server} [{fault}]", " tool said:", f" {result}", " END"]


def _fragments(arguments: str) -> list[str]:
    cut = max(1, len(arguments) // 2)
    return [arguments[:cut], arguments[cut:]]


# ---------------------------------------------------------------- OpenAI


def openai_calls_json(model: str, turn: ToolTurn) -> dict[str, Any]:
    calls = [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
             for name, cid, args in turn.calls]
    return {"id": "chatcmpl-tools", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None,
                                     "tool_calls": calls}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}}


def openai_calls_events(model: str, turn: ToolTurn, include_usage: bool) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(None, {"id": "chatcmpl-tools", "object": "chat.completion.chunk",
                           "created": int(time.time()), "model": model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    out = [chunk({"role": "assistant", "content": None})]
    for i, (name, cid, args) in enumerate(turn.calls):
        out.append(chunk({"tool_calls": [{"index": i, "id": cid, "type": "function",
                                          "function": {"name": name, "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
                for part in _fragments(args)]
    out.append(chunk({}, "tool_calls"))
    if include_usage:
        out.append(_sse(None, {"id": "chatcmpl-tools", "object": "chat.completion.chunk",
                               "created": int(time.time()), "model": model, "choices": [],
                               "usage": {"prompt_tokens": 9, "completion_tokens": 6,
                                         "total_tokens": 15}}))
    out.append(_sse(None, "[DONE]"))
    return out


# ---------------------------------------------------------------- Anthropic


def anthropic_calls_json(model: str, turn: ToolTurn) -> dict[str, Any]:
    uses = [{"type": "tool_use", "id": cid, "name": name, "input": json.loads(args)}
            for name, cid, args in turn.calls]
    return {"id": "msg_tools", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": PREAMBLE}, *uses],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 6}}


def anthropic_calls_events(model: str, turn: ToolTurn) -> list[bytes]:
    out = [
        _sse("message_start", {"type": "message_start", "message": {
            "id": "msg_tools", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": PREAMBLE}}),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]
    for i, (name, cid, args) in enumerate(turn.calls, start=1):
        out.append(_sse("content_block_start", {
            "type": "content_block_start", "index": i,
            "content_block": {"type": "tool_use", "id": cid, "name": name, "input": {}}}))
        out += [_sse("content_block_delta", {
            "type": "content_block_delta", "index": i,
            "delta": {"type": "input_json_delta", "partial_json": part}})
            for part in _fragments(args)]
        out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": i}))
    out += [
        _sse("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                               "usage": {"output_tokens": 6}}),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return out


def calls_answer(flavour: str, model: str, turn: ToolTurn, include_usage: bool,
                 ) -> tuple[dict[str, Any], list[bytes]]:
    """(the whole answer, its stream's events) for a turn that calls tools."""
    if flavour == "openai":
        return openai_calls_json(model, turn), openai_calls_events(model, turn, include_usage)
    return anthropic_calls_json(model, turn), anthropic_calls_events(model, turn)


def _sse(event: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


__all__: Sequence[str] = ("ToolTurn", "calls_answer", "result_chunks", "tool_turn")
