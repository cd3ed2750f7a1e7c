"""`semroute serve --workers 2` is one gateway on one port served by two real worker
processes: the official openai SDK gets routed answers with the decision headers from both,
a budget cap holds across them (SQLite store), each reloads a new build, the start-up warning
says what is per worker without Redis and is absent with it, and SIGTERM stops every
worker."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
import yaml

from semroute.config import hash_client_key
from semroute.index import build_index
from semroute.policies import estimate_input_tokens
from tests.dispatch_support import entry, shared_index, write_set
from tests.support.llm_server import FaultServer
from tests.support.redis_server import RedisServer
from tests.support.serve_process import Served, alive, serving_pid, start_serve

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-team-workers-0001"
HI = [{"role": "user", "content": "hi there"}]
MAX_TOKENS = 2
PER_CALL = 6.0  # the fault server answers 3 + 3 tokens; `dear` costs $1 a token
CAP = estimate_input_tokens(HI, None) + MAX_TOKENS + PER_CALL + 1  # two `dear` calls fit
WARNING = "enforced per worker"


def start(routes: Path, index: Path, config: Path, log: Path, *extra: str) -> Served:
    """`semroute serve --workers 2`, every worker's router loaded."""
    return start_serve(routes, index, config, log, *extra, workers=2)


def sdk(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=KEY, max_retries=0,
                         timeout=30)


def stop(served: Served) -> tuple[list[int], list[int]]:
    """SIGTERM the supervisor only; the worker pids it had and those still alive after it
    exited (killed then, so no test leaves a worker behind)."""
    workers = served.workers() if served.proc.poll() is None else []
    served.proc.send_signal(signal.SIGTERM)
    try:
        served.proc.wait(timeout=60)
    finally:
        left = [pid for pid in workers if alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    return workers, left


@pytest.fixture(scope="module")
def served_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """Every route on `steady` (free, answers "ok"); `dear` ($1 a token) under a daily cap
    per client key that two calls fit; in-process shared state, budgets in a SQLite file."""
    root = tmp_path_factory.mktemp("workers")
    index = shared_index(root)
    steady = FaultServer([200], reply_text="ok").start()
    dear = FaultServer([200], reply_text="ok").start()
    routes = write_set(root / "served", {
        "steady": entry("openai", steady.base_url, model="steady-model", input_price=0,
                        output_price=0),
        "dear": entry("openai", dear.base_url, model="dear-model", input_price=1e6,
                      output_price=1e6)}, ["steady"],
        system_prompt=None,  # it would change the budget bound
        budgets={"store": str(root / "budgets.db"), "caps": [
            {"name": "daily", "scope": "client_key", "period": "day", "limit_usd": CAP}]})
    config = root / "gateway.yaml"
    config.write_text(yaml.safe_dump({"keys": [{"name": "team", "sha256": hash_client_key(KEY)}]}))
    try:
        yield routes, index, config
    finally:
        steady.stop()
        dear.stop()


def test_two_workers_answer_warn_share_the_budget_and_stop_on_sigterm(
        served_set: tuple[Path, Path, Path], tmp_path: Path) -> None:
    routes, index, config = served_set
    served = start(routes, index, config, tmp_path / "serve.log")
    try:
        log = served.text()
        assert WARNING in log and "2 workers" in log and "--redis" in log
        workers = served.workers()
        assert len(workers) == 2 and served.proc.pid not in workers
        seen: set[int] = set()
        for _ in range(40):  # a fresh connection each time: whichever worker accepts it
            with sdk(served) as client:
                raw = client.chat.completions.with_raw_response.create(
                    model="semroute", messages=HI, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
                answer = raw.parse()
                assert answer.choices[0].message.content == "ok"
                assert raw.headers["x-semroute-model"] == "steady"
                assert raw.headers["x-semroute-route"] != "-"
                assert raw.headers["x-semroute-method"] and raw.headers["x-semroute-request-id"]
                seen.add(serving_pid(raw.http_response, served.port, workers))
            if seen == set(workers):
                break
        assert seen == set(workers), "both workers served routed answers"

        dear_by: dict[int, list[int]] = {}
        for i in range(40):  # until both workers served `dear` and at least 5 were sent
            with sdk(served) as client:
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model="dear", messages=HI, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
                    status, http = 200, raw.http_response
                except openai.APIStatusError as exc:
                    status, http = exc.status_code, exc.response
                dear_by.setdefault(serving_pid(http, served.port, workers), []).append(status)
            if len(dear_by) == 2 and i >= 4:
                break
        statuses = sorted(s for ss in dear_by.values() for s in ss)
        assert len(dear_by) == 2, "both workers were asked for `dear`"
        assert statuses.count(200) == 2, f"two calls fit the cap across both workers: {dear_by}"
        assert set(statuses) == {200, 429}
    finally:
        stopped, left = stop(served)
    assert served.proc.returncode == 0
    assert len(stopped) == 2 and left == [], "SIGTERM to the supervisor stopped both workers"
    assert served.text().count("Finished server process") == 2, "each worker shut down"


def test_no_per_worker_warning_when_state_is_on_redis(
        served_set: tuple[Path, Path, Path], redis_server: RedisServer, tmp_path: Path) -> None:
    routes, index, config = served_set
    served = start(routes, index, config, tmp_path / "serve.log", "--redis", redis_server.url)
    try:
        with sdk(served) as client:
            answer = client.chat.completions.create(model="semroute", messages=HI,  # type: ignore[arg-type]
                                                    max_tokens=MAX_TOKENS)
        assert answer.choices[0].message.content == "ok"
        assert len(served.workers()) == 2
    finally:
        stop(served)
    assert WARNING not in served.text()


def test_each_worker_picks_up_a_new_build(served_set: tuple[Path, Path, Path],
                                          tmp_path: Path) -> None:
    served_routes, _, _ = served_set
    routes = tmp_path / "routes"
    shutil.copytree(served_routes, routes)
    index = tmp_path / "index"
    first = build_index(routes, index).build_id
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"keys": [{"name": "team", "sha256": hash_client_key(KEY)}],
                                      "reload_poll_seconds": 0.2}))
    served = start(routes, index, config, tmp_path / "serve.log")
    try:
        workers = served.workers()
        code = routes / "code.yaml"
        spec = yaml.safe_load(code.read_text())
        spec["utterances"].append("write a rust macro that derives Debug")
        code.write_text(yaml.safe_dump(spec))
        second = build_index(routes, index).build_id
        assert second != first
        builds: dict[int, str] = {}
        deadline = time.monotonic() + 60
        while set(builds.values()) != {second} or set(builds) != set(workers):
            assert time.monotonic() < deadline, f"not every worker reloaded: {builds}"
            with httpx2.Client() as http:  # a fresh connection: either worker may answer
                got = http.get(f"http://127.0.0.1:{served.port}/readyz", timeout=10)
                builds[serving_pid(got, served.port, workers)] = got.json()["build_id"]
    finally:
        stop(served)
