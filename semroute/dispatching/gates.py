"""Quality gates as pure functions of an answer's text: is it empty, a refusal, JSON, valid
against a schema, a regex match; and the self-confidence a model was asked to append, parsed
and stripped. No I/O here: the judge gate, which calls a model, is in cascade.py.

A check's `why` never quotes the answer (it goes into traces, which hold no answer text).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from semroute.config import GateSpec

CONFIDENCE_INSTRUCTION = (
    "After your answer, add one last line of exactly this form: `Confidence: X`, where X is "
    "a number from 0 to 1 saying how likely your answer is correct and complete."
)


@dataclass(frozen=True)
class Check:
    """A gate's verdict on one answer; `why` says what failed (or what passed)."""

    passed: bool
    why: str


# ---------------------------------------------------------------- refusals

# Each pattern is matched only in the opening of an answer (REFUSAL_OPENING characters): a
# refusal says so at once, while the same words deep in a real answer are usually quoted or
# about something else ("the parser can't handle...", "tuples are not allowed to change").
REFUSAL_OPENING = 300
_CANT = r"(?:can't|cannot|can not|won't|will not|am unable to|'m unable to|am not able to|" \
        r"'m not able to|am not going to|'m not going to)"
_ACTS = r"(?:help|assist|provide|answer|comply|fulfil+|do that|do this|support|engage|" \
        r"generate|create|write|give|share|complete|offer|discuss|participate|produce)"
_NEG = r"(?:can't|cannot|can not|unable|won't|will not|not able|not allowed|not permitted|" \
       r"don't have|do not have|don't|do not|am not|'m not|no (?:personal|access|ability))"
REFUSAL_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx, re.IGNORECASE)) for name, rx in (
        ("I can't help", rf"\bI\s*(?:really\s+|simply\s+|just\s+)?{_CANT}\s+(?:really\s+)?"
                         rf"{_ACTS}\b(?!\s+but\b)"),
        ("apology + inability", rf"\b(?:I'm|I am)\s+(?:so\s+|very\s+|really\s+|truly\s+)?"
                                rf"(?:sorry|afraid)\b[^.!?\n]{{0,60}}?\b{_NEG}"),
        ("sorry, but", rf"^\W*(?:sorry|apologies|my apologies|unfortunately)\b[^.!?\n]{{0,60}}?"
                       rf"\b{_NEG}"),
        ("as an AI", rf"\bas an?\s+(?:AI|artificial intelligence|(?:large\s+)?language model|"
                     rf"LLM|AI (?:language )?model|AI assistant)\b[^.!?\n]{{0,80}}?\b{_NEG}"),
        ("I must decline", r"\bI\s+(?:must|have to|need to|will have to|'ll have to)\s+"
                           r"(?:respectfully\s+|politely\s+)?(?:decline|refuse)\b"
                           r"|^\W*I\s+(?:respectfully\s+)?(?:decline|refuse)\s+to\b"),
        ("against my guidelines", r"\b(?:I(?:'m| am) not (?:allowed|permitted) to|against my "
                                  r"(?:guidelines|policies|policy|principles|programming))"),
        ("no access", r"\bI\s+(?:do not|don't)\s+have\s+(?:access\b|the ability|real-time|"
                      r"the capability|browsing|internet access)"),
        ("I don't know", r"^\W*I\s+(?:do not|don't)\s+know\b(?!\s+(?:if|whether|about you))"),
    ))


def refusal(text: str) -> str | None:
    """The name of the refusal pattern the answer's opening matches, or None."""
    opening = text.replace("\u2019", "'").replace("\u2018", "'").strip()[:REFUSAL_OPENING]
    for name, pattern in REFUSAL_PATTERNS:
        if pattern.search(opening):
            return name
    return None


# ---------------------------------------------------------------- JSON

