"""A chat reply is scored in the background when dispatch produces it, so the conversation's
next turn encodes only itself; streamed replies when they complete; string queries and
`prescore_replies: false` leave the cache alone; a full queue drops, never blocks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from semroute.dispatching import Dispatcher
from semroute.dispatching.background import BackgroundWorker
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import dispatcher_factory, entry, live_openai, shared_index
from tests.support.llm_server import LLMServer

REPLY = "Here is a python function that sorts a list with merge sort."


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("prescore"))


@pytest.fixture
def make(tmp_path: Path, index: Path) -> Callable[..., Dispatcher]:
    return dispatcher_factory(tmp_path, index)


def chat(reply: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": "write a python function to sort a list"},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "yes, do that"}]  # a follow-up: looks back


def texts_encoded_for_next_turn(d: Dispatcher, reply: str) -> int:
    """How many texts the encoder saw to decide the turn after `reply`."""
    before = d.router.matcher.cache.misses
    d.router.route(chat(reply), use_classifier=False)
    return d.router.matcher.cache.misses - before


def test_a_chat_reply_is_scored_when_produced_so_the_next_turn_encodes_only_itself(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer) -> None:
    server = fault_server([200], reply_text=REPLY)
    d = make({"m": entry("openai", server.base_url)}, ["m"])
    r = d.dispatch(chat(REPLY)[:1])
    assert r.text == REPLY
    d.state.prescorer.join()
    assert d.state.prescorer.done == 1
    assert texts_encoded_for_next_turn(d, REPLY) == 1, "the reply was encoded again"


def test_without_prescoring_the_next_turn_encodes_the_reply_too(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer) -> None:
    server = fault_server([200], reply_text=REPLY)
    d = make({"m": entry("openai", server.base_url)}, ["m"], prescore_replies=False)
    d.dispatch(chat(REPLY)[:1])
    d.state.prescorer.join()
    assert d.state.prescorer.done == 0
    assert texts_encoded_for_next_turn(d, REPLY) == 2


def test_a_string_query_is_not_a_chat_and_its_answer_is_not_scored(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer) -> None:
    server = fault_server([200], reply_text=REPLY)
    d = make({"m": entry("openai", server.base_url)}, ["m"])
    d.dispatch("write a python function to sort a list")
    d.state.prescorer.join()
    assert d.state.prescorer.done == 0


def test_a_streamed_reply_is_scored_once_its_stream_completes(
        make: Callable[..., Dispatcher], llm_server: LLMServer) -> None:
    d = make({"m": live_openai(llm_server)}, ["m"])
    with d.dispatch(chat(REPLY)[:1], stream=True, max_tokens=16) as r:
        d.state.prescorer.join()
        assert d.state.prescorer.done == 0, "scored before the stream ended"
        text = "".join(r)
    d.state.prescorer.join()
    assert d.state.prescorer.done == 1
    assert texts_encoded_for_next_turn(d, text) == 1


def test_a_full_queue_drops_jobs_without_blocking_and_a_failing_job_is_counted() -> None:
    gate = threading.Event()
    p = BackgroundWorker("test", "a test job", max_queued=1)
    assert p.submit(gate.wait)  # the worker blocks on this one
    while p.submit(lambda: None):  # fill the queue behind it
        pass
    assert p.dropped == 1
    gate.set()
    p.join()
    assert p.submit(lambda: 1 / 0)
    p.join()
    assert (p.done, p.failed) == (2, 1)


def test_close_lets_the_running_job_finish_drops_the_queued_ones_and_stops_the_worker() -> None:
    """What interpreter exit does (an encoder torn down mid-call would abort the process)."""
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow() -> None:
        started.set()
        release.wait(5)
        ran.append("slow")

    p = BackgroundWorker("test", "a test job", max_queued=4)
    p.submit(slow)
    assert p.running
    started.wait(5)
    p.submit(lambda: ran.append("queued"))
    threading.Timer(0.2, release.set).start()
    p.close()
    assert ran == ["slow"] and p.dropped == 1
    assert not p.submit(lambda: None), "a closed worker takes no more jobs"
    assert not p.running


def test_join_with_a_timeout_says_whether_every_job_ran_without_waiting_longer() -> None:
    """What the gateway's shutdown uses to wait a bounded time for journal writes."""
    gate = threading.Event()
    p = BackgroundWorker("test", "a test job", max_queued=4)
    assert p.join(0.0), "nothing queued: done at once"
    p.submit(gate.wait)
    assert p.join(0.2) is False, "a job still running is not done"
    gate.set()
    assert p.join(5.0) is True and p.done == 1
