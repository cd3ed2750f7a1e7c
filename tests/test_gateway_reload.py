"""The gateway's life: a new build in the index folder is picked up while traffic flows, with
zero failed requests; shutting down lets an in-flight stream finish; `semroute serve` and
`semroute gateway-key` work from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import yaml

from semroute.cli import main
from semroute.config import GatewaySettings, hash_client_key
from semroute.gateway import create_app
from semroute.index import build_index
from tests.dispatch_support import live_openai, write_set
from tests.support.gateway import run_gateway
from tests.support.llm_server import REPO, LLMServer, free_port

QUERIES = ["write a python function to sort a list", "hello, how are you",
           "implement binary search in java", "good morning friend"]


def ready(base_url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as r:
            body: dict[str, object] = json.loads(r.read())
            return body
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_new_build_is_served_with_zero_failed_requests(tmp_path: Path,
                                                         llm_server: LLMServer) -> None:
    routes = write_set(tmp_path / "routes", {"fast": live_openai(llm_server)}, ["fast"])
    first = build_index(routes, tmp_path / "index")
    gw = run_gateway(create_app(routes, tmp_path / "index",
                                settings=GatewaySettings(reload_poll_seconds=0.2)))
    assert (ready(gw.base_url) or {})["build_id"] == first.build_id
    answered: list[str] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def traffic(worker: int) -> None:
        c = openai.OpenAI(base_url=gw.openai_base_url, api_key="x", max_retries=0)
        i = worker
        while not stop.is_set():
            try:
                r = c.chat.completions.with_raw_response.create(
                    model="semroute", max_tokens=2,
                    messages=[{"role": "user", "content": QUERIES[i % len(QUERIES)]}])
                answered.append(r.headers["x-semroute-route"])
            except BaseException as exc:
                failed.append(exc)
            i += 1

    threads = [threading.Thread(target=traffic, args=(w,)) for w in range(2)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(answered) >= 4)
        before = len(answered)
        # a second build into the same folder while requests flow: one more utterance
        add_utterance(routes, "write a rust macro that derives Debug")
        second = build_index(routes, tmp_path / "index")
        assert second.build_id != first.build_id
        deadline = time.monotonic() + 60
        while (ready(gw.base_url) or {}).get("build_id") != second.build_id:
            assert time.monotonic() < deadline, "the new build was not picked up"
            time.sleep(0.1)
        switched = len(answered)
        wait_for(lambda: len(answered) >= switched + 4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    try:
        assert failed == []
        assert before > 0 and len(answered) > switched  # traffic before, during and after
        assert set(answered) == {"code", "greet"}
        with urllib.request.urlopen(f"{gw.base_url}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'semroute_reloads_total{outcome="ok"} 1.0' in metrics
        assert f'semroute_build_info{{build_id="{second.build_id}"}} 1.0' in metrics
    finally:
        gw.stop()


def add_utterance(routes: Path, text: str) -> None:
    code = routes / "code.yaml"
    spec = yaml.safe_load(code.read_text())
    spec["utterances"].append(text)
    code.write_text(yaml.safe_dump(spec))


def test_a_build_that_does_not_load_leaves_the_old_one_serving(tmp_path: Path,
                                                               llm_server: LLMServer) -> None:
    routes = write_set(tmp_path / "routes", {"fast": live_openai(llm_server)}, ["fast"])
    first = build_index(routes, tmp_path / "index")
    gw = run_gateway(create_app(routes, tmp_path / "index",
                                settings=GatewaySettings(reload_poll_seconds=2.0)))
    c = openai.OpenAI(base_url=gw.openai_base_url, api_key="x", max_retries=0)
    try:
        add_utterance(routes, "write a rust macro that derives Debug")
        build_index(routes, tmp_path / "index")
        add_utterance(routes, "port this perl script to go")  # files now ahead of the build
        wait_for(lambda: (ready(gw.base_url) or {}).get("reload_error") is not None)
        status = ready(gw.base_url) or {}
        assert status["build_id"] == first.build_id  # still the old build
        assert "StaleIndexError" in str(status["reload_error"])
        assert c.chat.completions.create(model="semroute", max_tokens=2,
                                         messages=[{"role": "user", "content": "hi there"}])
        third = build_index(routes, tmp_path / "index")  # the files and the index agree again
        wait_for(lambda: (ready(gw.base_url) or {}).get("build_id") == third.build_id)
        assert (ready(gw.base_url) or {})["reload_error"] is None
        with urllib.request.urlopen(f"{gw.base_url}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'semroute_reloads_total{outcome="failed"} 1.0' in metrics
        assert 'semroute_reloads_total{outcome="ok"} 1.0' in metrics
    finally:
        gw.stop()


def test_shutdown_lets_an_in_flight_stream_finish(tmp_path: Path, llm_server: LLMServer) -> None:
    from tests.dispatch_support import shared_index

    index = shared_index(tmp_path)
    routes = write_set(tmp_path / "served", {"fast": live_openai(llm_server)}, ["fast"])
    gw = run_gateway(create_app(routes, index), drain_seconds=30)
    c = openai.OpenAI(base_url=gw.openai_base_url, api_key="x", max_retries=0)
    stream = c.chat.completions.create(
        model="semroute", max_tokens=40, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "write a python function to sort a list"}])
    chunks = [next(stream)]
    gw.server.should_exit = True  # shutdown starts with the stream in flight
    chunks += list(stream)
    gw.thread.join(timeout=60)
    assert not gw.thread.is_alive()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_gateway_key_prints_the_hash_to_configure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway-key", "sk-my-team", "--name", "team"]) == 0
    out = capsys.readouterr().out
    assert f"sha256  {hash_client_key('sk-my-team')}" in out
    config = yaml.safe_load(out.split("# gateway.yaml\n", 1)[1])
    assert config == {"keys": [{"name": "team", "sha256": hash_client_key("sk-my-team")}]}
    assert main(["gateway-key"]) == 0
    assert capsys.readouterr().out.startswith("key     sk-semroute-")


def test_semroute_serve_from_the_command_line(tmp_path: Path, llm_server: LLMServer) -> None:
    from tests.dispatch_support import shared_index

    index = shared_index(tmp_path)
    routes = write_set(tmp_path / "served", {"fast": live_openai(llm_server)}, ["fast"])
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"keys": [{"name": "ci",
                                                "sha256": hash_client_key("sk-ci")}]}))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "semroute.cli", "serve", "--routes",
                             str(routes), "--index", str(index), "--port", str(port),
                             "--config", str(config)], env=env, stderr=subprocess.PIPE,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while ready(base) is None:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "60", "-H", "authorization: Bearer sk-ci", "-H",
             "content-type: application/json", "-d",
             json.dumps({"model": "semroute", "max_tokens": 4,
                         "messages": [{"role": "user", "content": "hi there"}]}),
             f"{base}/v1/chat/completions"], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout)["choices"][0]["message"]["content"]
        denied = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-d",
                                 "{}", f"{base}/v1/chat/completions"],
                                capture_output=True, text=True, check=True)
        assert denied.stdout == "401"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # drained, then a normal exit (server.py)
    assert proc.stderr is not None
    assert "Finished server process" in proc.stderr.read()
