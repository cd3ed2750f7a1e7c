"""`Response`: the answer, how it was obtained, and for streamed answers the stream's life:
iterate it, leave early, or close it; it is traced once, whichever way it ends."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from semroute.dispatching.attempts import Attempt
from semroute.dispatching.cascade import CascadeOutcome
from semroute.dispatching.parallel import ParallelOutcome
from semroute.errors import ProviderError
from semroute.providers import (
    AsyncStream,
    Completion,
    Plan,
    Stream,
    ToolCall,
    ToolCallDelta,
    Usage,
    run_async,
    run_sync,
)
from semroute.routing import Decision

StreamState = Literal["open", "complete", "closed early", "interrupted"]
Settle = Callable[["Response", int, ProviderError | None], Plan[None]]
"""Called once when a streamed response ends: (response, chunks delivered, error) -> a plan
that prices and traces it."""

ASYNC_ONLY = "this response streams asynchronously: use `async for` and `await r.aclose()`"
SYNC_ONLY = "this response streams synchronously: use `for` and `r.close()`"


@dataclass
class Response:
    """The answer and everything about how it was obtained.

    With `stream=True`, iterate the response (`for chunk in r` / `async for chunk in r`) to
    receive the text; `text`, `usage`, `cost_usd` and the trace are complete when it ends.
    Leaving the loop early, `r.close()` / `await r.aclose()`, or the end of a `with` /
    `async with` block closes the stream (releasing its connection) and traces what arrived;
    `stream_state` says how it ended: "complete", "closed early" or "interrupted" (a
    `StreamInterruptedError` was raised). Without streaming, iterating yields the whole text.

    On a parallel route (README "Parallel-then-pick"), `parallel` says which models were asked,
    which answered and which was picked and why; `usage` and `cost_usd` then sum every call
    (the judge's too), and the model fields name the picked model.

    `budget` (README "Budgets") says what `max_cost_usd` and the period caps did: the models
    before and after, the estimate, each cap's spend and reset time, why, and the cost
    counted; None when no budget applied.
    On a cascade route (README "Cascades"), `cascade` lists each step tried, its gate verdict
    and cost; `usage` and `cost_usd` sum every step and every judge call.

    `tool_calls` are the calls the model asked for (README "Tools"; `finish_reason`
    "tool_calls", `text` may be empty); a stream's are complete when it ends, and
    `events()` / `aevents()` yield their fragments as they arrive, between the text chunks.
    """

    request_id: str
    route: str
    model_key: str
    model: str
    provider: str
    text: str
    usage: Usage
    cost_usd: float
    finish_reason: str | None
    latency_ms: dict[str, float]
    attempts: list[Attempt]
    decision: Decision
    stream_state: StreamState = "complete"
    sticky: dict[str, Any] | None = None
    parallel: ParallelOutcome | None = None
    budget: dict[str, Any] | None = None
    cascade: CascadeOutcome | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    _stream: Stream | AsyncStream | None = field(default=None, repr=False)
    _settle: Settle | None = field(default=None, repr=False)
    _opened: float = field(default_factory=time.perf_counter, repr=False)

    def __iter__(self) -> Iterator[str]:
        items = self.events()
        try:
            for item in items:
                if isinstance(item, str):
                    yield item
        finally:
            items.close()

    async def __aiter__(self) -> AsyncIterator[str]:
        items = self.aevents()
        try:
            async for item in items:
                if isinstance(item, str):
                    yield item
        finally:
            await items.aclose()

    def events(self) -> Generator[str | ToolCallDelta, None, None]:
        """Like iterating, but tool calls too: text chunks and `ToolCallDelta`s (a call's
        index, id and name first, then argument fragments) in the order they arrive; a
        finished answer gives its text, then each call whole."""
        stream = self._stream
        if stream is None:
            yield from self._finished()
            return
        if not isinstance(stream, Stream):
            raise TypeError(ASYNC_ONLY)
        end: StreamState = "closed early"  # unless the loop below runs to its end
        error: ProviderError | None = None
        try:
            yield from stream.items()
            end = "complete"
        except ProviderError as exc:  # StreamInterruptedError: output was already delivered
            end, error = "interrupted", exc
            raise
        finally:
            self._end(end, error)

    async def aevents(self) -> AsyncGenerator[str | ToolCallDelta, None]:
        """Async `events`."""
        stream = self._stream
        if stream is None:
            for item in self._finished():
                yield item
            return
        if not isinstance(stream, AsyncStream):
            raise TypeError(SYNC_ONLY)
        end: StreamState = "closed early"
        error: ProviderError | None = None
        try:
            async for item in stream.items():
                yield item
            end = "complete"
        except ProviderError as exc:  # StreamInterruptedError: output was already delivered
            end, error = "interrupted", exc
            raise
        finally:
            await self._aend(end, error)

    def _finished(self) -> list[str | ToolCallDelta]:
        text: list[str | ToolCallDelta] = [self.text] if self.text or not self.tool_calls else []
        return text + [ToolCallDelta(n, c.id, c.name, c.arguments)
                       for n, c in enumerate(self.tool_calls)]

    def close(self) -> None:
        """Stop a streamed answer: release its connection and trace what was received.
        Harmless on a finished or non-streamed response."""
        if isinstance(self._stream, AsyncStream):
            raise TypeError(ASYNC_ONLY)
        self._end("closed early", None)

    async def aclose(self) -> None:
        """Async `close`."""
        if isinstance(self._stream, Stream):
            self._end("closed early", None)
        else:
            await self._aend("closed early", None)

    def __enter__(self) -> Response:
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---- the end of a stream, whichever way it comes: exactly once

    def _end(self, end: StreamState, error: ProviderError | None) -> None:
        stream, self._stream = self._stream, None
        if not isinstance(stream, Stream):
            return  # not streamed, or already ended
        stream.close()
        got = stream.final() if end == "complete" else stream.received()
        plan = self._ended(end, got, stream.chunks_delivered, error)
        if plan is not None:
            run_sync(plan)

    async def _aend(self, end: StreamState, error: ProviderError | None) -> None:
        stream, self._stream = self._stream, None
        if not isinstance(stream, AsyncStream):
            return
        await stream.close()
        got = await stream.final() if end == "complete" else stream.received()
        plan = self._ended(end, got, stream.chunks_delivered, error)
        if plan is not None:
            await run_async(plan)

    def _ended(
        self, end: StreamState, got: Completion, chunks: int, error: ProviderError | None
    ) -> Plan[None] | None:
        self.text, self.usage, self.finish_reason = got.text, got.usage, got.finish_reason
        self.tool_calls = got.tool_calls
        self.stream_state = end
        self.latency_ms["stream"] = (time.perf_counter() - self._opened) * 1e3
        return None if self._settle is None else self._settle(self, chunks, error)
