"""Tracing never costs the caller an answer, and never stalls the event loop.

A trace that cannot be written (a directory where the file should be, a parent that is a file,
a full disk, a sink that raises) is dropped: the answer is returned, the drop is counted and
logged without the API key or the query. `adispatch` writes traces off the event loop, so a
slow disk or a lock held by another worker does not freeze every other task.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from semroute.dispatching import Dispatcher
from semroute.errors import AllModelsFailedError
from semroute.telemetry import JsonlSink, read_trace
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import (
    STREAM_TEXT,
    SseServer,
    dispatcher_factory,
    entry,
    shared_index,
)
from tests.support.llm_server import OK_TEXT

SECRET = "sk-trace-" + "5" * 24
QUERY = "write a python function to sort a list of secret-project-names"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("trace"))


@pytest.fixture
def make(tmp_path: Path, index: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Dispatcher]:
    monkeypatch.setenv("SEMROUTE_TRACE_KEY", SECRET)
    return dispatcher_factory(tmp_path, index)


@pytest.fixture
def sse() -> Iterator[SseServer]:
    server = SseServer(["ok"])
    yield server
    server.stop()


class RaisingSink:
    """A sink whose backend is down."""

    def __init__(self) -> None:
        self.calls = 0

    def write(self, record: Mapping[str, Any]) -> None:
        self.calls += 1
        raise RuntimeError("trace backend unavailable")


def unwritable(kind: str, tmp_path: Path) -> Any:
    if kind == "directory":  # a directory where the file should be
        (tmp_path / "trace.jsonl").mkdir()
        return tmp_path / "trace.jsonl"
    if kind == "parent is a file":
        (tmp_path / "not-a-dir").write_text("x")
        return tmp_path / "not-a-dir" / "trace.jsonl"
    if kind == "disk full":
        return Path("/dev/full")
    return RaisingSink()


TARGETS = ["directory", "parent is a file", "disk full", "raising sink"]


def model(base_url: str) -> dict[str, dict[str, Any]]:
    return {"m": entry("openai", base_url, api_key_env="SEMROUTE_TRACE_KEY")}


def assert_logged_drop(caplog: pytest.LogCaptureFixture) -> None:
    drops = [r for r in caplog.records if r.levelno == logging.WARNING and "trace" in
             r.getMessage().lower()]
    assert drops, "a dropped trace record is logged"
    for record in caplog.records:
        text = record.getMessage()
        assert SECRET not in text and "secret-project-names" not in text


@pytest.mark.parametrize("target", TARGETS)
def test_an_unwritable_trace_does_not_lose_the_answer(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, target: str) -> None:
    ok = fault_server([200])
    d = make(model(ok.base_url), ["m"], trace=unwritable(target, tmp_path), include_query=True)
    with caplog.at_level(logging.WARNING):
        r = d.dispatch(QUERY)
        again = d.dispatch(QUERY)
    assert r.text == again.text == OK_TEXT
    assert d.trace_drops == 2
    assert_logged_drop(caplog)


@pytest.mark.parametrize("target", TARGETS)
def test_an_unwritable_trace_does_not_lose_an_async_answer(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, target: str) -> None:
    ok = fault_server([200])
    d = make(model(ok.base_url), ["m"], trace=unwritable(target, tmp_path), include_query=True)
    with caplog.at_level(logging.WARNING):
        r = asyncio.run(d.adispatch(QUERY))
    assert r.text == OK_TEXT and d.trace_drops == 1
    assert_logged_drop(caplog)


def test_an_unwritable_trace_does_not_break_a_stream(
        make: Callable[..., Dispatcher], sse: SseServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    d = make({"m": entry("anthropic", sse.base_url)}, ["m"], trace=RaisingSink())
    with caplog.at_level(logging.WARNING):
        r = d.dispatch(QUERY, stream=True)
        assert list(r) == STREAM_TEXT

        async def main() -> list[str]:
            r = await d.adispatch(QUERY, stream=True)
            return [c async for c in r]

        assert asyncio.run(main()) == STREAM_TEXT
    assert d.trace_drops == 2
    assert_logged_drop(caplog)


def test_a_trace_failure_does_not_replace_the_real_error(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer) -> None:
    down = fault_server([500])
    d = make(model(down.base_url), ["m"], trace=RaisingSink())
    with pytest.raises(AllModelsFailedError):
        d.dispatch(QUERY)
    assert d.trace_drops == 1


def test_the_trace_recovers_once_the_path_is_writable_again(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer, tmp_path: Path) -> None:
    ok = fault_server([200])
    path = tmp_path / "later" / "trace.jsonl"
    (tmp_path / "later").write_text("in the way")
    d = make(model(ok.base_url), ["m"], trace=path)
    d.dispatch(QUERY)
    (tmp_path / "later").unlink()
    d.dispatch(QUERY)
    assert d.trace_drops == 1 and len(read_trace(path)) == 1


# ---------------------------------------------------------------- off the event loop


class ThreadRecordingSink:
    """Remembers which thread each write ran on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def write(self, record: Mapping[str, Any]) -> None:
        self.threads.append(threading.get_ident())


def test_adispatch_writes_traces_off_the_event_loop_thread(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer, sse: SseServer) -> None:
    ok = fault_server([200])
    sink = ThreadRecordingSink()
    plain = make(model(ok.base_url), ["m"], trace=sink)
    streamed = make({"m": entry("openai", sse.base_url)}, ["m"], trace=sink)

    async def main() -> int:
        await plain.adispatch(QUERY)
        r = await streamed.adispatch(QUERY, stream=True)
        assert [c async for c in r] == STREAM_TEXT
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(sink.threads) == 2
    assert loop_thread not in sink.threads, "a trace write ran on the event loop's thread"


def test_a_trace_lock_held_by_another_worker_does_not_stall_the_loop(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer, tmp_path: Path) -> None:
    """Another process holding the trace file's flock for 0.6 s delays this request's trace
    line, not every other task on the loop."""
    ok = fault_server([200])
    path = tmp_path / "shared.jsonl"
    d = make(model(ok.base_url), ["m"], trace=JsonlSink(path))
    d.dispatch(QUERY)  # warm up: clients, encoder
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(0.6, os.close, (fd,)).start()  # closing releases the lock

    async def main() -> float:
        gaps: list[float] = []
        done = asyncio.Event()

        async def heartbeat() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        await d.adispatch(QUERY)
        done.set()
        await beat
        return max(gaps)

    worst = asyncio.run(main())
    assert worst < 0.3, f"the event loop stalled for {worst:.2f} s on a trace lock"
    assert len(read_trace(path)) == 2
