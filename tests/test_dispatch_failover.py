"""Failover: what a failed model call means for the rest of the chain.

- transient failures (429, 5xx, timeouts, refused connections) retry the same model, then move on;
- failures of *this model* (missing key variable, 401/403, 404) are tried once, recorded,
  cool the model down, and move on to the next model;
- a prompt too long for this model's context moves on to the next model (a bigger context)
  without cooling this one down;
- failures of *the request* (400 invalid request) are raised at once, typed, with the attempt;
- cooling models are tried last, never dropped; every model is tried at most once per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from semroute.dispatching import Attempt, Dispatcher
from semroute.errors import AllModelsFailedError, ErrorScope, FatalProviderError
from semroute.telemetry import read_trace
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import (
    dispatcher_factory,
    entry,
    live_anthropic,
    live_openai,
    shared_index,
)
from tests.support.llm_server import OK_TEXT, LLMServer

QUERY = "write a python function to sort a list"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("failover"))


@pytest.fixture
def make(tmp_path: Path, index: Path) -> Callable[..., Dispatcher]:
    return dispatcher_factory(tmp_path, index)


def tried(attempts: Sequence[Attempt]) -> list[tuple[object, ...]]:
    """(model, try, ok, status) of each attempt: the shape of a failover."""
    return [(a.model_key, a.try_number, a.ok, a.status) for a in attempts]


def test_a_missing_key_variable_fails_over_to_the_next_provider(
        make: Callable[..., Dispatcher], llm_server: LLMServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped cloud catalogue, for a user who holds only OPENAI_API_KEY: every primary is
    Anthropic, every backup OpenAI. The answer must come from the backup."""
    monkeypatch.delenv("SEMROUTE_TEST_ANTHROPIC_KEY", raising=False)
    monkeypatch.setenv("SEMROUTE_TEST_OPENAI_KEY", "sk-only-openai-0123456789")
    d = make({"powerful": {**live_anthropic(llm_server),
                           "api_key_env": "SEMROUTE_TEST_ANTHROPIC_KEY"},
              "powerful_backup": {**live_openai(llm_server),
                                  "api_key_env": "SEMROUTE_TEST_OPENAI_KEY"}},
             ["powerful", "powerful_backup"])
    r = d.dispatch(QUERY, max_tokens=8)
    assert r.model_key == "powerful_backup" and r.text
    first, second = r.attempts
    assert (first.model_key, first.ok, first.scope) == ("powerful", False, "next_model")
    assert "SEMROUTE_TEST_ANTHROPIC_KEY" in (first.error or "")
    assert second.ok

    again = d.dispatch("implement binary search in java", max_tokens=8)
    assert [a.model_key for a in again.attempts] == ["powerful_backup"], \
        "a model without a key is cooled down like any failing model"


def test_a_wrong_key_fails_over_once_and_never_leaks(
        make: Callable[..., Dispatcher], llm_server_with_key: LLMServer,
        llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk-wrong-" + "7" * 24
    monkeypatch.setenv("SEMROUTE_TEST_KEY", secret)
    d = make({"keyed": {**live_openai(llm_server_with_key), "api_key_env": "SEMROUTE_TEST_KEY"},
              "live": live_openai(llm_server)}, ["keyed", "live"])
    r = d.dispatch(QUERY, max_tokens=8)
    assert r.model_key == "live"
    assert tried(r.attempts) == [("keyed", 1, False, 401), ("live", 1, True, None)], \
        "401 is not retried on the same model"
    trace_text = d.trace.path.read_text()  # type: ignore[union-attr]
    out = capsys.readouterr()
    for text in (repr(r), trace_text, out.out, out.err, *(a.error or "" for a in r.attempts)):
        assert secret not in text


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [401, 403, 404])
def test_model_level_statuses_fail_over_without_retry(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer, kind: str,
        status: int) -> None:
    broken, ok = fault_server([status]), fault_server([200])
    d = make({"broken": entry(kind, broken.base_url), "ok": entry(kind, ok.base_url)},
             ["broken", "ok"])
    r = d.dispatch(QUERY)
    assert r.text == OK_TEXT and r.model_key == "ok"
    assert tried(r.attempts) == [("broken", 1, False, status), ("ok", 1, True, None)]
    assert r.attempts[0].scope == "next_model" and "injected fault" in (r.attempts[0].error or "")
    assert broken.hits == 1
    d.dispatch("implement binary search in java")
    assert broken.hits == 1, "the broken model is cooled down"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_context_too_long_fails_over_to_a_model_that_may_take_it(
        make: Callable[..., Dispatcher], llm_server: LLMServer, fault_server: MakeFaultServer,
        kind: str) -> None:
    """The test llama-server has a 2048-token context: a longer prompt is refused there, and
    the next model (a bigger context, here a server that answers anything) gets it."""
    bigger = fault_server([200])
    small = live_openai(llm_server) if kind == "openai" else live_anthropic(llm_server)
    d = make({"small": small, "bigger": entry("openai", bigger.base_url)}, ["small", "bigger"])
    long_prompt = QUERY + " " + "please consider every detail carefully " * 600
    r = d.dispatch(long_prompt, max_tokens=8)
    assert r.model_key == "bigger" and r.text == OK_TEXT
    first = r.attempts[0]
    assert (first.model_key, first.ok, first.scope) == ("small", False, "too_long")
    assert first.status is not None and 400 <= first.status < 500, first.error
    assert len(r.attempts) == 2, "a prompt that does not fit is not retried on the same model"
    short = d.dispatch(QUERY, max_tokens=8)
    assert short.model_key == "small", "a prompt too long says nothing about the model's health"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_an_invalid_request_is_raised_at_once_with_its_attempt(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer, kind: str) -> None:
    bad, ok = fault_server([400]), fault_server([200])
    d = make({"first": entry(kind, bad.base_url), "second": entry(kind, ok.base_url)},
             ["first", "second"])
    with pytest.raises(FatalProviderError) as info:
        d.dispatch(QUERY)
    err = info.value
    assert err.status == 400 and err.scope is ErrorScope.REQUEST and not err.retryable
    assert tried(err.attempts) == [("first", 1, False, 400)]
    assert ok.hits == 0, "no other model is asked to answer an invalid request"
    [line] = read_trace(d.trace.path)  # type: ignore[union-attr]
    assert line["attempts"][0]["status"] == 400 and "400" in line["error"]
    assert line["request_id"] == err.request_id
    with pytest.raises(FatalProviderError):
        d.dispatch("implement binary search in java")
    assert bad.hits == 2, "a request error says nothing about the model: no cooldown"


