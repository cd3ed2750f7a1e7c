"""The provider interface: model spec, result types, and the shared call flow.

Adapters only translate to and from their SDK; sync and async calls share every step but the
network call itself, which lives in two thin wrappers. Request shaping is in request.py,
stream bookkeeping in streaming.py, the error taxonomy in errors.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

from semroute.config import ModelSpec, ProviderName, StructuredMode, Usage
from semroute.errors import ErrorScope, FatalProviderError, ProviderError, RetryableProviderError
from semroute.providers.clients import CLIENTS
from semroute.providers.errors import (
    PLACEHOLDER_KEY,
    SdkErrors,
    body_codes,
    body_message,
    body_status,
    is_dropped_connection,
    is_transport_error,
    parse_retry_after,
    scope_for,
    scrub,
)
from semroute.providers.request import ChatRequest, Message, make_request, match_label
from semroute.providers.streaming import AsyncStream, Stream, StreamDelta, StreamState
from semroute.providers.tools import ToolCall


@dataclass(frozen=True)
class Completion:
    """A finished call. `text` is the raw output; `label` is set when labels were requested
    and the output names exactly one of them (None if it does not). `finish_reason` uses
    OpenAI's words ("stop", "length", "tool_calls", "content_filter"). `tool_calls` are the
    calls the model asked for (finish_reason "tool_calls"); `text` may then be empty."""

    text: str
    model: str
    provider: str
    usage: Usage
    finish_reason: str | None
    latency_s: float
    label: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


MALFORMED = (ValueError, KeyError, TypeError, AttributeError, IndexError)
"""What reading a JSON body of the wrong shape raises: a malformed answer, the server's fault."""

C = TypeVar("C")
AC = TypeVar("AC")


@dataclass(frozen=True)
class PreparedCall:
    """One prepared call: the neutral request, the SDK kwargs, the key, the start time."""

    request: ChatRequest
    kwargs: dict[str, Any]
    api_key: str
    started: float

    def __repr__(self) -> str:  # never show the key
        return f"PreparedCall(request={self.request!r})"


class _ErrorGuard(AbstractContextManager[None]):
    """Turns SDK exceptions raised inside the block into ProviderErrors (sync and async alike)."""

    def __init__(self, provider: Provider[Any, Any], call: PreparedCall) -> None:
        self._provider, self._call = provider, call

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, ProviderError):
            mapped = self._provider._map_error(exc, self._call.api_key)
            if mapped is not None:
                # `from None`: the SDK exception holds the request, whose headers hold the key.
                raise mapped from None


# ---------------------------------------------------------------- the interface


