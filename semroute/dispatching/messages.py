"""What a request is routed on: the latest user turn's text (string content or text parts);
chat messages and tool options read into the neutral form once, before anything else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from semroute.errors import QueryError
from semroute.providers import (
    Message,
    as_stop,
    as_tool_choice,
    as_tools,
    message_text,
    neutral_messages,
)


def as_messages(request: str | Sequence[Message]) -> list[Message]:
    """A query string as one user message; chat messages in the neutral form (tool calls and
    results read from either wire shape, so a tool result is a `tool` message, never a user
    turn to route on)."""
    if isinstance(request, str):
        return [{"role": "user", "content": request}]
    try:
        return list(neutral_messages(request))
    except ValueError as exc:
        raise QueryError(str(exc)) from None


def tool_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's model options with `tools`, `tool_choice` (with `parallel_tool_calls`)
    and `stop` checked and read once into their neutral form (any wire shape is accepted)."""
    out = dict(kwargs)
    try:
        if "tools" in out:
            out["tools"] = as_tools(out["tools"])
        if "tool_choice" in out or "parallel_tool_calls" in out:
            out["tool_choice"] = as_tool_choice(out.pop("tool_choice", None),
                                                out.pop("parallel_tool_calls", None))
        if "stop" in out:
            out["stop"] = as_stop(out["stop"])
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    return out


def latest_user_turn(messages: Sequence[Message]) -> str:
    """The text of the last user message that has any: string content, or the text parts of
    a content-part list joined by newlines (a turn with only images is skipped; tool results
    are `tool` messages, not user turns)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            text = message_text(m.get("content"))
            if text.strip():
                return text
    raise QueryError("the messages contain no user turn with text to route on")
