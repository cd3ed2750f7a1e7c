"""The request journal and feedback (README "Feedback and shadow evaluation"):

- with `router.outcomes.log_requests: true` every answered request (plain, streamed once it
  ends, parallel, chat with a conversation id, agent step, explicit model) is journalled in the
  outcomes store off the caller's path, with its vector and features; the text only with
  `keep_text`; a failing store costs no answer;
- feedback right after a dispatch finds its request; it lands in the `feedback` table, as an
  outcome record (source `feedback`) of the model that answered, and in the trace (the note's
  length only, unless the trace includes queries); sync, async, module-level and CLI share it;
- an unknown request id, a label naming no route, a score outside [0, 1] are refused, naming
  what is wrong. Real SQLite, real encoder, loopback model servers and the local llama-server.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

import semroute
from semroute.dispatching import Dispatcher
from semroute.errors import FeedbackError, UnknownRequestError
from semroute.outcomes import OutcomeStore, text_hash
from semroute.routing import Router
from semroute.telemetry import read_trace
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import SseServer, entry, live_openai, load, shared_index, write_set
from tests.support.llm_server import LLMServer

QUERY = "write a python function to sort a list"
CALL_COST = (3 * 2.0 + 3 * 8.0) / 1e6


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("feedback"))


def journalled(tmp_path: Path, index: Path, models: dict[str, dict[str, Any]],
               chain: list[str] | None = None, *, include_query: bool | None = None,
               **outcomes: Any) -> Dispatcher:
    routes = write_set(tmp_path / "routes", models, chain or [next(iter(models))],
                       outcomes={"log_requests": True, **outcomes})
    cat = yaml.safe_load((routes / "models.yaml").read_text())
    cat["steps"] = {"planning": next(iter(models))}
    (routes / "models.yaml").write_text(yaml.safe_dump(cat))
    return Dispatcher(load(routes, index, classifier=False), trace=tmp_path / "trace.jsonl",
                      include_query=include_query)


def store_of(d: Dispatcher) -> OutcomeStore:
    assert d.recorder is not None
    d.recorder.join()
    return OutcomeStore(d.recorder.path)


def test_every_kind_of_answered_request_is_journalled_with_its_vector(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    d = journalled(tmp_path, index, {"fast": entry("openai", ok.base_url),
                                     "other": entry("anthropic", ok.base_url)})
    plain = d.dispatch(QUERY)
    chat = d.dispatch([{"role": "user", "content": "hello, how are you"}],
                      conversation_id="conv-42")
    step = d.dispatch("plan the next move", step="planning")
    explicit = d.dispatch(QUERY, model="other")
    with store_of(d) as store:
        rows = {r.request_id: r for r in store.requests()}
        assert set(rows) == {plain.request_id, chat.request_id, step.request_id,
                             explicit.request_id}
        p = rows[plain.request_id]
        assert (p.route, p.method, p.model) == ("code", "index", "fast")
        assert p.text_hash == text_hash(QUERY) and p.text is None, "hashes only by default"
        assert p.cost_usd == pytest.approx(CALL_COST) and p.latency_ms is not None
        assert p.score == pytest.approx(plain.decision.score)
        assert p.margin == pytest.approx(plain.decision.margin)
        assert p.conversation is None, "a single query is no conversation"
        c = rows[chat.request_id]
        assert c.route == "greet" and c.conversation is not None and len(c.conversation) == 32
        assert "conv-42" not in c.conversation, "the conversation id is hashed"
        assert (rows[step.request_id].route, rows[step.request_id].method) == (
            "step:planning", "step")
        assert (rows[explicit.request_id].route, rows[explicit.request_id].model) == (
            "model:other", "other")
        hashes, vectors = store.vectors(d.recorder.fingerprint)  # type: ignore[union-attr]
        assert text_hash(QUERY) in hashes and vectors.shape[1] == 384, "tiers can learn"
        assert store.features([text_hash(QUERY)]).shape == (1, 9)


def test_a_stream_is_journalled_once_it_ends(tmp_path: Path, index: Path) -> None:
    server = SseServer(["ok"])
    try:
        d = journalled(tmp_path, index, {"m": entry("openai", server.base_url)})
        r = d.dispatch(QUERY, stream=True)
        assert d.recorder is not None
        d.recorder.join()
        with OutcomeStore(d.recorder.path) as store:
            assert store.request(r.request_id) is None, "not before the stream ended"
        assert "".join(r) == "Hello from the stream."
        with store_of(d) as store:
            got = store.request(r.request_id)
            assert got is not None and r.cost_usd > 0 and got.cost_usd == pytest.approx(r.cost_usd)
    finally:
        server.stop()


def test_a_parallel_route_is_journalled_with_the_picked_model(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    a, b = fault_server([200], reply_text="short"), fault_server([200], reply_text="much longer")
    routes = write_set(tmp_path / "routes", {"a": entry("openai", a.base_url),
                                             "b": entry("openai", b.base_url)}, ["a"],
                       outcomes={"log_requests": True})
    for f in routes.glob("*.yaml"):
        if f.name != "models.yaml":
            data = yaml.safe_load(f.read_text())
            data["parallel"] = {"models": ["a", "b"], "pick": "longest"}
            f.write_text(yaml.safe_dump(data))
    d = Dispatcher(load(routes, index, classifier=False))
    r = d.dispatch(QUERY)
    with store_of(d) as store:
        got = store.request(r.request_id)
    assert got is not None and got.model == "b" and got.cost_usd == pytest.approx(2 * CALL_COST)


def test_the_text_is_kept_only_with_keep_text(tmp_path: Path, index: Path,
                                              fault_server: MakeFaultServer) -> None:
    d = journalled(tmp_path, index, {"fast": entry("openai", fault_server([200]).base_url)},
                   keep_text=True)
    r = d.dispatch(QUERY)
    with store_of(d) as store:
        got = store.request(r.request_id)
    assert got is not None and got.text == QUERY


def test_feedback_right_after_dispatch_lands_in_store_outcomes_and_trace(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    d = journalled(tmp_path, index, {"fast": entry("openai", fault_server([200]).base_url)})
    r = d.dispatch(QUERY)
    entry_ = d.feedback(r.request_id, score=False, label="greet", note="should be small talk")
    assert entry_.id is not None and (entry_.score, entry_.label) == (0.0, "greet")
    with store_of(d) as store:
        (stored,) = store.feedback(request_id=r.request_id)
        assert stored.note == "should be small talk" and stored.score == 0.0
        (rec,) = store.records(source="feedback")
        assert (rec.model, rec.route, rec.score, rec.request_id) == (
            "fast", "code", 0.0, r.request_id)
        assert rec.text_hash == text_hash(QUERY)
    line = [x for x in read_trace(tmp_path / "trace.jsonl") if x.get("kind") == "feedback"]
    assert line == [{"kind": "feedback", "ts": line[0]["ts"], "request_id": r.request_id,
                     "route": "code", "model": "fast", "method": "index", "score": 0.0,
                     "label": "greet", "note_chars": 20, "outcome_recorded": True}]
    dispatch_lines = [x for x in read_trace(tmp_path / "trace.jsonl") if "kind" not in x]
    assert [x["request_id"] for x in dispatch_lines] == [r.request_id]


def test_the_note_reaches_the_trace_only_with_the_query(tmp_path: Path, index: Path,
                                                        fault_server: MakeFaultServer) -> None:
    d = journalled(tmp_path, index, {"fast": entry("openai", fault_server([200]).base_url)},
                   include_query=True)
    r = d.dispatch(QUERY)
    d.feedback(r.request_id, note="call me at 555-0100")
    (line,) = [x for x in read_trace(tmp_path / "trace.jsonl") if x.get("kind") == "feedback"]
    assert line["note"] == "call me at 555-0100" and line["outcome_recorded"] is False


def test_async_feedback_shares_the_implementation(tmp_path: Path, index: Path,
                                                  fault_server: MakeFaultServer) -> None:
    d = journalled(tmp_path, index, {"fast": entry("openai", fault_server([200]).base_url)})

    async def go() -> float | None:
        r = await d.adispatch(QUERY)
        return (await d.afeedback(r.request_id, score=0.75)).score

    assert asyncio.run(go()) == 0.75


def test_unknown_ids_bad_labels_and_bad_scores_are_refused_naming_them(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    d = journalled(tmp_path, index, {"fast": entry("openai", fault_server([200]).base_url)})
    r = d.dispatch(QUERY)
    with pytest.raises(UnknownRequestError, match="unknown request id 'no-such-id'"):
        d.feedback("no-such-id", score=1.0)
    with pytest.raises(FeedbackError, match=r"field 'label': no route named 'billing' .*"
                                            r"\(routes: code, greet\)"):
        d.feedback(r.request_id, label="billing")
    with pytest.raises(FeedbackError, match=r"field 'score' must be a number in \[0, 1\]"):
        d.feedback(r.request_id, score=1.5)
    with pytest.raises(FeedbackError, match="give a score, a label or a note"):
        d.feedback(r.request_id)
    with store_of(d) as store:
        assert store.feedback() == [], "nothing invalid was stored"


def test_module_level_feedback_through_the_router_or_the_routes_folder(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    routes = write_set(tmp_path / "routes", {"fast": entry("openai",
                                                            fault_server([200]).base_url)},
                       ["fast"], outcomes={"log_requests": True})
    router = Router.load(routes, index, classifier=False)
    r = semroute.dispatch(QUERY, router=router)
    assert semroute.feedback(r.request_id, score=True, router=router).score == 1.0
    second = semroute.feedback(r.request_id, label="code", routes=routes)
    assert second.label == "code"
    with pytest.raises(UnknownRequestError, match="there is no outcomes store"):
        semroute.feedback("x", score=1, routes=write_set(
            tmp_path / "empty", {"m": entry("openai", "http://127.0.0.1:9")}, ["m"]))


def test_without_log_requests_nothing_is_journalled_and_feedback_finds_nothing(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    routes = write_set(tmp_path / "routes", {"fast": entry("openai",
                                                            fault_server([200]).base_url)},
                       ["fast"])
    d = Dispatcher(load(routes, index, classifier=False))
    assert d.recorder is None
    r = d.dispatch(QUERY)
    with pytest.raises(UnknownRequestError, match=r"log_requests: true"):
        d.feedback(r.request_id, score=1.0)


def test_a_failing_store_costs_no_answer(tmp_path: Path, index: Path,
                                         fault_server: MakeFaultServer) -> None:
    bad = tmp_path / "not-a-store.db"
    with sqlite3.connect(bad) as c:
        c.execute("CREATE TABLE something(x)")
    d = journalled(tmp_path, index, {"fast": entry("openai", fault_server([200]).base_url)},
                   path=str(bad))
    r = d.dispatch(QUERY)
    assert r.text and d.recorder is not None
    d.recorder.join()
    assert d.recorder.failed == 1 and d.recorder.written == 0


def test_the_local_llm_answer_is_journalled_and_takes_feedback(
        tmp_path: Path, index: Path, llm_server: LLMServer) -> None:
    d = journalled(tmp_path, index, {"fast": live_openai(llm_server)})
    r = d.dispatch("hello, how are you", max_tokens=8)
    d.feedback(r.request_id, score=1.0)
    with store_of(d) as store:
        got = store.request(r.request_id)
        assert got is not None and (got.route, got.model) == ("greet", "fast")
        assert got.cost_usd == pytest.approx(r.cost_usd) and got.cost_usd > 0
        assert [x.score for x in store.records(source="feedback")] == [1.0]


def test_cli_feedback(tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    d = journalled(tmp_path, index, {"fast": entry("openai", fault_server([200]).base_url)})
    r = d.dispatch(QUERY)
    assert d.recorder is not None
    d.recorder.join()
    trace = tmp_path / "cli-trace.jsonl"
    cmd = [sys.executable, "-m", "semroute.cli", "feedback", "--routes", str(tmp_path / "routes"),
           "--trace", str(trace), "--json"]
    ok = subprocess.run([*cmd, r.request_id, "--score", "down", "--label", "greet"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["score"] == 0.0
    assert read_trace(trace)[0]["kind"] == "feedback"
    bad = subprocess.run([*cmd, r.request_id, "--label", "billing"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "no route named 'billing'" in bad.stderr
    unknown = subprocess.run([*cmd, "nope", "--score", "1"], capture_output=True, text=True,
                             timeout=120)
    assert unknown.returncode == 2 and "unknown request id 'nope'" in unknown.stderr


def test_journal_rows_are_written_in_batches_and_a_backlog_is_bounded(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    d = journalled(tmp_path, index, {"fast": entry("openai", fault_server([200]).base_url)})
    rec = d.recorder
    assert rec is not None
    rec.max_rows = 5
    held = threading.Event()  # the worker is busy, so every row waits for one batch
    assert rec.worker.submit(held.wait)
    answers = [d.dispatch(QUERY) for _ in range(5)]
    sixth = d.dispatch(QUERY)
    held.set()
    assert sixth.text, "a full journal costs no answer"
    rec.join()
    assert rec.journalled == 5
    assert rec.written == 2, "the held task, then one transaction for the whole batch"
    assert rec.dropped == 1
    with OutcomeStore(rec.path) as store:
        assert {r.request_id for r in store.requests()} == {r.request_id for r in answers}


def test_module_level_afeedback_into_the_routes_folder_store(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    d = journalled(tmp_path, index, {"fast": entry("openai", fault_server([200]).base_url)})
    r = d.dispatch(QUERY)
    assert d.recorder is not None
    d.recorder.join()
    got = asyncio.run(semroute.afeedback(r.request_id, score=0.25, routes=tmp_path / "routes"))
    assert got.score == 0.25 and got.id is not None
    with store_of(d) as store:
        assert [e.score for e in store.feedback(request_id=r.request_id)] == [0.25]
