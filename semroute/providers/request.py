"""Provider-neutral requests: validation, system-prompt folding, label constraints and parsing."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from semroute.ids import new_id
from semroute.providers.tools import (
    Tool,
    ToolChoice,
    as_stop,
    as_tool_choice,
    as_tools,
    neutral_messages,
)

Message = Mapping[str, Any]
"""A chat message: `role` and `content`, a string or a list of content parts such as OpenAI's
`{"type": "text", "text": ...}` and `{"type": "image_url", ...}` (adapters translate parts).
An assistant message may carry `tool_calls`, a `tool` message answers one (`tool_call_id`):
see tools.py, which also reads Anthropic's `tool_use` / `tool_result` blocks."""
Content = str | list[dict[str, Any]]
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ChatRequest:
    """A validated, provider-neutral call: system text split out, roles checked."""

    messages: tuple[dict[str, Any], ...]
    system: str | None
    max_tokens: int
    temperature: float | None
    labels: tuple[str, ...] | None
    extra: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    stop: tuple[str, ...] | None = None


def make_request(
    messages: Sequence[Message],
    system: str | None,
    max_tokens: int,
    temperature: float | None,
    labels: Sequence[str] | None,
    extra: Mapping[str, Any],
    tools: Sequence[Any] | None = None,
    tool_choice: Any = None,
    stop: str | Sequence[str] | None = None,
) -> ChatRequest:
    """Validate inputs, read tool calls and results into the neutral form (tools.py) and fold
    `system` role messages into one system string."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    systems = [system] if system else []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(neutral_messages(messages)):
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i}: need role in {ROLES}")
        calls = m.get("tool_calls", ())
        content = "" if calls and not m.get("content") else checked_content(m.get("content"), i)
        if role == "system":
            systems.append(message_text(content))
        elif role == "tool":
            turns.append({"role": role, "content": content, "tool_call_id": m["tool_call_id"],
                          "is_error": m.get("is_error", False)})
        else:
            turns.append({"role": role, "content": content, **({"tool_calls": calls}
                                                                 if calls else {})})
    if not turns:
        raise ValueError("need at least one user or assistant message")
    if labels is not None:
        labels = tuple(labels)
        if (
            not labels
            or len(set(labels)) != len(labels)
            or not all(isinstance(x, str) and x for x in labels)
        ):
            raise ValueError("labels must be a non-empty list of distinct non-empty strings")
    return ChatRequest(
        tuple(turns), "\n\n".join(systems) or None, max_tokens, temperature, labels, dict(extra),
        as_tools(tools), as_tool_choice(tool_choice), as_stop(stop),
    )


def checked_content(content: object, index: int) -> Content:
    """A message's content if it is a string or a non-empty list of typed parts, else an error."""
    if isinstance(content, str):
        return content
    if (
        isinstance(content, Sequence)
        and content
        and all(isinstance(p, Mapping) and isinstance(p.get("type"), str) for p in content)
    ):
        return [dict(p) for p in content]
    raise ValueError(
        f"message {index}: content must be a string or a list of content parts "
        '(dicts with a "type", e.g. {"type": "text", "text": "..."})'
    )


def message_text(content: object) -> str:
    """The text of a message's content: the string itself, or its text parts joined by
    newlines (image and other parts have none)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, Sequence):
        return ""
    return "\n".join(
        p["text"]
        for p in content
        if isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
    )


def merge_extra(kwargs: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Add caller's extra SDK kwargs; `extra_body` dicts are merged rather than replaced."""
    for name, value in extra.items():
        if name == "extra_body" and isinstance(kwargs.get(name), dict):
            kwargs[name] = {**kwargs[name], **value}
        else:
            kwargs[name] = value
    return kwargs


def label_grammar(labels: Sequence[str]) -> str:
    """GBNF (llama.cpp) grammar whose only sentences are the labels."""
    return "root ::= " + " | ".join(json.dumps(x) for x in labels)


def label_schema(labels: Sequence[str]) -> dict[str, Any]:
    """JSON schema of `{"label": <one of labels>}` used by both adapters."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def match_label(text: str, labels: Sequence[str]) -> str | None:
    """The one allowed label `text` names: JSON `{"label": x}`, a bare label, or a lone mention."""
    candidate: Any = text.strip()
    with suppress(ValueError):
        candidate = json.loads(candidate)
    if isinstance(candidate, dict):
        candidate = candidate.get("label", candidate.get("arguments", candidate))
        if isinstance(candidate, dict):  # e.g. {"name": ..., "arguments": {"label": ...}}
            candidate = candidate.get("label")
    if not isinstance(candidate, str):
        candidate = text
    by_fold = {x.casefold(): x for x in labels}
    stripped = candidate.strip().strip("\"'`.").strip().casefold()
    if stripped in by_fold:
        return by_fold[stripped]
    found = [
        x for x in labels if re.search(rf"(?<!\w){re.escape(x)}(?!\w)", candidate, re.IGNORECASE)
    ]
    return found[0] if len(found) == 1 else None


# The SDK call keywords that are request options of the SDKs' generic `post`, not body fields.
_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "extra_body": "extra_json",
            "timeout": "timeout"}


def post_arguments(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """SDK call keywords as the (body, options) of the SDKs' public generic `client.post`.

    Both SDKs' typed `create()` walk the body against their TypedDicts before sending it
    (~1 ms of CPU a call, most of a gateway's overhead); our bodies are plain JSON already.
    The idempotency key comes from `new_id` instead of a `uuid4` system call. The options
    are each SDK's own `RequestOptions` TypedDict, hence `Any`.
    """
    body: dict[str, Any] = {}
    options: dict[str, Any] = {"idempotency_key": new_id()}
    for name, value in kwargs.items():
        if name in _OPTIONS:
            options[_OPTIONS[name]] = value
        else:
            body[name] = value
    return body, options
