"""`RedisStore`: the `Store` protocol on a Redis server, shared by every gateway replica.

Values are the same canonical JSON text `MemoryStore` and `SqliteStore` keep; TTLs are in
milliseconds (`SET ... PX`). `compare_and_set` and `add` are Lua scripts, so each is one atomic
step on the server whatever the number of replicas. A connection error or a timeout is raised
as `StoreUnavailableError`: callers decide what an outage means (see `state/fallback.py`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from semroute.errors import ConfigError, StoreUnavailableError
from semroute.state.store import Json, dump

if TYPE_CHECKING:
    import redis

T = TypeVar("T")

# KEYS[1]; ARGV: has-expected (0|1), expected text, new text, ttl ms. Text compare, else
# numeric compare (a counter written by `add` may spell a number differently than Python).
CAS = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  local a, b = tonumber(cur or ''), tonumber(ARGV[2])
  if a == nil or b == nil or a ~= b then return 0 end
end
if tonumber(ARGV[4]) <= 0 then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
return 1
"""

# KEYS[1]; ARGV: amount, ttl ms (used only when the key is created: EXPIRE NX semantics).
# The sum is formatted to round-trip a double and always reads back as a JSON float.
ADD = """
local cur = redis.call('GET', KEYS[1])
local base = 0
if cur then
  base = tonumber(cur)
  if base == nil then return redis.error_reply('NOTNUMBER') end
end
local total = base + tonumber(ARGV[1])
local text = string.format('%.17g', total)
if not string.find(text, '[%.eEn]') then text = text .. '.0' end
if cur then redis.call('SET', KEYS[1], text, 'KEEPTTL')
elseif tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], text, 'PX', ARGV[2])
else redis.call('DEL', KEYS[1]) end
return text
"""

# A token bucket per key, on the server's clock (replicas' clocks never matter).
# KEYS[1]; ARGV: tokens per second, capacity. Returns '' when allowed, else seconds to wait.
TOKEN_BUCKET = """
local rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]) or cap, tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - at) * rate)
local wait = ''
if tokens >= 1 then tokens = tokens - 1
else wait = string.format('%.17g', (1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 1000)
return wait
"""


def redacted(url: str) -> str:
    """`url` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def ttl_ms(ttl_seconds: float) -> int:
    """A TTL in whole milliseconds (at least 1 for any positive TTL; 0 means delete)."""
    return max(1, math.ceil(ttl_seconds * 1000)) if ttl_seconds > 0 else 0


class RedisStore:
    """A `Store` on the Redis server at `url` (redis://, rediss:// or unix://). Thread-safe
    (a connection pool); each call waits at most `timeout_s` and is never retried here, so an
    outage surfaces at once as `StoreUnavailableError` and the caller's fallback decides."""

    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        try:  # an optional extra: `memory` users never need it
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigError(["field 'router.shared_state.backend': 'redis' needs the redis "
                               "client: pip install 'semroute-llm[redis]'"]) from None
        self._errors = (redis.ConnectionError, redis.TimeoutError, OSError)
        self._response_error = redis.ResponseError
        self.url = url
        self.name = redacted(url)
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._cas = self.client.register_script(CAS)
        self._add = self.client.register_script(ADD)
        self._bucket = self.client.register_script(TOKEN_BUCKET)

    def get(self, key: str) -> Json | None:
        text = self._call(lambda: self.client.get(key))
        if text is None:
            return None
        value: Json = json.loads(text)
        return value

    def set(self, key: str, value: Json, ttl_seconds: float) -> None:
        text, ms = dump(value), ttl_ms(ttl_seconds)
        if ms:
            self._call(lambda: self.client.set(key, text, px=ms))
        else:
            self._call(lambda: self.client.delete(key))

    def compare_and_set(self, key: str, expected: Json | None, value: Json,
                        ttl_seconds: float) -> bool:
        args = ["0", ""] if expected is None else ["1", dump(expected)]
        args += [dump(value), str(ttl_ms(ttl_seconds))]
        return bool(self._call(lambda: self._cas(keys=[key], args=args)))

    def add(self, key: str, amount: float, ttl_seconds: float) -> float:
        try:
            text = self._call(lambda: self._add(keys=[key], args=[repr(float(amount)),
                                                                  str(ttl_ms(ttl_seconds))]))
        except self._response_error as exc:
            if "NOTNUMBER" not in str(exc):
                raise
            raise TypeError(f"store key {key!r} holds something else than a number") from None
        return float(text)

    def delete(self, key: str) -> None:
        self._call(lambda: self.client.delete(key))

    def take_token(self, key: str, per_second: float, capacity: float) -> float | None:
        """Take one token from the bucket at `key` (refilled at `per_second`, holding at most
        `capacity`): None if there was one, else the seconds until there is."""
        wait = self._call(lambda: self._bucket(keys=[key], args=[repr(float(per_second)),
                                                                 repr(float(capacity))]))
        return float(wait) if wait else None

    def ping(self) -> bool:
        """Whether the server answers now (never raises)."""
        try:
            return bool(self._call(self.client.ping))
        except StoreUnavailableError:
            return False

    def close(self) -> None:
        """Close the pool's connections (they reopen on the next call)."""
        self.client.close()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run one Redis command; an unreachable or silent server is `StoreUnavailableError`."""
        try:
            return fn()
        except self._errors as exc:
            raise StoreUnavailableError(f"Redis at {self.name} is unreachable: {exc}",
                                        store=self.name) from exc
