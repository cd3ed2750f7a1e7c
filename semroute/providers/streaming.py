"""Streaming results: SDK events in, text chunks out, and a final Completion with usage.

A stream is *primed* when it is opened (read up to its first text chunk), so every failure
before any text raises from `Provider.stream()`, where the caller can still fail over. A failure
after text was delivered raises `StreamInterruptedError` carrying that text. A stream that ends
without a finish reason was cut off and counts as a failure too. Stream and AsyncStream share
the bookkeeping; they differ only in how they read and close.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from semroute.config import Usage
from semroute.errors import ProviderError, StreamInterruptedError
from semroute.providers.tools import ToolCall, ToolCallDelta

if TYPE_CHECKING:
    from semroute.providers.base import Completion, PreparedCall, Provider


@dataclass
class StreamDelta:
    """What one SDK stream event contributes; None fields leave the running state unchanged."""

    text: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


@dataclass
class StreamState:
    """Running totals of one stream: text so far, model, token counts, finish reason, and the
    tool calls being assembled (by index: id and name, then argument fragments)."""

    parts: list[str] = field(default_factory=list)
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    done: bool = False
    calls: dict[int, ToolCallDelta] = field(default_factory=dict)

    def feed(self, d: StreamDelta) -> str | None:
        """Apply one event; return its text chunk, if any."""
        self.model = d.model or self.model
        self.input_tokens = d.input_tokens if d.input_tokens is not None else self.input_tokens
        self.output_tokens = d.output_tokens if d.output_tokens is not None else self.output_tokens
        self.finish_reason = d.finish_reason or self.finish_reason
        for c in d.tool_calls:
            acc = self.calls.setdefault(c.index, ToolCallDelta(c.index, arguments=""))
            acc.id, acc.name = acc.id or c.id, acc.name or c.name
            acc.arguments = (acc.arguments or "") + (c.arguments or "")
        if d.text:
            self.parts.append(d.text)
        return d.text or None

    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The calls assembled so far, in index order (a call the stream never named is
        dropped; a missing id gets one from its position)."""
        return tuple(ToolCall(c.id or f"call_{n}", c.name, c.arguments or "{}")
                     for n, c in enumerate(self.calls[i] for i in sorted(self.calls)) if c.name)


class _StreamBase:
    """Shared bookkeeping of Stream and AsyncStream: the primed chunk, what was delivered, and
    how a failure is reported (a plain ProviderError before any text, StreamInterruptedError
    after)."""

    def __init__(self, provider: Provider[Any, Any], call: PreparedCall, raw: Any) -> None:
        self._provider, self._call, self._raw = provider, call, raw
        self._state = StreamState()
        self._completion: Completion | None = None
        self._pending: str | None = None  # read by prime(), not yet delivered
        self._delivered: list[str] = []
        self._closed = False

    @property
    def chunks_delivered(self) -> int:
        """How many text chunks the caller has received."""
        return len(self._delivered)

    @property
    def closed(self) -> bool:
        """True once the connection is released (read to the end, failed, or closed)."""
        return self._closed

    def received(self) -> Completion:
        """What the caller has received so far, as a Completion (usage as reported so far)."""
        if self._completion is not None and self._pending is None:
            return self._completion
        s = self._state
        text, usage = "".join(self._delivered), Usage(s.input_tokens, s.output_tokens)
        return self._provider._completion(self._call, text, s.model, usage, None)

    def _step(self, event: Any) -> str | None:
        return self._state.feed(self._provider._delta(event, self._call.request))

    def _take_pending(self) -> str | None:
        chunk, self._pending = self._pending, None
        if chunk is not None:
            self._delivered.append(chunk)
        return chunk

    def _deliver(self, chunk: str | None) -> str | None:
        if chunk is not None:
            self._delivered.append(chunk)
        return chunk

    def _ended(self) -> None:
        """The SDK stream is exhausted: a stream that never said why it finished (no finish
        reason, no closing events) was cut off, and is reported as a failure."""
        self._closed = True
        if self._state.finish_reason is None:
            cut = self._provider._error(
                None, "the stream ended before the model finished (no finish reason)", ""
            )
            raise self._failure(cut)
        self._finish()

    def _finish(self) -> Completion:
        if self._completion is None:
            self._state.done = True
            self._completion = self._provider._from_stream(self._call, self._state)
        return self._completion

    def _failure(self, exc: ProviderError) -> ProviderError:
        """The error to raise for `exc`: itself before any text, else StreamInterruptedError."""
        self._state.done = True
        if not self._delivered and self._pending is None:
            return exc
        text = "".join(self._delivered)
        return StreamInterruptedError(
            exc.provider,
            exc.model,
            exc.status,
            f"stream interrupted after {len(self._delivered)} chunk(s): {exc.message}",
            partial_text=text,
            retry_after=exc.retry_after,
            scope=exc.scope,
        )


class Stream(_StreamBase):
    """Iterate for text chunks; `final()` gives the Completion (usage included) afterwards;
    `close()` (or leaving a `with` block) releases the connection early."""

    _events: Iterator[Any] | None = None

    def prime(self) -> None:
        """Read up to the first text chunk, so failures before any text raise here."""
        self._pending = self._read()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        chunk = self._take_pending() or self._deliver(self._read())
        if chunk is None:
            raise StopIteration
        return chunk

    def _read(self) -> str | None:
        """The next text chunk from the SDK stream; None at its end."""
        if self._state.done:
            return None
        try:
            with self._provider._guard(self._call):
                if self._events is None:
                    self._events = iter(self._raw)
                for event in self._events:
                    chunk = self._step(event)
                    if chunk:
                        return chunk
        except ProviderError as exc:
            self.close()
            raise self._failure(exc) from None
        self._ended()
        return None

    def final(self) -> Completion:
        """Drain what is left and return the whole completion."""
        for _ in self:
            pass
        return self._finish()

    def close(self) -> None:
        """Release the connection early (idempotent)."""
        if not self._closed:
            self._closed = True
            self._state.done = True
            self._raw.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStream(_StreamBase):
    """Async twin of Stream: `async for chunk in s`, then `await s.final()`; `await s.close()`."""

    _events: AsyncIterator[Any] | None = None

    async def prime(self) -> None:
        """Read up to the first text chunk, so failures before any text raise here."""
        self._pending = await self._read()

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        chunk = self._take_pending() or self._deliver(await self._read())
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def _read(self) -> str | None:
        """The next text chunk from the SDK stream; None at its end."""
        if self._state.done:
            return None
        try:
            with self._provider._guard(self._call):
                if self._events is None:
                    self._events = aiter(self._raw)
                async for event in self._events:
                    chunk = self._step(event)
                    if chunk:
                        return chunk
        except ProviderError as exc:
            await self.close()
            raise self._failure(exc) from None
        self._ended()
        return None

    async def final(self) -> Completion:
        """Drain what is left and return the whole completion."""
        async for _ in self:
            pass
        return self._finish()

    async def close(self) -> None:
        """Release the connection early (idempotent)."""
        if not self._closed:
            self._closed = True
            self._state.done = True
            await self._raw.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
