"""What a request is routed on: the latest user turn's text (string content or text parts)."""

from __future__ import annotations

from collections.abc import Sequence

from semroute.errors import QueryError
from semroute.providers import Message, message_text


def as_messages(request: str | Sequence[Message]) -> list[Message]:
    """A query string as one user message; chat messages as they are."""
    return [{"role": "user", "content": request}] if isinstance(request, str) else list(request)


def latest_user_turn(messages: Sequence[Message]) -> str:
    """The text of the last user message that has any: string content, or the text parts of
    a content-part list joined by newlines (a turn with only images is skipped)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            text = message_text(m.get("content"))
            if text.strip():
                return text
    raise QueryError("the messages contain no user turn with text to route on")
