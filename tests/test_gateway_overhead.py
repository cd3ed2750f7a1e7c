"""What keeps the gateway's CPU per request low: the sync SDK clients keep few idle connections
(httpx's pool probes every idle socket on each request), and the loaded router sits out of the
garbage collector's view (a full collection would walk it again and again), including after a
hot reload, when the replaced router is freed."""

from __future__ import annotations

import gc
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import yaml

from benchmarks.gateway_targets import start_upstream
from semroute.config import GatewaySettings, ModelSpec
from semroute.gateway import create_app
from semroute.index import build_index
from semroute.providers import POOL_LIMITS, make_provider
from tests.dispatch_support import live_openai, write_set
from tests.support.gateway import run_gateway
from tests.support.llm_server import LLMServer

HELLO = [{"role": "user", "content": "hello"}]


def open_connections_to(port: int) -> int:
    """This process's established TCP connections whose far end is 127.0.0.1:`port`."""
    count = 0
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":
            count += 1
    return count


def test_after_a_burst_a_sync_provider_keeps_at_most_the_pool_limit_of_idle_connections(
        tmp_path: Path) -> None:
    """httpx (the sync clients) probes every idle socket on each request, so it keeps few; the
    async clients' aiohttp pool checks only the one it takes, and closes idle connections after
    `keepalive_expiry` (tests/test_provider_transport.py)."""
    keep = POOL_LIMITS.max_keepalive_connections
    assert keep is not None and keep < 40
    server = start_upstream(tmp_path)  # the benchmark's instant upstream (raw asyncio)
    try:
        spec = ModelSpec(key="m", provider="openai", model="bench-model",
                         base_url=f"http://127.0.0.1:{server.port}/v1")
        provider = make_provider(spec)
        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda _: provider.complete(HELLO), range(40)))
        assert len(answers) == 40
        assert open_connections_to(server.port) <= keep
    finally:
        server.stop()


def test_the_serving_router_is_out_of_the_collectors_generations(
        tmp_path: Path, llm_server: LLMServer) -> None:
    routes = write_set(tmp_path / "routes", {"fast": live_openai(llm_server)}, ["fast"])
    build_index(routes, tmp_path / "index")
    app = create_app(routes, tmp_path / "index")
    gw = run_gateway(app)
    try:
        router = app.state.gateway.live.current.router
        assert all(o is not router for o in gc.get_objects())  # frozen: not in gens 0-2
        c = openai.OpenAI(base_url=gw.openai_base_url, api_key="x", max_retries=0)
        r = c.chat.completions.with_raw_response.create(model="semroute", max_tokens=2,
                                                         messages=HELLO)
        assert r.headers["x-semroute-route"] == "greet"
    finally:
        gw.stop()


def test_after_a_reload_the_replaced_router_is_freed_and_the_new_one_frozen(
        tmp_path: Path, llm_server: LLMServer) -> None:
    routes = write_set(tmp_path / "routes", {"fast": live_openai(llm_server)}, ["fast"])
    first = build_index(routes, tmp_path / "index")
    app = create_app(routes, tmp_path / "index",
                     settings=GatewaySettings(reload_poll_seconds=0.2))
    gw = run_gateway(app)
    try:
        live = app.state.gateway.live
        old = weakref.ref(live.current.router)
        code = routes / "code.yaml"
        spec = yaml.safe_load(code.read_text())
        spec["utterances"].append("port this perl script to go")
        code.write_text(yaml.safe_dump(spec))
        second = build_index(routes, tmp_path / "index")
        assert second.build_id != first.build_id
        deadline = time.monotonic() + 60
        while old() is not None:  # freed by the collection one poll after the swap
            assert time.monotonic() < deadline, "the replaced router was not freed"
            time.sleep(0.1)
        assert live.current.build_id == second.build_id
        new = live.current.router
        deadline = time.monotonic() + 30  # the settle runs one poll after the swap
        while any(o is new for o in gc.get_objects()):
            assert time.monotonic() < deadline, "the new router was never frozen"
            time.sleep(0.2)
    finally:
        gw.stop()
