"""Streaming results: SDK events in, text chunks out, and a final Completion with usage.

Stream and AsyncStream share the bookkeeping; they differ only in how they iterate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semroute.providers.base import Completion, Provider, _Call


@dataclass
class StreamDelta:
    """What one SDK stream event contributes; None fields leave the running state unchanged."""

    text: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None


@dataclass
class StreamState:
    """Running totals of one stream: text so far, model, token counts, finish reason."""

    parts: list[str] = field(default_factory=list)
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    done: bool = False

    def feed(self, d: StreamDelta) -> str | None:
        """Apply one event; return its text chunk, if any."""
        self.model = d.model or self.model
        self.input_tokens = d.input_tokens if d.input_tokens is not None else self.input_tokens
        self.output_tokens = d.output_tokens if d.output_tokens is not None else self.output_tokens
        self.finish_reason = d.finish_reason or self.finish_reason
        if d.text:
            self.parts.append(d.text)
        return d.text or None


class _StreamBase:
    """Shared bookkeeping of Stream and AsyncStream."""

    def __init__(self, provider: Provider[Any, Any], call: _Call, raw: Any) -> None:
        self._provider, self._call, self._raw = provider, call, raw
        self._state = StreamState()
        self._completion: Completion | None = None

    def _step(self, event: Any) -> str | None:
        return self._state.feed(self._provider._delta(event))

    def _finish(self) -> Completion:
        if self._completion is None:
            self._state.done = True
            self._completion = self._provider._from_stream(self._call, self._state)
        return self._completion


class Stream(_StreamBase):
    """Iterate for text chunks; `final()` gives the Completion (usage included) afterwards."""

    def __iter__(self) -> Iterator[str]:
        if self._state.done:
            return
        with self._provider._guard(self._call):
            for event in self._raw:
                chunk = self._step(event)
                if chunk:
                    yield chunk
        self._finish()

    def final(self) -> Completion:
        """Drain what is left and return the whole completion."""
        for _ in self:
            pass
        return self._finish()

    def close(self) -> None:
        """Release the connection early."""
        self._raw.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStream(_StreamBase):
    """Async twin of Stream: `async for chunk in s`, then `await s.final()`."""

    async def __aiter__(self) -> AsyncIterator[str]:
        if self._state.done:
            return
        with self._provider._guard(self._call):
            async for event in self._raw:
                chunk = self._step(event)
                if chunk:
                    yield chunk
        self._finish()

    async def final(self) -> Completion:
        """Drain what is left and return the whole completion."""
        async for _ in self:
            pass
        return self._finish()

    async def close(self) -> None:
        """Release the connection early."""
        await self._raw.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
