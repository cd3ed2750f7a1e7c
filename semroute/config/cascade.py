"""A route's `cascade:`: try the cheap model, check its answer with gates, escalate.

`models` are the steps, cheap to strong; each is a catalogue key or a list of keys (that
step's failover chain). `gates` must all pass for a step's answer to be accepted. A gate is
written as a bare name (`non_empty`, `not_refusal`, `json`) or as a one-key mapping
(`json_schema: {...}`, `regex: "..."`, `self_confidence: {min: 0.7}`,
`judge: {model: key, min_score: 0.7}`). Regexes and JSON schemas are checked here, at load.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

BARE_GATES = ("non_empty", "not_refusal", "json")
GATE_KINDS = (*BARE_GATES, "json_schema", "regex", "self_confidence", "judge")
CascadeStream = Literal["gated", "last"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ConfidenceGate(_Strict):
    """`self_confidence: {min: 0.7}`: the step's model states its confidence (0-1)."""

    min: float = Field(ge=0.0, le=1.0)


class JudgeGate(_Strict):
    """`judge: {model: key, min_score: 0.7}`: a judge model rates the answer 1-10; the gate
    passes when rating / 10 >= min_score."""

    model: str = Field(min_length=1)
    min_score: float = Field(default=0.7, ge=0.0, le=1.0)


class GateSpec(_Strict):
    """One gate: exactly one of its fields is set (`kind` says which)."""

    non_empty: Literal[True] | None = None
    not_refusal: Literal[True] | None = None
    json_: Literal[True] | None = Field(default=None, alias="json")
    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    self_confidence: ConfidenceGate | None = None
    judge: JudgeGate | None = None
    _compiled: re.Pattern[str] | None = PrivateAttr(default=None)
    _validator: Validator | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v in BARE_GATES:
                return {v: True}
            if v in GATE_KINDS:
                raise ValueError(f"gate '{v}' takes settings: write it as a mapping, e.g. "
                                 f"`{v}: ...` (README \"Cascades\")")
            raise ValueError(f"unknown gate '{v}'; known: {', '.join(GATE_KINDS)}")
        if isinstance(v, dict):
            if len(v) != 1:
                raise ValueError(f"one gate per list item (got {len(v)} keys: "
                                 f"{', '.join(map(str, v)) or 'none'}); known: "
                                 f"{', '.join(GATE_KINDS)}")
            unknown = [k for k in v if k not in GATE_KINDS]
            if unknown:
                raise ValueError(f"unknown gate '{unknown[0]}'; known: {', '.join(GATE_KINDS)}")
        return v

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return v

    @field_validator("json_schema")
    @classmethod
    def _schema_valid(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            try:
                validator_for(v, default=Draft202012Validator).check_schema(v)
            except SchemaError as exc:
                where = "/".join(map(str, exc.path)) or "(top)"
                raise ValueError(f"not a valid JSON schema at {where}: {exc.message}") from None
        return v

    def model_post_init(self, context: Any) -> None:
        if self.regex is not None:
            self._compiled = re.compile(self.regex)
        if self.json_schema is not None:
            cls = validator_for(self.json_schema, default=Draft202012Validator)
            self._validator = cls(self.json_schema)

    @property
    def kind(self) -> str:
        """The gate's name, as written in the route file."""
        for name in GATE_KINDS:
            if getattr(self, "json_" if name == "json" else name) is not None:
                return name
        raise AssertionError("a gate with no kind")  # the validators make this impossible

    @property
    def pattern(self) -> re.Pattern[str] | None:
        """The `regex` gate's pattern, compiled once at load."""
        return self._compiled

    @property
    def schema_validator(self) -> Validator | None:
        """The `json_schema` gate's validator, built once at load."""
        return self._validator

    @model_validator(mode="after")
    def _exactly_one(self) -> GateSpec:
        set_ = [n for n in GATE_KINDS
                if getattr(self, "json_" if n == "json" else n) is not None]
        if len(set_) != 1:
            raise ValueError(f"a gate is exactly one of {', '.join(GATE_KINDS)}")
        return self


class CascadeSpec(_Strict):
    """A route's `cascade:` (README "Cascades"). `stream`: `gated` (streamed requests climb
    the cascade too; an accepted cheap answer is replayed, the last step streams live) or
    `last` (streamed requests go straight to the last step)."""

    models: list[str | list[str]] = Field(min_length=2)
    gates: list[GateSpec] = Field(min_length=1)
    stream: CascadeStream = "gated"

    @field_validator("models")
    @classmethod
    def _steps_valid(cls, v: list[str | list[str]]) -> list[str | list[str]]:
        seen: list[tuple[str, ...]] = []
        for i, step in enumerate(v, start=1):
            keys = (step,) if isinstance(step, str) else tuple(step)
            if not keys or not all(keys):
                raise ValueError(f"step {i} must name at least one model key")
            if len(set(keys)) != len(keys):
                raise ValueError(f"step {i} names a model twice: {list(keys)}")
            if keys in seen:
                raise ValueError(f"step {i} repeats step {seen.index(keys) + 1} ({list(keys)})")
            seen.append(keys)
        return v

    @property
    def steps(self) -> tuple[tuple[str, ...], ...]:
        """Each step's failover chain, cheap to strong."""
        return tuple((s,) if isinstance(s, str) else tuple(s) for s in self.models)

    def model_keys(self) -> list[tuple[str, str]]:
        """(field, key) for every catalogue key this cascade names (for the catalogue check)."""
        keyed = [("cascade.models", k) for step in self.steps for k in step]
        keyed += [(f"cascade.gates[{i}].judge.model", g.judge.model)
                  for i, g in enumerate(self.gates, start=1) if g.judge is not None]
        return keyed
