"""`ChatCall`: one chat request as both wire formats come to it (messages, system, limits,
options), and the 400 that names the field a client got wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from semroute.errors import GatewayError

Api = Literal["openai", "anthropic"]


@dataclass
class ChatCall:
    """A parsed request: what to dispatch (`messages`, `system`, `max_tokens`, `stream`),
    `model` as the client named it, `extra` SDK options passed through to the model
    (temperature, top_p, tools, tool_choice) and the caller's `user` and `metadata`."""

    api: Api
    model: str
    messages: list[dict[str, Any]]
    system: str | None
    max_tokens: int
    stream: bool
    include_usage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the client wrote it: `messages[2].content`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-", "tagged-union", "list[", "str", "dict[")):
            out += f".{part}" if out else part
    return out or "(body)"


def bad_field(exc: ValidationError) -> GatewayError:
    """The 400 for a body that failed validation: the first problem, naming its field."""
    e = exc.errors()[0]
    where = field_path(tuple(e["loc"]))
    msg = "required field is missing" if e["type"] == "missing" else (
        "unknown field" if e["type"] == "extra_forbidden" else e["msg"])
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return GatewayError(400, f"field '{where}': {msg}{tail}", param=where)