def test_a_request_the_live_server_rejects_is_not_sent_to_other_models(
        make: Callable[..., Dispatcher], llm_server: LLMServer,
        fault_server: MakeFaultServer) -> None:
    backup = fault_server([200])
    d = make({"live": live_openai(llm_server), "backup": entry("openai", backup.base_url)},
             ["live", "backup"])
    with pytest.raises(FatalProviderError) as info:
        d.dispatch(QUERY, max_tokens=8, response_format={"type": "bogus"})
    assert info.value.status == 400 and info.value.scope is ErrorScope.REQUEST
    assert "response_format" in info.value.message
    assert [a.model_key for a in info.value.attempts] == ["live"] and backup.hits == 0


def test_when_every_model_fails_one_error_lists_every_attempt_and_why(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer, refused_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMROUTE_UNSET_KEY", raising=False)
    denied, flaky = fault_server([401]), fault_server([500])
    d = make({"keyless": {**entry("anthropic", refused_url), "api_key_env": "SEMROUTE_UNSET_KEY"},
              "denied": entry("openai", denied.base_url),
              "dead": entry("openai", refused_url),
              "flaky": entry("anthropic", flaky.base_url)},
             ["keyless", "denied", "dead", "flaky"])
    with pytest.raises(AllModelsFailedError) as info:
        d.dispatch(QUERY)
    err = info.value
    assert tried(err.attempts) == [("keyless", 1, False, None), ("denied", 1, False, 401),
                                   ("dead", 1, False, None), ("dead", 2, False, None),
                                   ("flaky", 1, False, 500), ("flaky", 2, False, 500)]
    assert [a.scope for a in err.attempts] == ["next_model", "next_model", "retry", "retry",
                                               "retry", "retry"]
    assert all(a.error for a in err.attempts)
    text = str(err)
    for why in ("SEMROUTE_UNSET_KEY", "401", "connection", "500"):
        assert why in text
    [line] = read_trace(d.trace.path)  # type: ignore[union-attr]
    assert len(line["attempts"]) == 6 and line["attempts"][1]["scope"] == "next_model"
    assert line["request_id"] == err.request_id


def test_cooling_models_are_tried_last_not_dropped(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer) -> None:
    """The primary fails (and cools down); later the backup fails too: the primary, cooling or
    not, is the last resort and answers."""
    primary = fault_server([500, 500, 200])
    backup = fault_server([200, 500])
    d = make({"primary": entry("openai", primary.base_url),
              "backup": entry("openai", backup.base_url)}, ["primary", "backup"])
    first = d.dispatch(QUERY)
    assert first.model_key == "backup"
    second = d.dispatch("implement binary search in java")
    assert second.model_key == "primary" and second.text == OK_TEXT
    assert tried(second.attempts) == [("backup", 1, False, 500), ("backup", 2, False, 500),
                                      ("primary", 1, True, None)]


def test_each_model_is_tried_at_most_once_per_request(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer) -> None:
    a, b = fault_server([500]), fault_server([503])
    d = make({"a": entry("openai", a.base_url), "b": entry("anthropic", b.base_url)}, ["a", "b"])
    for _ in range(3):  # both end up cooling: the order changes, the set of tries does not
        with pytest.raises(AllModelsFailedError) as info:
            d.dispatch(QUERY)
        keys = [x.model_key for x in info.value.attempts]
        assert sorted(set(keys)) == ["a", "b"]
        runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
        assert len(runs) == 2, f"a model was tried twice in one request: {keys}"
    assert a.hits == 6 and b.hits == 6


def test_async_dispatch_fails_over_the_same_way(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMROUTE_UNSET_KEY", raising=False)
    gone, ok = fault_server([404]), fault_server([200])
    d = make({"keyless": {**entry("anthropic", ok.base_url), "api_key_env": "SEMROUTE_UNSET_KEY"},
              "gone": entry("openai", gone.base_url), "ok": entry("anthropic", ok.base_url)},
             ["keyless", "gone", "ok"])
    r = asyncio.run(d.adispatch(QUERY))
    assert tried(r.attempts) == [("keyless", 1, False, None), ("gone", 1, False, 404),
                                 ("ok", 1, True, None)]

