"""SIGHUP re-reads gateway.yaml without dropping a request, in one process (the settings are
swapped in place) and with --workers 2 (the supervisor checks the file, then replaces the
workers one at a time): a key added works, a key removed is refused, a broken file keeps the
settings in force and the log says which file and field, and a steady stream of requests
through all of it (kept-alive and fresh connections) sees no failure."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
import yaml

from semroute.config import hash_client_key
from tests.dispatch_support import entry, shared_index, write_set
from tests.support.faults import FaultyServer
from tests.support.serve_process import (
    Served,
    alive,
    kill,
    serving_pid,
    start_serve,
    wait_for_text,
)

STEADY = "sk-team-steady-0001"  # configured throughout
OLD = "sk-team-old-0001"  # removed by the reload
NEW = "sk-team-new-0001"  # added by the reload
BODY = {"model": "semroute", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def write_config(path: Path, keys: dict[str, str], **extra: object) -> None:
    """gateway.yaml with `keys` (name -> key), replaced atomically as an operator's tool would."""
    data = {"keys": [{"name": n, "sha256": hash_client_key(k)} for n, k in keys.items()],
            **extra}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data))
    os.replace(tmp, path)


def status(base: str, key: str) -> int:
    """The status of one chat request on a fresh connection."""
    return answered_by(base, key, [])[0]


def answered_by(base: str, key: str, pids: list[int]) -> tuple[int, int]:
    """(status, the process of `pids` that answered; 0 for none given) of one chat request
    on a fresh connection."""
    with httpx2.Client(timeout=30) as http:
        r = http.post(f"{base}/v1/chat/completions", json=BODY,
                      headers={"authorization": f"Bearer {key}"})
        port = int(base.rsplit(":", 1)[1])
        return r.status_code, serving_pid(r, port, pids) if pids else 0


class Steady(threading.Thread):
    """Requests with the STEADY key back to back until stopped, every outcome counted, sent
    by the official openai SDK with its default retries: a request that races the close of
    an idle kept-alive connection on a worker being replaced is cut before any answer
    (inherent to HTTP keep-alive; CI saw 1 in ~925), and real clients retry exactly that."""

    def __init__(self, base: str, keep_alive: bool) -> None:
        super().__init__(daemon=True)
        self.base, self.keep_alive = base, keep_alive
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=STEADY, timeout=30)

    def run(self) -> None:
        sdk = self.client()
        try:
            while not self.stop.is_set():
                if not self.keep_alive:
                    sdk.close()
                    sdk = self.client()
                try:
                    sdk.chat.completions.create(**BODY)  # type: ignore[call-overload]
                    self.outcomes["200"] += 1
                except openai.APIStatusError as exc:
                    self.outcomes[str(exc.status_code)] += 1
                except openai.APIConnectionError as exc:
                    self.outcomes[type(exc).__name__] += 1
        finally:
            sdk.close()


@pytest.fixture(scope="module")
def served_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("hup")
    index = shared_index(root)
    upstream = FaultyServer("fast", {"ok": 1}).start()
    routes = write_set(root / "served", {"fast": entry("openai", upstream.base_url)}, ["fast"])
    try:
        yield routes, index
    finally:
        upstream.stop()