class Provider(ABC, Generic[C, AC]):
    """One model behind one SDK. Subclasses translate requests, responses, events and errors."""

    name: ClassVar[ProviderName]
    default_key_env: ClassVar[str]
    sdk_errors: ClassVar[SdkErrors]
    structured_modes: ClassVar[tuple[StructuredMode, ...]]

    def __init__(self, spec: ModelSpec) -> None:
        if spec.provider != self.name:
            raise ValueError(f"{type(self).__name__} cannot serve provider {spec.provider!r}")
        if spec.structured not in self.structured_modes:
            raise ValueError(
                f"model {spec.key!r}: structured={spec.structured!r} is not supported by "
                f"{self.name} (use one of {', '.join(self.structured_modes)})"
            )
        self.spec = spec

    def __repr__(self) -> str:
        s = self.spec
        return f"{type(self).__name__}(key={s.key!r}, model={s.model!r}, base_url={s.base_url!r})"

    # ---- public API: sync and async differ only in the awaited network call

    def complete(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        max_tokens: int = 256,
        temperature: float | None = None,
        labels: Sequence[str] | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        stop: str | Sequence[str] | None = None,
        **extra: Any,
    ) -> Completion:
        """Send one chat request and wait for the whole answer."""
        call = self._prepare(messages, system, max_tokens, temperature, labels, extra, False,
                             (tools, tool_choice, stop))
        with self._guard(call):
            response = self._create(self._client(call.api_key), call.kwargs)
        return self._from_response(call, response)

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        max_tokens: int = 256,
        temperature: float | None = None,
        labels: Sequence[str] | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        stop: str | Sequence[str] | None = None,
        **extra: Any,
    ) -> Completion:
        """Async `complete`."""
        call = self._prepare(messages, system, max_tokens, temperature, labels, extra, False,
                             (tools, tool_choice, stop))
        with self._guard(call):
            response = await self._acreate(self._aclient(call.api_key), call.kwargs)
        return self._from_response(call, response)

    def stream(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        max_tokens: int = 256,
        temperature: float | None = None,
        labels: Sequence[str] | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        stop: str | Sequence[str] | None = None,
        **extra: Any,
    ) -> Stream:
        """Start a streamed request and read up to its first text chunk, so that every failure
        before any text (HTTP errors, an error event, a dropped connection) raises here, where
        it can still be failed over; iterate the result for text."""
        call = self._prepare(messages, system, max_tokens, temperature, labels, extra, True,
                             (tools, tool_choice, stop))
        with self._guard(call):
            raw = self._create(self._client(call.api_key), call.kwargs)
        stream = Stream(self, call, raw)
        stream.prime()
        return stream

    async def astream(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        max_tokens: int = 256,
        temperature: float | None = None,
        labels: Sequence[str] | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        stop: str | Sequence[str] | None = None,
        **extra: Any,
    ) -> AsyncStream:
        """Async `stream`: `s = await p.astream(...)`, `async for chunk in s`, `await s.final()`."""
        call = self._prepare(messages, system, max_tokens, temperature, labels, extra, True,
                             (tools, tool_choice, stop))
        with self._guard(call):
            raw = await self._acreate(self._aclient(call.api_key), call.kwargs)
        stream = AsyncStream(self, call, raw)
        await stream.prime()
        return stream

    # ---- shared steps

    def api_key(self) -> str:
        """The key, read from the environment now; a placeholder for keyless local servers."""
        env = self.spec.api_key_env or (
            self.default_key_env if self.spec.base_url is None else None
        )
        if env is None:
            return PLACEHOLDER_KEY
        value = os.environ.get(env, "")
        if not value:
            raise FatalProviderError(
                self.name,
                self.spec.model,
                None,
                f"environment variable {env} is not set",
                scope=ErrorScope.NEXT_MODEL,
            )
        return value

    def _prepare(
        self,
        messages: Sequence[Message],
        system: str | None,
        max_tokens: int,
        temperature: float | None,
        labels: Sequence[str] | None,
        extra: Mapping[str, Any],
        stream: bool,
        tooling: tuple[Any, Any, Any] = (None, None, None),
    ) -> PreparedCall:
        request = make_request(messages, system, max_tokens, temperature, labels, extra,
                               *tooling)
        kwargs = self._build(request, stream)
        kwargs.setdefault("timeout", self.spec.timeout)
        return PreparedCall(request, kwargs, self.api_key(), time.perf_counter())

    def _cache_key(self, api_key: str) -> tuple[str, ...]:
        fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:16]
        return (self.name, self.spec.base_url or "", self.spec.api_key_env or "", fingerprint)

    def _client(self, api_key: str) -> C:
        return CLIENTS.get(
            self._cache_key(api_key), lambda: self._new_client(api_key), is_async=False
        )

    def _aclient(self, api_key: str) -> AC:
        return CLIENTS.get(
            self._cache_key(api_key), lambda: self._new_async_client(api_key), is_async=True
        )

    def _guard(self, call: PreparedCall) -> _ErrorGuard:
        return _ErrorGuard(self, call)

    def _from_response(self, call: PreparedCall, response: Any) -> Completion:
        if isinstance(response, str):  # a body not labelled JSON: the SDKs hand it over as text
            with contextlib.suppress(ValueError):
                response = json.loads(response)
        try:
            if not isinstance(response, dict):
                raise ValueError(f"not a JSON object: {str(response)[:200]!r}")
            text, model, usage, finish, calls = self._parse(response, call.request)
        except MALFORMED as exc:
            raise self._malformed(exc, call.api_key) from None
        return self._completion(call, text, model, usage, finish, calls)

    def _event(self, event: Any, call: PreparedCall) -> StreamDelta:
        """What one stream event contributes; an event of the wrong shape is the server's."""
        try:
            if not isinstance(event, dict):
                raise ValueError(f"event is not a JSON object: {str(event)[:200]!r}")
            return self._delta(event, call.request)
        except MALFORMED as exc:
            raise self._malformed(exc, call.api_key) from None

    def _malformed(self, exc: Exception, api_key: str) -> ProviderError:
        return self._error(None, f"malformed response from the server: "
                                 f"{type(exc).__name__}: {exc}", api_key)

    def _from_stream(self, call: PreparedCall, state: StreamState) -> Completion:
        usage = Usage(state.input_tokens, state.output_tokens)
        return self._completion(call, "".join(state.parts), state.model, usage,
                                state.finish_reason, state.tool_calls())

    def _completion(
        self,
        call: PreparedCall,
        text: str,
        model: str | None,
        usage: Usage,
        finish: str | None,
        tool_calls: tuple[ToolCall, ...] = (),
    ) -> Completion:
        labels = call.request.labels
        if tool_calls and finish in (None, "stop"):  # some servers say "stop" after calls
            finish = "tool_calls"
        return Completion(
            text=text,
            model=model or self.spec.model,
            provider=self.name,
            usage=usage,
            finish_reason=finish,
            latency_s=time.perf_counter() - call.started,
            label=match_label(text, labels) if labels else None,
            tool_calls=tool_calls,
        )

    def _error(
        self,
        status: int | None,
        message: str,
        api_key: str,
        retry_after: float | None = None,
        codes: str = "",
    ) -> ProviderError:
        """The ProviderError for a status (None = transport failure), scoped by `scope_for`."""
        scope = scope_for(status, f"{message} {codes}")
        cls = RetryableProviderError if scope is ErrorScope.RETRY else FatalProviderError
        return cls(
            self.name,
            self.spec.model,
            status,
            scrub(message, api_key),
            retry_after=retry_after,
            scope=scope,
        )

    # ---- adapter hooks

    @abstractmethod
    def _new_client(self, api_key: str) -> C:
        """A sync SDK client with the SDK's own retries off."""

    @abstractmethod
    def _new_async_client(self, api_key: str) -> AC:
        """An async SDK client with the SDK's own retries off."""

    @abstractmethod
    def _build(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        """SDK keyword arguments for the request."""

    @abstractmethod
    def _create(self, client: C, kwargs: dict[str, Any]) -> Any:
        """The sync network call."""

    @abstractmethod
    async def _acreate(self, client: AC, kwargs: dict[str, Any]) -> Any:
        """The async network call."""

    @abstractmethod
    def _parse(
        self, response: dict[str, Any], request: ChatRequest
    ) -> tuple[str, str | None, Usage, str | None, tuple[ToolCall, ...]]:
        """(text, model, usage, finish_reason, tool calls) of a whole JSON response; raises
        one of MALFORMED when the body lacks what an answer must have."""

    @abstractmethod
    def _delta(self, event: dict[str, Any], request: ChatRequest) -> StreamDelta:
        """What one JSON stream event contributes."""

    def _map_error(self, exc: Exception, api_key: str) -> ProviderError | None:
        """The ProviderError for an SDK exception, or None to let it propagate."""
        sdk = self.sdk_errors
        body = getattr(exc, "body", None)
        if isinstance(exc, sdk.status):
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None)
            message = body_message(body) or str(exc)
            status: int | None = int(getattr(exc, "status_code", 0)) or None
            if status is not None and status < 400:  # an error event inside a streamed 200
                status, message = body_status(body), f"error event in the stream: {message}"
            return self._error(
                status, message, api_key, parse_retry_after(headers), body_codes(body)
            )
        if isinstance(exc, sdk.timeout) and not is_dropped_connection(exc):
            return self._error(None, f"timed out after {self.spec.timeout:g} s", api_key)
        if isinstance(exc, sdk.connection) or is_transport_error(exc):
            cause = exc if is_transport_error(exc) else exc.__cause__ or exc.__context__
            if isinstance(exc, sdk.timeout):  # a dropped connection: name aiohttp's error
                cause = cause.__cause__ if cause and cause.__cause__ else cause
            detail = f": {type(cause).__name__}: {cause}" if cause else ""
            return self._error(None, f"connection failed{detail}", api_key)
        if isinstance(exc, sdk.base):  # a stream's error event, a response it could not validate
            message = body_message(body) or f"{type(exc).__name__}: {exc}"
            return self._error(body_status(body), message, api_key, codes=body_codes(body))
        if isinstance(exc, json.JSONDecodeError):  # the SDKs let a broken 200 body through
            return self._error(None, f"malformed response from the server: {exc}", api_key)
        return None
