"""Who may call the gateway and how often: client keys (sha256 at rest) and per-key rate
limits behind `RateLimiter`: in-process token buckets (per replica), or `SharedRateLimiter`'s
buckets in Redis (one limit across replicas, the in-process buckets while Redis is down);
`Access`, the settings of the moment, re-read from gateway.yaml on SIGHUP by `reread`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from semroute.config import (
    ClientKey,
    GatewaySettings,
    RateLimit,
    hash_client_key,
    load_gateway_config,
)
from semroute.errors import ConfigError, GatewayError
from semroute.state import Circuit, RedisStore

log = logging.getLogger("semroute.gateway")
# fields read once at start-up: a SIGHUP in one process keeps their old values (logged)
START_ONLY = ("cors_origins", "reload_poll_seconds", "drain_seconds", "tracing")
ANONYMOUS = ClientKey(name="anonymous", sha256="0" * 64)
KEY_PREFIX = "semroute:ratelimit"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: `Authorization: Bearer <key>` (OpenAI SDKs) or `x-api-key`
    (Anthropic SDKs)."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


class ClientKeys:
    """The configured keys, looked up by the sha256 of what a client presents. With no keys
    configured the gateway is open and every caller is `anonymous`."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._by_hash = {k.sha256: k for k in settings.keys}

    @property
    def required(self) -> bool:
        return bool(self._by_hash)

    def authenticate(self, headers: Mapping[str, str]) -> ClientKey:
        """The caller's key entry, or GatewayError 401 (the message never echoes the key)."""
        if not self._by_hash:
            return ANONYMOUS
        key = presented_key(headers)
        if key is None:
            raise GatewayError(401, "missing client key: send 'Authorization: Bearer <key>' "
                                    "or 'x-api-key: <key>'")
        found = self._by_hash.get(hash_client_key(key))
        if found is None:
            raise GatewayError(401, "invalid client key (ask the gateway's operator for one)")
        return found


@dataclass(frozen=True)
class Access:
    """The gateway settings in force and the client keys they configure: one object, swapped
    whole, so a request sees the old keys and limits or the new ones, never a mix."""

    settings: GatewaySettings
    keys: ClientKeys

    @classmethod
    def of(cls, settings: GatewaySettings) -> Access:
        return cls(settings, ClientKeys(settings))


def reread(path: str | Path, current: GatewaySettings,
           start_only: Sequence[str] = START_ONLY) -> GatewaySettings | None:
    """gateway.yaml read again (SIGHUP): the new settings, or None when the file is broken
    (logged as an error naming file and field; the caller keeps `current`). Changes to the
    fields in `start_only` are logged: they take effect at the next start."""
    try:
        new = load_gateway_config(path)
    except ConfigError as exc:
        log.error("semroute serve: SIGHUP: %s not reloaded, keeping the previous settings: %s",
                  path, "; ".join(exc.problems))
        return None
    stale = [f for f in start_only if getattr(new, f) != getattr(current, f)]
    if stale:
        log.warning("semroute serve: SIGHUP: %s: %s changed; read at start-up only, in effect "
                    "after a restart", path, ", ".join(stale))
    log.info("semroute serve: SIGHUP: reloaded %s (%d client keys)", path, len(new.keys))
    return new


class RateLimiter(Protocol):
    """Takes one request from `client`'s allowance: None if allowed, else the seconds until
    the next request would be. Must be safe from several threads. A limiter whose `take`
    may block on I/O says so with a true `blocking` attribute (the app then calls it in a
    worker thread)."""

    def take(self, client: str, limit: RateLimit) -> float | None: ...


class TokenBucketLimiter:
    """In-process token buckets, one per client name (a replica each: a shared backend gives
    one limit across replicas). `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str, limit: RateLimit) -> float | None:
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(client, (limit.capacity, now))
            tokens = min(limit.capacity, tokens + (now - at) * limit.requests_per_second)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return None
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / limit.requests_per_second


class SharedRateLimiter:
    """Token buckets in Redis (`semroute:ratelimit:<client>`, refilled on the server's clock
    by one Lua script): one limit across every replica. While the circuit is open the
    `fallback` in-process buckets limit each replica on its own (counted as `rate_limits`)."""

    blocking = True

    def __init__(self, redis: RedisStore, circuit: Circuit,
                 fallback: RateLimiter | None = None) -> None:
        self.redis, self.circuit = redis, circuit
        self.fallback: RateLimiter = fallback or TokenBucketLimiter()

    def take(self, client: str, limit: RateLimit) -> float | None:
        return self.circuit.run(
            "rate_limits",
            lambda: self.redis.take_token(f"{KEY_PREFIX}:{client}", limit.requests_per_second,
                                          limit.capacity),
            lambda: self.fallback.take(client, limit))


def rate_limit(limiter: RateLimiter, settings: GatewaySettings, client: ClientKey) -> None:
    """Take one request from the client's rate limit (its own, else the default): 429."""
    limit = client.rate_limit or settings.default_rate_limit
    if limit is not None:
        wait = limiter.take(client.name, limit)
        if wait is not None:
            raise GatewayError(429, f"rate limit of client '{client.name}' exceeded "
                                    f"({limit.requests_per_second:g} requests/s, burst "
                                    f"{limit.capacity:g}); retry in {wait:.2f} s",
                               retry_after=wait)
