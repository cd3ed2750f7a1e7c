"""Streaming results: SDK events in, text chunks (and tool-call fragments) out, and a final
Completion with usage and the assembled tool calls.

Iterating a stream yields its text; `items()` yields text and `ToolCallDelta`s (a tool call's
index, numbered 0.. in order of appearance, with its id and name first, then argument
fragments) as they arrive. A stream is *primed* when it is opened (read up to its first
output: text or a tool call), so every failure before any output raises from
`Provider.stream()`, where the caller can still fail over. A failure after output was
delivered raises `StreamInterruptedError` carrying the text. A stream that ends without a
finish reason was cut off and counts as a failure too. Stream and AsyncStream share the
bookkeeping; they differ only in how they read and close.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from semroute.config import Usage
from semroute.errors import ProviderError, StreamInterruptedError
from semroute.providers.tools import ToolCall, ToolCallDelta

if TYPE_CHECKING:
    from semroute.providers.base import Completion, PreparedCall, Provider

Item = str | ToolCallDelta
"""What a stream delivers: a text chunk or a fragment of a tool call."""


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
    calls: dict[int, ToolCallDelta] = field(default_factory=dict)  # by our index
    numbers: dict[int, int] = field(default_factory=dict)  # the SDK's index -> ours

    def feed(self, d: StreamDelta) -> list[Item]:
        """Apply one event; return what it adds: its text chunk, then its tool-call
        fragments (renumbered 0.. in order of appearance)."""
        self.model = d.model or self.model
        self.input_tokens = d.input_tokens if d.input_tokens is not None else self.input_tokens
        self.output_tokens = d.output_tokens if d.output_tokens is not None else self.output_tokens
        self.finish_reason = d.finish_reason or self.finish_reason
        out: list[Item] = []
        if d.text:
            self.parts.append(d.text)
            out.append(d.text)
        for c in d.tool_calls:
            n = self.numbers.setdefault(c.index, len(self.numbers))
            acc = self.calls.setdefault(n, ToolCallDelta(n, arguments=""))
            first = acc.id is None and acc.name is None
            if first and c.id is None and c.name is not None:
                c.id = f"call_{n}"  # a server that gives no id: one from the position
            acc.id, acc.name = acc.id or c.id, acc.name or c.name
            acc.arguments = (acc.arguments or "") + (c.arguments or "")
            if c.id or c.name or c.arguments:
                out.append(ToolCallDelta(n, c.id, c.name, c.arguments))
        return out

    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The calls assembled so far, in order (a call the stream never named is dropped)."""
        return tuple(ToolCall(c.id or f"call_{n}", c.name, c.arguments or "{}")
                     for n, c in sorted(self.calls.items()) if c.name)


class _StreamBase:
    """Shared bookkeeping of Stream and AsyncStream: the primed item, items read but not yet
    delivered, what was delivered, and how a failure is reported (a plain ProviderError
    before any output, StreamInterruptedError after)."""

    def __init__(self, provider: Provider[Any, Any], call: PreparedCall, raw: Any) -> None:
        self._provider, self._call, self._raw = provider, call, raw
        self._state = StreamState()
        self._completion: Completion | None = None
        self._pending: Item | None = None  # read by prime(), not yet delivered
        self._queue: deque[Item] = deque()  # read with an earlier item of the same event
        self._delivered: list[str] = []
        self._fragments = 0  # tool-call fragments delivered
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

    def _step(self, event: Any) -> Item | None:
        """Feed one event; its first item (the rest wait in the queue)."""
        items = self._state.feed(self._provider._event(event, self._call))
        self._queue.extend(items[1:])
        return items[0] if items else None

    def _take_pending(self) -> Item | None:
        item, self._pending = self._pending, None
        return self._deliver(item)

    def _deliver(self, item: Item | None) -> Item | None:
        if isinstance(item, str):
            self._delivered.append(item)
        elif item is not None:
            self._fragments += 1
        return item

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
        """The error to raise for `exc`: itself before any output, else
        StreamInterruptedError."""
        self._state.done = True
        if not self._delivered and not self._fragments and self._pending is None:
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
        """Read up to the first output, so failures before any output raise here."""
        self._pending = self._read()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        for item in self.items():
            if isinstance(item, str):
                return item
        raise StopIteration

    def items(self) -> Iterator[Item]:
        """Text chunks and tool-call fragments, as they arrive."""
        while (item := self._take_pending() or self._deliver(self._read())) is not None:
            yield item

    def _read(self) -> Item | None:
        """The next item from the SDK stream; None at its end."""
        if self._queue:
            return self._queue.popleft()
        if self._state.done:
            return None
        try:
            with self._provider._guard(self._call):
                if self._events is None:
                    self._events = iter(self._raw)
                for event in self._events:
                    item = self._step(event)
                    if item is not None:
                        return item
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
        """Read up to the first output, so failures before any output raise here."""
        self._pending = await self._read()

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        while (item := await self._next_item()) is not None:
            if isinstance(item, str):
                return item
        raise StopAsyncIteration

    async def items(self) -> AsyncIterator[Item]:
        """Text chunks and tool-call fragments, as they arrive."""
        while (item := await self._next_item()) is not None:
            yield item

    async def _next_item(self) -> Item | None:
        return self._take_pending() or self._deliver(await self._read())

    async def _read(self) -> Item | None:
        """The next item from the SDK stream; None at its end."""
        if self._queue:
            return self._queue.popleft()
        if self._state.done:
            return None
        try:
            with self._provider._guard(self._call):
                if self._events is None:
                    self._events = aiter(self._raw)
                async for event in self._events:
                    item = self._step(event)
                    if item is not None:
                        return item
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
