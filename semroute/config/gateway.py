"""Pydantic schema of `gateway.yaml`, the settings of `semroute serve`: client keys (sha256
hashes only, never the keys), rate limits, request limits, upstream timeouts, CORS, reload and
tracing. Loading (with errors naming file and field) is `load_gateway_config` in loading.py."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def hash_client_key(key: str) -> str:
    """The sha256 hex digest under which a client key is configured (`keys[].sha256`)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Strict):
    """A token bucket: `requests_per_second` refill, up to `burst` requests at once."""

    requests_per_second: float = Field(gt=0)
    burst: int | None = Field(default=None, ge=1, description="bucket size (default: "
                              "max(1, requests_per_second))")

    @property
    def capacity(self) -> float:
        return float(self.burst) if self.burst is not None else max(1.0, self.requests_per_second)


class ClientKey(_Strict):
    """One client API key: a name (shown in metrics and traces), its sha256 and its limits."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    sha256: str
    rate_limit: RateLimit | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.strip().lower()
        if not SHA256_HEX.fullmatch(v):
            raise ValueError("must be the 64-hex sha256 of the key (print it with "
                             "`semroute gateway-key KEY`), never the key itself")
        return v


class RequestLimits(_Strict):
    """What one request may carry, and how long an upstream call may take."""

    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_messages: int = Field(default=500, ge=1)
    max_tokens_cap: int | None = Field(default=None, ge=1, description="largest max_tokens "
                                       "a client may ask for (None: no cap)")
    upstream_timeout_seconds: float | None = Field(
        default=None, gt=0, description="replaces every model's own timeout (None: keep them)")


class TracingSettings(_Strict):
    """OpenTelemetry spans (decide, classify, model call): off unless an exporter is set."""

    exporter: Literal["none", "console", "otlp"] = "none"
    endpoint: str | None = None
    service_name: str = "semroute-gateway"


class GatewaySettings(_Strict):
    """`gateway.yaml`. No `keys`: the gateway is open (bind it to 127.0.0.1 only)."""

    keys: list[ClientKey] = Field(default_factory=list)
    default_rate_limit: RateLimit | None = None
    limits: RequestLimits = Field(default_factory=RequestLimits)
    cors_origins: list[str] = Field(default_factory=list, description="allowed browser "
                                    "origins; empty: CORS off")
    reload_poll_seconds: float = Field(default=1.0, gt=0)
    drain_seconds: float = Field(default=30.0, ge=0)
    expose_decision_headers: bool = True
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    @model_validator(mode="after")
    def _unique(self) -> GatewaySettings:
        for field_name, values in (("name", [k.name for k in self.keys]),
                                   ("sha256", [k.sha256 for k in self.keys])):
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"keys: two keys share the {field_name} {dup[0]!r}")
        return self
