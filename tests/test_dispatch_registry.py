"""`semroute.dispatch(..., router=r)`: calls with the same router share cooldowns, provider
clients and the trace sink, and the router is not kept alive once the caller drops it."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

import semroute
from semroute.telemetry import read_trace
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import entry, load, shared_index, write_set

QUERY = "write a python function to sort a list"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("registry"))


def test_a_router_passed_to_dispatch_can_be_garbage_collected(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    routes = write_set(tmp_path / "routes", {"m": entry("openai", ok.base_url)}, ["m"])
    router = load(routes, index, classifier=False)
    semroute.dispatch(QUERY, router=router)
    asyncio.run(semroute.adispatch(QUERY, router=router))
    ref = weakref.ref(router)
    del router
    gc.collect()
    assert ref() is None, "dispatch() keeps every router it has seen alive"


def test_calls_with_the_same_router_share_cooldowns_and_the_trace(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    flaky, ok = fault_server([500]), fault_server([200])
    trace = tmp_path / "trace.jsonl"
    routes = write_set(tmp_path / "routes", {"flaky": entry("openai", flaky.base_url),
                                             "ok": entry("openai", ok.base_url)},
                       ["flaky", "ok"], trace_path=str(trace))
    router = load(routes, index, classifier=False)
    first = semroute.dispatch(QUERY, router=router)
    assert [a.model_key for a in first.attempts] == ["flaky", "flaky", "ok"]
    second = semroute.dispatch("implement binary search in java", router=router)
    third = asyncio.run(semroute.adispatch("reverse a linked list in C", router=router))
    assert [a.model_key for a in second.attempts] == ["ok"], "cooldowns are shared"
    assert [a.model_key for a in third.attempts] == ["ok"], "... by sync and async calls"
    assert flaky.hits == 2
    assert [line["request_id"] for line in read_trace(trace)] == [
        first.request_id, second.request_id, third.request_id]

    other = load(routes, index, classifier=False)
    fresh = semroute.dispatch(QUERY, router=other)
    assert [a.model_key for a in fresh.attempts] == ["flaky", "flaky", "ok"], \
        "another router has its own state"
