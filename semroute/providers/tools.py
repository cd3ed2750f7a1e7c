"""Tool use, provider-neutral: tool definitions, the model's tool calls, the caller's choice of
tool, and chat messages that carry calls and results, read from either wire shape.

Neutral messages (what adapters translate from): an assistant turn may carry `tool_calls`
(a tuple of `ToolCall`; its `content` may then be empty), and a tool's result is its own
message `{"role": "tool", "tool_call_id": ..., "content": ..., "is_error": bool}`.
`neutral_messages` reads OpenAI's form (`tool_calls` dicts, `tool` role) and Anthropic's
(`tool_use` blocks in assistant turns, `tool_result` blocks in user turns) into it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
ChoiceMode = Literal["auto", "none", "required", "tool"]


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and its JSON-schema parameters."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_SCHEMA))


@dataclass(frozen=True)
class ToolCall:
    """One call a model asked for: its id (echoed by the result), the tool, the arguments as
    JSON text (as the model wrote them; not necessarily valid JSON)."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class ToolChoice:
    """What the model may do with the tools: `auto`, `none`, `required` (some tool), or
    `tool` (the one named); `parallel` False asks for at most one call (None: the default)."""

    mode: ChoiceMode
    name: str | None = None
    parallel: bool | None = None


@dataclass
class ToolCallDelta:
    """What one stream event adds to the tool call at `index` (None fields add nothing)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


# ---------------------------------------------------------------- reading either wire shape


def as_tools(value: Sequence[Any] | None, where: str = "tools") -> tuple[Tool, ...]:
    """Tools from `Tool`s or dicts in OpenAI's form (`{"type": "function", "function":
    {...}}`), Anthropic's (`{"name", "description", "input_schema"}`) or flat (`parameters`)."""
    return _each(value, where, "tools", _tool)


def _each(value: Any, where: str, what: str, one: Callable[[Any, str], T]) -> tuple[T, ...]:
    """`one` over a list from the wire (None: empty), each item named by its index."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ValueError(f"{where}: must be a list of {what}")
    return tuple(one(item, f"{where}[{i}]") for i, item in enumerate(value))


def _tool(t: Any, where: str) -> Tool:
    if isinstance(t, Tool):
        return t
    if not isinstance(t, Mapping):
        raise ValueError(f"{where}: a tool must be an object")
    spec: Mapping[str, Any] = t
    if t.get("type") == "function" and isinstance(t.get("function"), Mapping):
        spec = t["function"]
    elif t.get("type") not in (None, "custom", "function"):
        raise ValueError(f"{where}: tool type {t.get('type')!r} is not supported (only "
                         "function tools: a name, a description and a JSON-schema)")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a tool needs a non-empty 'name'")
    schema = spec.get("parameters", spec.get("input_schema"))
    if schema is None:
        schema = dict(EMPTY_SCHEMA)
    if not isinstance(schema, Mapping):
        raise ValueError(f"{where}: the parameters of tool {name!r} must be a JSON-schema object")
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise ValueError(f"{where}: the description of tool {name!r} must be a string")
    return Tool(name, description, dict(schema))


def as_tool_choice(value: Any, parallel: bool | None = None,
                   where: str = "tool_choice") -> ToolChoice | None:
    """A ToolChoice from OpenAI's form (`"auto"`, `"none"`, `"required"`, `{"type":
    "function", "function": {"name"}}`) or Anthropic's (`{"type": "auto" | "any" | "none" |
    "tool", "name", "disable_parallel_tool_use"}`); None when neither is given."""
    if value is None:
        return None if parallel is None else ToolChoice("auto", parallel=parallel)
    if isinstance(value, ToolChoice):
        return value
    kind: Any = value
    name: Any = None
    if isinstance(value, Mapping):
        kind = value.get("type")
        if value.get("disable_parallel_tool_use") is True:
            parallel = False
        fn = value.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else value.get("name")
    modes = {"auto": "auto", "none": "none", "required": "required", "any": "required",
             "function": "tool", "tool": "tool"}
    mode = modes.get(kind) if isinstance(kind, str) else None
    if mode is None:
        raise ValueError(f"{where}: {value!r} is not a tool choice (auto, none, required, or "
                         "a named tool)")
    if mode == "tool" and (not isinstance(name, str) or not name):
        raise ValueError(f"{where}: a specific tool choice needs the tool's name")
    return ToolChoice(mode, name if mode == "tool" else None, parallel)  # type: ignore[arg-type]


def as_tool_calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    """ToolCalls from `ToolCall`s, OpenAI dicts (`{"id", "type": "function", "function":
    {"name", "arguments"}}`) or Anthropic `tool_use` blocks (`{"id", "name", "input"}`)."""
    return _each(value, where, "tool calls", _call)


def _call(c: Any, where: str) -> ToolCall:
    if isinstance(c, ToolCall):
        return c
    if not isinstance(c, Mapping):
        raise ValueError(f"{where}: a tool call must be an object")
    fn = c.get("function")
    spec: Mapping[str, Any] = fn if isinstance(fn, Mapping) else c
    call_id, name = c.get("id"), spec.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a tool call needs a non-empty 'id' and tool 'name'")
    args = spec.get("arguments", spec.get("input", {}))
    return ToolCall(call_id, name, args if isinstance(args, str) else json.dumps(args))


def neutral_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages in the neutral form (module docstring); either wire shape is read, other
    messages are copied unchanged. ValueError names `messages[i]` for a malformed one."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise ValueError(f"{where}: a message must be a mapping with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role == "assistant":
            out.append(_assistant(m, where))
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ValueError(f"{where}: a tool message needs the 'tool_call_id' it answers")
            out.append({"role": "tool", "tool_call_id": call_id,
                        "content": "" if content is None else content,
                        "is_error": bool(m.get("is_error", False))})
        elif role == "user" and isinstance(content, list) and any(
                isinstance(p, Mapping) and p.get("type") == "tool_result" for p in content):
            rest = []
            for j, p in enumerate(content):
                if isinstance(p, Mapping) and p.get("type") == "tool_result":
                    out.append(_result(p, f"{where}.content[{j}]"))
                else:
                    rest.append(p)
            if rest:
                out.append({**m, "content": rest})
        else:
            out.append(dict(m))
    return out


def _assistant(m: Mapping[str, Any], where: str) -> dict[str, Any]:
    content = m.get("content")
    calls = list(as_tool_calls(m.get("tool_calls"), f"{where}.tool_calls"))
    if isinstance(content, list):
        uses = [p for p in content if isinstance(p, Mapping) and p.get("type") == "tool_use"]
        calls += [_call(p, f"{where}.content") for p in uses]
        content = [p for p in content if not (isinstance(p, Mapping)
                                               and p.get("type") == "tool_use")]
    out = {k: v for k, v in m.items() if k not in ("content", "tool_calls")}
    out["content"] = content if content else ""
    if calls:
        out["tool_calls"] = tuple(calls)
    return out


def _result(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"{where}: a tool_result block needs the 'tool_use_id' it answers")
    content = block.get("content")
    return {"role": "tool", "tool_call_id": call_id,
            "content": "" if content is None else content,
            "is_error": bool(block.get("is_error", False))}


def arguments_object(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's `tool_use.input` needs: the JSON object,
    `{}` for empty or broken JSON (a call cut off by max_tokens), a non-object under
    `"value"`."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def calls_text(calls: Sequence[ToolCall]) -> str:
    """Tool calls as text, for whatever judges answers by their text (a parallel route's
    judge and pickers): one `[tool call] name(arguments)` line each."""
    return "\n".join(f"[tool call] {c.name}({c.arguments})" for c in calls)


def as_stop(value: Any, where: str = "stop") -> tuple[str, ...] | None:
    """Stop sequences from a string or a list of strings (None: none given)."""
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if isinstance(stops, (bytes, Mapping)) or not isinstance(stops, Sequence) or not all(
            isinstance(s, str) and s for s in stops):
        raise ValueError(f"{where}: must be a non-empty string or a list of them")
    return tuple(stops) or None
