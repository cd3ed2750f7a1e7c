"""SIGTERM to `semroute serve --workers 2` drains: streams in flight on both workers end with
their usage chunk and [DONE], new connections are refused from the signal on, every process
exits 0 within the drain timeout and none is left running, and each drained request's
journal row is written (no lost traces). Real processes, real HTTP, loopback only."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from semroute.config import hash_client_key
from semroute.outcomes import OutcomeStore
from tests.dispatch_support import entry, shared_index, write_set
from tests.support.faults import FaultyServer
from tests.support.serve_process import Served, alive, kill, serving_pid, start_serve

KEY = "sk-team-drain-0001"
DRAIN_S = 15
CHUNK_S = 1.0  # four text chunks: a stream takes about 4 s once opened
BODY = {"model": "semroute", "max_tokens": 8, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[FaultyServer]:
    server = FaultyServer("slow", {"ok": 1}, chunk_s=CHUNK_S).start()
    try:
        yield server
    finally:
        server.stop()


class Stream(threading.Thread):
    """One `stream: true` request on its own connection, read to the end in a thread."""

    def __init__(self, served: Served, workers: list[int]) -> None:
        super().__init__(daemon=True)
        self.served, self.workers = served, workers
        self.opened = threading.Event()
        self.pid = 0
        self.status = 0
        self.request_id = ""
        self.data: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx2.Client(timeout=30) as http, http.stream(
                    "POST", f"{self.served.base_url}/v1/chat/completions", json=BODY,
                    headers={"authorization": f"Bearer {KEY}"}) as r:
                self.status, self.request_id = r.status_code, r.headers["x-semroute-request-id"]
                self.pid = serving_pid(r, self.served.port, self.workers)
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.data.append(line[6:])
                        self.opened.set()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.opened.set()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def test_sigterm_drains_in_flight_streams_on_both_workers(
        slow_upstream: FaultyServer, tmp_path: Path) -> None:
    index = shared_index(tmp_path)
    routes = write_set(tmp_path / "served", {"slow": entry("openai", slow_upstream.base_url)},
                       ["slow"], outcomes={"log_requests": True})
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"keys": [{"name": "team", "sha256": hash_client_key(KEY)}],
                                      "drain_seconds": DRAIN_S}))
    served = start_serve(routes, index, config, tmp_path / "serve.log", workers=2)
    streams: list[Stream] = []
    try:
        workers = served.workers()
        processes = served.children()
        assert len(workers) == 2
        while len(streams) < 6 or len({s.pid for s in streams}) < 2:  # in flight on both
            assert len(streams) < 16, f"every stream went to one worker: {streams[0].pid}"
            stream = Stream(served, workers)
            stream.start()
            assert stream.opened.wait(30) and stream.error is None, stream.error
            streams.append(stream)

        served.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while not refused(served.port):
            assert time.monotonic() - signalled < 3, "new connections still accepted"
            time.sleep(0.05)
        assert any(s.is_alive() for s in streams), "refused while streams were in flight"

        for s in streams:
            s.join(timeout=DRAIN_S + 10)
        assert served.proc.wait(timeout=DRAIN_S + 10) == 0
        assert time.monotonic() - signalled < DRAIN_S
    finally:
        if served.proc.poll() is None:
            kill(served)

    for s in streams:
        assert s.error is None and s.status == 200, (s.error, s.status)
        assert s.data[-1] == "[DONE]"
        chunks: list[dict[str, Any]] = [json.loads(d) for d in s.data[:-1]]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c["choices"])
        assert text == "slow [ok] says hello END"
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in processes):
        assert time.monotonic() < deadline, f"left running: {[p for p in processes if alive(p)]}"
        time.sleep(0.05)
    log = served.text()
    for pid in workers:
        assert f"worker [{pid}] exited with code 0" in log, log[-3000:]
    with OutcomeStore(routes / "outcomes.db") as store:
        journalled = {r.request_id for r in store.requests()}
    assert {s.request_id for s in streams} <= journalled, "a drained request's row was lost"


def test_ctrl_c_drains_every_worker_and_exits_0(slow_upstream: FaultyServer,
                                               tmp_path: Path) -> None:
    index = shared_index(tmp_path)
    routes = write_set(tmp_path / "served", {"slow": entry("openai", slow_upstream.base_url)},
                       ["slow"])
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"keys": [{"name": "team", "sha256": hash_client_key(KEY)}],
                                      "drain_seconds": DRAIN_S}))
    served = start_serve(routes, index, config, tmp_path / "serve.log", workers=2,
                         own_group=True)
    try:
        workers = served.workers()
        stream = Stream(served, workers)
        stream.start()
        assert stream.opened.wait(30) and stream.error is None, stream.error
        os.killpg(served.proc.pid, signal.SIGINT)  # Ctrl-C: the supervisor and each worker
        stream.join(timeout=DRAIN_S + 10)
        assert served.proc.wait(timeout=DRAIN_S + 10) == 0
    finally:
        if served.proc.poll() is None:
            kill(served)
    assert stream.error is None and stream.data[-1] == "[DONE]"
    for pid in workers:
        assert f"worker [{pid}] exited with code 0" in served.text()


def test_a_signal_arriving_while_the_process_exits_cannot_turn_exit_0_into_a_kill() -> None:
    """The supervisor's SIGTERM can reach a worker that has already drained and is exiting,
    after Python has put the default handlers back: the process must still exit 0, not die
    by the signal (-15; CI saw exactly this). Here the late SIGTERM is sent by an exit
    handler that runs after semroute's, once it has done what CPython's finalisation does
    (a signal with a Python handler goes back to the default action; an ignored one stays
    ignored). Masking the signal would not do: faiss and BLAS threads would take it."""
    import subprocess
    import sys

    code = (
        "import atexit, os, signal\n"
        "def late():\n"
        "    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "atexit.register(late)  # registered first: runs last\n"
        "signal.signal(signal.SIGTERM, lambda *_: None)  # the drain's handler\n"
        "from semroute.gateway.server import ignore_signals_at_exit\n"
        "ignore_signals_at_exit()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