_FENCE = re.compile(r"^\s*```[ \t]*(?:json|JSON|json5)?[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


def json_value(text: str) -> Any:
    """The JSON value the answer holds (whole, or one fenced ```json block); raises
    ValueError saying why not (without quoting the answer)."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body:
        raise ValueError("no JSON: the answer is empty")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno})") from None


# ---------------------------------------------------------------- self-confidence

_WORD = r"\b(?:self[- ]?)?confidence(?:\s+(?:level|score|rating))?\b\"?"
_CONFIDENCE = re.compile(
    rf"(?P<open>[(\[]\s*)?(?:\*\*|__)?{_WORD}(?:\*\*|__)?\s*(?:[:=\-\u2013\u2014]|\bis\b|\bof\b)?"
    r"\s*(?:\*\*|__)?\s*(?P<num>\d+(?:[.,]\d+)?|[.,]\d+)\s*"
    r"(?P<unit>%|percent\b|/\s*(?P<den>\d+(?:\.\d+)?)|out\s+of\s+(?P<den2>\d+(?:\.\d+)?))?"
    r"(?:\*\*|__)?\s*(?(open)[)\]])",
    re.IGNORECASE)
_MENTION = re.compile(rf"(?:\*\*|__)?{_WORD}(?:\*\*|__)?\s*[:=]", re.IGNORECASE)


@dataclass(frozen=True)
class Confidence:
    """A model's self-assessed confidence: `value` in [0, 1] (None: missing or garbled,
    `problem` says which), and `text`, the answer with the confidence statement removed."""

    value: float | None
    text: str
    problem: str | None = None


def parse_confidence(text: str) -> Confidence:
    """Find the confidence a model appended ("Confidence: 0.8", "confidence: 80%",
    "(confidence 8/10)", a `confidence` field of a JSON object answer) and strip it.
    The last statement counts. A bare number above 1 is read out of 10 (up to 10) or out of
    100 (up to 100)."""
    found = _json_field(text)
    if found is not None:
        return found
    matches = list(_CONFIDENCE.finditer(text))
    if not matches:
        mention = list(_MENTION.finditer(text))
        if mention:  # "Confidence: high": said, but not as a number
            stripped = _cut(text, mention[-1].start(), _line_end(text, mention[-1].end()))
            return Confidence(None, stripped, "garbled: the confidence given is not a number")
        return Confidence(None, text, "missing: the answer states no confidence")
    m = matches[-1]
    value = _scale(m)
    stripped = _cut(text, m.start(), m.end())
    if value is None:
        return Confidence(None, stripped, "garbled: the confidence given is outside 0-1, "
                                          "0-10 and 0-100%")
    return Confidence(value, stripped)


def _scale(m: re.Match[str]) -> float | None:
    num = float(m.group("num").replace(",", "."))
    den_text = m.group("den") or m.group("den2")
    if den_text is not None:
        den = float(den_text)
        value = num / den if den > 0 else -1.0
    elif m.group("unit"):  # % or percent
        value = num / 100
    elif num <= 1:
        value = num
    elif num <= 10:
        value = num / 10
    else:
        value = num / 100
    return value if 0.0 <= value <= 1.0 else None


def _json_field(text: str) -> Confidence | None:
    """A JSON object answer with a top-level `confidence`: read it and remove the field."""
    try:
        obj = json_value(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or "confidence" not in obj:
        return None
    raw = obj.pop("confidence")
    stripped = json.dumps(obj, ensure_ascii=False)
    m = _CONFIDENCE.search(f"confidence: {raw}") if isinstance(raw, int | float | str) \
        and not isinstance(raw, bool) else None
    value = _scale(m) if m is not None else None
    if value is None:
        return Confidence(None, stripped, "garbled: the JSON `confidence` field is not a "
                                          "number in 0-1")
    return Confidence(value, stripped)


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _cut(text: str, start: int, end: int) -> str:
    """`text` without [start, end); a line left holding only punctuation goes too."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = _line_end(text, end)
    rest = text[line_start:start] + text[end:line_end]
    if not re.search(r"\w", rest):  # the statement was the whole line (bar brackets, dashes)
        out = text[:line_start] + text[line_end + 1:]
    else:
        out = text[:start].rstrip(" \t") + (" " if text[end:line_end].strip() else "") + \
            text[end:].lstrip(" \t")
    return out.strip()


# ---------------------------------------------------------------- the programmatic gates


def check(gate: GateSpec, text: str) -> Check:
    """Run a gate that needs no model (not `judge`, not `self_confidence`) on an answer."""
    kind = gate.kind
    if kind == "non_empty":
        ok = bool(re.search(r"\w", text))
        return Check(ok, "has text" if ok else "the answer is empty (no letter or digit)")
    if kind == "not_refusal":
        name = refusal(text)
        return Check(name is None, "not a refusal" if name is None else
                     f"the answer opens with a refusal ({name})")
    if kind == "regex":
        assert gate.pattern is not None
        ok = gate.pattern.search(text) is not None
        return Check(ok, "the regex matches" if ok else "the regex does not match")
    if kind in ("json", "json_schema"):
        try:
            value = json_value(text)
        except ValueError as exc:
            return Check(False, str(exc))
        if kind == "json":
            return Check(True, "valid JSON")
        assert gate.schema_validator is not None
        error = next(iter(gate.schema_validator.iter_errors(value)), None)
        if error is None:
            return Check(True, "valid against the schema")
        at = error.json_path  # where, and which rule: never the offending value itself
        return Check(False, f"JSON does not match the schema at {at}: fails "
                            f"'{error.validator}' ({json.dumps(error.validator_value)[:80]})")
    raise ValueError(f"gate '{kind}' needs a model or a parsed confidence; see cascade.py")
