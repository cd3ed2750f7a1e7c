"""Provider-neutral requests: validation, system-prompt folding, label constraints and parsing."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

Message = Mapping[str, str]
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatRequest:
    """A validated, provider-neutral call: system text split out, roles checked."""

    messages: tuple[dict[str, str], ...]
    system: str | None
    max_tokens: int
    temperature: float | None
    labels: tuple[str, ...] | None
    extra: Mapping[str, Any] = field(default_factory=dict)


def make_request(
    messages: Sequence[Message],
    system: str | None,
    max_tokens: int,
    temperature: float | None,
    labels: Sequence[str] | None,
    extra: Mapping[str, Any],
) -> ChatRequest:
    """Validate inputs and fold `system` role messages into one system string."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    systems = [system] if system else []
    turns: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise ValueError(f"message {i}: need role in {ROLES} and string content")
        if role == "system":
            systems.append(content)
        else:
            turns.append({"role": role, "content": content})
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
        tuple(turns), "\n\n".join(systems) or None, max_tokens, temperature, labels, dict(extra)
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