def until(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def reload_scenario(served: Served, config: Path, after_reload: object) -> None:
    """The scenario both modes pass: OLD → NEW, then a broken file, under steady traffic."""
    base = served.base_url
    steady = [Steady(base, keep_alive=True), Steady(base, keep_alive=False)]
    for s in steady:
        s.start()
    try:
        until(lambda: all(sum(s.outcomes.values()) >= 5 for s in steady), "no steady traffic")
        assert status(base, OLD) == 200 and status(base, NEW) == 401

        write_config(config, {"steady": STEADY, "new": NEW})
        served.proc.send_signal(signal.SIGHUP)
        after_reload()  # type: ignore[operator]
        until(lambda: status(base, NEW) == 200, "the added key never worked")
        assert status(base, OLD) == 401, "the removed key still works"

        config.write_text("keys:\n  - name: broken\n    sha256: not-a-hash\n")
        served.proc.send_signal(signal.SIGHUP)
        wait_for_text(served, "not reloaded, keeping the previous settings")
        assert status(base, NEW) == 200 and status(base, OLD) == 401
        for s in steady:
            before = sum(s.outcomes.values())
            until(lambda s=s, b=before: sum(s.outcomes.values()) >= b + 5,  # type: ignore[misc]
                  "steady traffic stopped after the broken reload")
    finally:
        for s in steady:
            s.stop.set()
        for s in steady:
            s.join(timeout=30)
    for s in steady:
        assert set(s.outcomes) == {"200"}, f"failed during the reload: {s.outcomes}"
    line = next(ln for ln in served.text().splitlines() if "not reloaded" in ln)
    assert str(config) in line and "keys" in line and "sha256" in line, line


def test_sighup_reloads_the_keys_in_one_process(served_set: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    routes, index = served_set
    config = tmp_path / "gateway.yaml"
    write_config(config, {"steady": STEADY, "old": OLD})
    served = start_serve(routes, index, config, tmp_path / "serve.log")
    try:
        reload_scenario(served, config, lambda: wait_for_text(served, "reloaded " + str(config)))
        metrics = httpx2.get(f"{served.base_url}/metrics", timeout=10).text
        assert 'semroute_settings_reloads_total{outcome="ok"} 1.0' in metrics
        assert 'semroute_settings_reloads_total{outcome="refused"} 1.0' in metrics
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=30) == 0
    finally:
        if served.proc.poll() is None:
            kill(served)
    assert "Finished server process" in served.text()


def test_sighup_replaces_the_workers_one_by_one_with_the_new_keys(
        served_set: tuple[Path, Path], tmp_path: Path) -> None:
    routes, index = served_set
    config = tmp_path / "gateway.yaml"
    write_config(config, {"steady": STEADY, "old": OLD})
    served = start_serve(routes, index, config, tmp_path / "serve.log", workers=2)
    try:
        first = set(served.workers())
        assert len(first) == 2

        def replaced() -> None:  # both workers new, the old ones gone
            until(lambda: len(set(served.workers()) - first) == 2
                  and not any(alive(p) for p in first), "the workers were not replaced", 120)

        reload_scenario(served, config, replaced)
        second = served.workers()
        assert len(second) == 2 and set(second) == set(served.workers()), \
            "the broken file restarted workers"
        seen: dict[int, set[tuple[str, int]]] = {pid: set() for pid in second}
        for _ in range(80):  # the new key works and the old is refused, on both workers
            for name, key in (("new", NEW), ("old", OLD)):
                code, pid = answered_by(served.base_url, key, second)
                seen[pid].add((name, code))
            if all({n for n, _ in got} == {"new", "old"} for got in seen.values()):
                break
        assert all(got == {("new", 200), ("old", 401)} for got in seen.values()), seen
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=60) == 0
    finally:
        if served.proc.poll() is None:
            kill(served)


def test_a_replacement_worker_that_cannot_start_leaves_the_old_ones_serving_and_says_so(
        served_set: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGHUP with a route folder broken since start-up: the first new worker fails, uvicorn
    stops the replacement, the old workers keep serving with the old keys, and the log says
    how many workers run the new gateway.yaml and what to do."""
    import shutil

    routes, index = served_set
    routes = Path(shutil.copytree(routes, tmp_path / "routes"))
    config = tmp_path / "gateway.yaml"
    write_config(config, {"steady": STEADY, "old": OLD})
    served = start_serve(routes, index, config, tmp_path / "serve.log", workers=2)
    try:
        first = set(served.workers())
        (routes / "broken.yaml").write_text("name: [unclosed\n")  # new workers cannot load
        write_config(config, {"steady": STEADY, "new": NEW})
        served.proc.send_signal(signal.SIGHUP)
        wait_for_text(served, "SIGHUP: 0 of 2 workers replaced", timeout=120)
        assert set(served.workers()) == first, "an old worker was stopped"
        assert status(served.base_url, OLD) == 200 and status(served.base_url, NEW) == 401
        line = next(ln for ln in served.text().splitlines() if "workers replaced" in ln)
        assert "previous settings" in line and "SIGHUP again" in line, line
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=60) == 0
    finally:
        if served.proc.poll() is None:
            kill(served)
