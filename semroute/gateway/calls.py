"""`ChatCall`: one chat request as both wire formats come to it (messages, system, limits,
options), the 400 that names the field a client got wrong, and `read_json`, the body read
within the size limit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from starlette.requests import Request

from semroute.errors import GatewayError
from semroute.providers import as_stop, as_tool_choice, as_tools, neutral_messages

Api = Literal["openai", "anthropic"]


@dataclass
class ChatCall:
    """A parsed request: what to dispatch (`messages` in the neutral form, tool calls and
    results included; `system`, `max_tokens`, `stream`), `model` as the client named it,
    `extra` model options (temperature and top_p as sent; tools, tool_choice and stop in
    their neutral form) and the caller's `user` and `metadata`."""

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


def neutral_call_messages(raw: list[dict[str, Any]], positions: list[int],
                          ) -> list[dict[str, Any]]:
    """Messages in the neutral form (`providers.neutral_messages`); a malformed tool call or
    result is a 400 naming its place in the body (`positions`: each raw message's index)."""
    try:
        messages = neutral_messages([{k: v for k, v in m.items() if v is not None}
                                     for m in raw])
    except ValueError as exc:
        text = str(exc)
        where = text.split(":", 1)[0]
        if where.startswith("messages[") and "]" in where:  # renumber to the body's index
            n, rest = where[len("messages["):].split("]", 1)
            where = f"messages[{positions[int(n)]}]{rest}"
        raise GatewayError(400, f"field '{where}':{text.split(':', 1)[1]}",
                           param=where) from None
    return messages


def tool_extra(tools: Any, tool_choice: Any, parallel: bool | None, stop: Any,
               stop_field: str) -> dict[str, Any]:
    """`tools`, `tool_choice` and stop sequences read into their neutral form, as dispatch
    options; a 400 naming the field otherwise."""
    out: dict[str, Any] = {}
    for name, read in (("tools", lambda: as_tools(tools)),
                       ("tool_choice", lambda: as_tool_choice(tool_choice, parallel)),
                       (stop_field, lambda: as_stop(stop, stop_field))):
        try:
            value = read()
        except ValueError as exc:
            where, _, why = str(exc).partition(":")
            raise GatewayError(400, f"field '{where}':{why}", param=where) from None
        if value:
            out["stop" if name == stop_field else name] = value
    return out


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, refusing more than `limit` bytes (413) and bad JSON (400)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"request body of {declared} bytes is over the limit of "
                                f"{limit} (limits.max_body_bytes)")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise GatewayError(413, f"request body is over the limit of {limit} bytes "
                                    f"(limits.max_body_bytes)")
        parts.append(part)
    try:
        return json.loads(b"".join(parts))
    except ValueError as exc:
        raise GatewayError(400, f"the body is not valid JSON: {exc}", param="(body)") from None
