"""Streamed answers fail, end early and break like real streams do.

- an error before the first chunk (an error event, a dropped connection) fails over like a
  non-streamed call: the caller never sees it;
- leaving the loop early (or the `with` block) closes the SDK stream, releasing the HTTP
  connection, and still writes the trace, marked "closed early" with what was received;
- an error after chunks were delivered reaches the caller as a typed StreamInterruptedError,
  carrying the text received so far, and is traced.

Real SDKs against a scripted SSE server on 127.0.0.1 (tests/dispatch_support.py) and the local
llama-server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import semroute
from semroute.config import ModelSpec
from semroute.dispatching import Dispatcher, Response
from semroute.errors import ProviderError, RetryableProviderError, StreamInterruptedError
from semroute.providers import make_provider
from semroute.telemetry import read_trace
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import (
    STREAM_TEXT,
    SseServer,
    dispatcher_factory,
    entry,
    live_anthropic,
    live_openai,
    shared_index,
)
from tests.support.llm_server import LLMServer

KINDS = ["openai", "anthropic"]
QUERY = "write a python function to sort a list"
MakeSse = Callable[[Sequence[str]], SseServer]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("streaming"))


@pytest.fixture
def make(tmp_path: Path, index: Path) -> Callable[..., Dispatcher]:
    return dispatcher_factory(tmp_path, index)


@pytest.fixture
def sse() -> Iterator[MakeSse]:
    servers: list[SseServer] = []

    def start(behaviours: Sequence[str]) -> SseServer:
        servers.append(SseServer(behaviours))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def spec_for(kind: str, base_url: str) -> ModelSpec:
    url = f"{base_url}/v1" if kind == "openai" else base_url
    return ModelSpec(key=f"sse-{kind}", provider=kind, model="sse", base_url=url, timeout=10)  # type: ignore[arg-type]


def trace_of(d: Dispatcher) -> list[dict[str, Any]]:
    return read_trace(d.trace.path)  # type: ignore[union-attr]


# ---------------------------------------------------------------- before the first chunk


@pytest.mark.parametrize("fault", ["error_first", "drop_first", "malformed_first",
                                   "truncated_first"])
def test_a_failure_before_the_first_chunk_fails_over(
        make: Callable[..., Dispatcher], sse: MakeSse, kind: str, fault: str) -> None:
    broken, ok = sse([fault]), sse(["ok"])
    d = make({"broken": entry(kind, broken.base_url), "ok": entry(kind, ok.base_url)},
             ["broken", "ok"])
    r = d.dispatch(QUERY, stream=True)
    assert "".join(r) == "".join(STREAM_TEXT)
    assert [(a.model_key, a.ok) for a in r.attempts] == [
        ("broken", False), ("broken", False), ("ok", True)]
    assert all(a.scope == "retry" for a in r.attempts[:2])
    [line] = trace_of(d)
    assert line["model_key"] == "ok" and line["stream"]["state"] == "complete"


def test_an_async_failure_before_the_first_chunk_fails_over(
        make: Callable[..., Dispatcher], sse: MakeSse, kind: str) -> None:
    broken, ok = sse(["error_first"]), sse(["ok"])
    d = make({"broken": entry(kind, broken.base_url), "ok": entry(kind, ok.base_url)},
             ["broken", "ok"])

    async def main() -> tuple[Response, str]:
        r = await d.adispatch(QUERY, stream=True)
        return r, "".join([c async for c in r])

    r, text = asyncio.run(main())
    assert text == "".join(STREAM_TEXT) and r.model_key == "ok"


def test_a_status_error_on_opening_a_stream_fails_over(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer, sse: MakeSse,
        kind: str) -> None:
    busy, ok = fault_server([503]), sse(["ok"])
    d = make({"busy": entry(kind, busy.base_url), "ok": entry(kind, ok.base_url)},
             ["busy", "ok"])
    r = d.dispatch(QUERY, stream=True)
    assert list(r) == STREAM_TEXT
    assert [(a.model_key, a.status) for a in r.attempts] == [("busy", 503), ("busy", 503),
                                                             ("ok", None)]


def test_the_provider_raises_early_stream_failures_from_stream(sse: MakeSse, kind: str) -> None:
    """At the provider layer: `stream()` raises what happens before the first chunk."""
    server = sse(["error_first"])
    p = make_provider(spec_for(kind, server.base_url))
    with pytest.raises(RetryableProviderError) as info:
        p.stream([{"role": "user", "content": "hi"}], max_tokens=8)
    assert "injected stream fault" in info.value.message


def test_a_malformed_response_fails_over(make: Callable[..., Dispatcher], sse: MakeSse,
                                         fault_server: MakeFaultServer, kind: str) -> None:
    """A 200 whose JSON is cut off is a (retryable) provider failure, not a crash."""
    broken, ok = sse(["ok"]), fault_server([200])
    d = make({"broken": entry(kind, broken.base_url), "ok": entry(kind, ok.base_url)},
             ["broken", "ok"])
    r = d.dispatch(QUERY)
    assert r.model_key == "ok"
    assert [(a.model_key, a.scope) for a in r.attempts[:2]] == [("broken", "retry")] * 2
    assert "malformed" in (r.attempts[0].error or "")


# ---------------------------------------------------------------- leaving early


def test_breaking_out_early_releases_the_connection_and_traces(
        make: Callable[..., Dispatcher], sse: MakeSse, kind: str) -> None:
    endless = sse(["endless"])
    d = make({"m": entry(kind, endless.base_url)}, ["m"])
    r = d.dispatch(QUERY, stream=True)
    got = []
    for chunk in r:
        got.append(chunk)
        if len(got) == 3:
            break
    assert endless.disconnected.wait(3), "the HTTP connection is still open after `break`"
    assert r.stream_state == "closed early" and r.text == "".join(got)
    [line] = trace_of(d)
    assert line["stream"] == {"state": "closed early", "chunks": 3, "chars": len(r.text)}
    assert line["error"] is None and line["model_key"] == "m"


def test_a_with_block_closes_the_stream_on_exit(
        make: Callable[..., Dispatcher], sse: MakeSse, kind: str) -> None:
    endless = sse(["endless"])
    d = make({"m": entry(kind, endless.base_url)}, ["m"])
    with d.dispatch(QUERY, stream=True) as r:
        first = next(iter(r))
    assert endless.disconnected.wait(3)
    assert r.stream_state == "closed early" and r.text == first
    r.close()  # closing twice is harmless
    assert len(trace_of(d)) == 1


def test_async_with_closes_the_stream_and_traces(
        make: Callable[..., Dispatcher], sse: MakeSse, kind: str) -> None:
    endless = sse(["endless"])
    d = make({"m": entry(kind, endless.base_url)}, ["m"])

    async def main() -> Response:
        async with await d.adispatch(QUERY, stream=True) as r:
            async for _ in r:
                break
        return r

    r = asyncio.run(main())
    assert endless.disconnected.wait(3)
    assert r.stream_state == "closed early"
    [line] = trace_of(d)
    assert line["stream"]["state"] == "closed early" and line["stream"]["chunks"] == 1


def test_async_break_without_with_still_closes_and_traces(
        make: Callable[..., Dispatcher], sse: MakeSse, kind: str) -> None:
    """Python finalises an abandoned async generator soon after, on the same loop."""
    endless = sse(["endless"])
    d = make({"m": entry(kind, endless.base_url)}, ["m"])

    async def main() -> Response:
        r = await d.adispatch(QUERY, stream=True)
        async for _ in r:
            break
        for _ in range(100):
            if r.stream_state != "open":
                break
            await asyncio.sleep(0.02)
        return r

    r = asyncio.run(main())
    assert r.stream_state == "closed early"
    assert endless.disconnected.wait(3)
    assert trace_of(d)[0]["stream"]["state"] == "closed early"


def test_closing_an_unread_module_level_stream(
        sse: MakeSse, make: Callable[..., Dispatcher], kind: str) -> None:
    endless = sse(["endless"])
    d = make({"m": entry(kind, endless.base_url)}, ["m"])
    with semroute.dispatch(QUERY, router=d.router, stream=True) as r:
        pass
    assert endless.disconnected.wait(3) and r.text == ""


def test_a_real_stream_closed_early_is_traced(
        make: Callable[..., Dispatcher], llm_server: LLMServer, kind: str) -> None:
    spec = live_openai(llm_server) if kind == "openai" else live_anthropic(llm_server)
    d = make({"live": spec}, ["live"])
    with d.dispatch(QUERY, max_tokens=32, stream=True) as r:
        for _ in r:
            break
    assert r.stream_state == "closed early" and r.text
    assert trace_of(d)[0]["stream"]["chunks"] == 1
    complete = d.dispatch(QUERY, max_tokens=8, stream=True)
    assert "".join(complete) == complete.text and complete.stream_state == "complete"


# ---------------------------------------------------------------- breaking in the middle


@pytest.mark.parametrize("fault", ["error_mid", "drop_mid", "truncated_mid"])
def test_a_mid_stream_failure_is_a_typed_error_with_what_arrived(
        make: Callable[..., Dispatcher], sse: MakeSse, kind: str, fault: str) -> None:
    broken, unused = sse([fault]), sse(["ok"])
    d = make({"broken": entry(kind, broken.base_url), "backup": entry(kind, unused.base_url)},
             ["broken", "backup"])
    r = d.dispatch(QUERY, stream=True)
    got: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        for chunk in r:
            got.append(chunk)
    err = info.value
    assert got == STREAM_TEXT[:2] and err.partial_text == "".join(got)
    assert isinstance(err, ProviderError) and err.provider == kind
    assert [a.model_key for a in err.attempts] == ["broken"]
    assert unused.hits == 0, "text already delivered cannot be failed over"
    assert r.stream_state == "interrupted" and r.text == "".join(got)
    [line] = trace_of(d)
    assert line["stream"]["state"] == "interrupted" and line["stream"]["chunks"] == 2
    assert "interrupted" in line["error"] and line["request_id"] == err.request_id


def test_an_async_mid_stream_failure_is_typed_and_traced(
        make: Callable[..., Dispatcher], sse: MakeSse, kind: str) -> None:
    broken = sse(["error_mid"])
    d = make({"broken": entry(kind, broken.base_url)}, ["broken"])

    async def main() -> list[str]:
        got: list[str] = []
        r = await d.adispatch(QUERY, stream=True)
        with pytest.raises(StreamInterruptedError):
            async for chunk in r:
                got.append(chunk)
        return got

    assert asyncio.run(main()) == STREAM_TEXT[:2]
    assert trace_of(d)[0]["stream"]["state"] == "interrupted"


def test_stream_interrupted_error_is_exported() -> None:
    assert semroute.StreamInterruptedError is StreamInterruptedError
    assert "StreamInterruptedError" in semroute.__all__


def test_the_provider_stream_raises_stream_interrupted_mid_way(sse: MakeSse, kind: str) -> None:
    server = sse(["error_mid"])
    stream = make_provider(spec_for(kind, server.base_url)).stream(
        [{"role": "user", "content": "hi"}], max_tokens=8)
    got = []
    with pytest.raises(StreamInterruptedError) as info:
        for chunk in stream:
            got.append(chunk)
    assert info.value.partial_text == "".join(got) == "".join(STREAM_TEXT[:2])


def test_a_complete_stream_records_usage(make: Callable[..., Dispatcher], sse: MakeSse,
                                         kind: str) -> None:
    ok = sse(["ok"])
    d = make({"m": entry(kind, ok.base_url)}, ["m"])
    t0 = time.perf_counter()
    r = d.dispatch(QUERY, stream=True)
    assert list(r) == STREAM_TEXT and r.stream_state == "complete"
    assert r.usage.output_tokens == len(STREAM_TEXT) and r.cost_usd > 0
    assert r.usage.input_tokens == 7, "input tokens come from the stream's first event"
    assert time.perf_counter() - t0 < 5
    assert trace_of(d)[0]["stream"] == {"state": "complete", "chunks": len(STREAM_TEXT),
                                        "chars": len("".join(STREAM_TEXT))}
