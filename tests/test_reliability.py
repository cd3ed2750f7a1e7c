"""Fault injection through real SDKs against real loopback servers (tests/support/faults.py).

Every request of every run (sync, async, streamed, async streamed) is checked by `check_run`:
it ends in an answer (after failover) or in exactly one typed semroute error that lists its
attempts; nothing untyped leaks; exactly one trace record per request (streams left early
included), with the response's or error's request_id and attempts; the fake API key appears in
no log line (DEBUG: semroute, both SDKs, the HTTP stack), error text, response or trace record;
attempts agree with attempts_per_model and the chain; the servers saw exactly the recorded
attempts, and every valid answer they sent was taken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.faults import (
    CANARY_KEY,
    FAULTS,
    FLAKY,
    HEALTHY,
    MODES,
    FaultyServer,
    Flavour,
    Hit,
    Mix,
    MixRun,
    Mode,
    ModelDef,
    build_fault_index,
    capture_logs,
    llama_mix,
    run_mix,
    standard_mixes,
)
from tests.support.llm_server import LLMServer

MIXES = {m.name: m for m in standard_mixes()}
REQUESTS = 200
CONCURRENCY = 16
# text already delivered cannot be failed over: these end streamed requests in a typed error
# (reset sends one chunk, waits 50 ms, then resets the connection)
MID_STREAM = ("cut_after_text", "reset", "truncated_stream", "stall_after_text")


@pytest.fixture(scope="module")
def fault_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fault_index(tmp_path_factory.mktemp("faults"))


def _no_key_in(capfd: pytest.CaptureFixture[str]) -> None:
    out = capfd.readouterr()
    assert CANARY_KEY not in out.out + out.err, "the API key reached stdout/stderr"


# ---------------------------------------------------------------- the mixes


@pytest.fixture(scope="module")
def mix_runs(fault_index: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], MixRun]]:
    """The standard mixes' servers and routers, started once for all their modes."""
    with contextlib.ExitStack() as stack:
        started: dict[str, MixRun] = {}

        def get(name: str) -> MixRun:
            if name not in started:
                started[name] = stack.enter_context(MixRun(
                    MIXES[name], fault_index, tmp_path_factory.mktemp(name), seed=7))
            return started[name]

        yield get


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mix_name", list(MIXES))
def test_fault_mix(mix_name: str, mode: Mode, mix_runs: Callable[[str], MixRun],
                   capfd: pytest.CaptureFixture[str]) -> None:
    """200 requests, 16 concurrent callers, seeded random faults on every flaky model."""
    mix = MIXES[mix_name]
    rep = mix_runs(mix_name).run(mode, requests=REQUESTS, concurrency=CONCURRENCY)
    _no_key_in(capfd)
    assert rep.ok, rep.describe()
    assert rep.lost == 0 and rep.lost_trace_records == 0 and rep.key_leaks == 0
    assert rep.trace_records == REQUESTS
    assert rep.answered + rep.typed_errors == REQUESTS
    missing = [f for f in FLAKY if not rep.faults_served[f]]
    assert not missing, f"faults never injected: {missing}"
    if mix.healthy_tail:
        assert rep.answered + rep.mid_stream_errors == REQUESTS
        assert rep.failovers >= REQUESTS // 10, "the flaky models hardly ever failed"
    else:
        assert rep.errors_by_type["AllModelsFailedError"] > 0, "no request lost every model"
        assert rep.answered > REQUESTS // 3


# ---------------------------------------------------------------- one fault at a time


def _single_fault_mix(fault: str) -> Mix:
    if fault == "refused":
        models = (ModelDef("f_oa", "openai", "refused"), ModelDef("f_an", "anthropic", "refused"))
    else:
        models = (ModelDef("f_oa", "openai", weights={fault: 1}),
                  ModelDef("f_an", "anthropic", weights={fault: 1}))
    # a short timeout only where the fault waits for it; elsewhere a loaded machine must not
    # turn a fault into a timeout (e.g. before a stream's first chunk)
    timeout = {"timeout": 0.15, "stall_after_text": 0.25}.get(fault, 1.0)
    return Mix(f"only-{fault}", (*models, ModelDef("healthy", "openai")), timeout_s=timeout,
               slow_s=0.3)


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "ok"] + ["refused"])
def test_each_fault_alone(fault: str, fault_index: Path, tmp_path: Path,
                          capfd: pytest.CaptureFixture[str]) -> None:
    """Both flaky models (OpenAI, then Anthropic) always answer with `fault`; a healthy model
    ends the chain. A slow first byte is an answer, not a failure."""
    mix = _single_fault_mix(fault)
    problems: list[str] = []
    with MixRun(mix, fault_index, tmp_path, seed=3) as m:
        reports = [m.run(mode, requests=4, concurrency=4) for mode in MODES]
    for mode, rep in zip(MODES, reports, strict=True):
        n = rep.requests
        if not rep.ok:
            problems.append(rep.describe())
            continue
        stream = mode in ("stream", "astream")
        expect: dict[str, Any]
        if fault == "slow_first_byte":
            expect = {"answered_by": {"f_oa": n}, "attempts": [1] * n}
        elif stream and fault in MID_STREAM:
            expect = {"answered": 0, "mid_stream_errors": n, "attempts": [1] * n}
        else:
            expect = {"answered_by": {"healthy": n}, "attempts": [5] * n}
        got = {k: getattr(rep, k) for k in expect}
        got = {k: dict(v) if k == "answered_by" else v for k, v in got.items()}
        if got != expect:
            problems.append(f"{mix.name}/{mode}: expected {expect}, got {got}")
    _no_key_in(capfd)
    assert not problems, "\n".join(problems)


def test_retry_after_is_honoured(fault_index: Path, tmp_path: Path) -> None:
    """429 with Retry-After: 1 (backoff is 2 ms): the retry waits a second, then succeeds."""
    plan: list[tuple[Flavour, Mode]] = [("openai", "sync"), ("anthropic", "async")]
    for flavour, mode in plan:
        mix = Mix(f"retry-after-{flavour}", (
            ModelDef("ra", flavour, script=("http_429", "ok"), retry_after="1"),))
        rep = run_mix(mix, mode, index=fault_index, workdir=tmp_path, requests=1,
                      concurrency=1)
        assert rep.ok, rep.describe()
        assert rep.answered == 1 and rep.attempts == [2]
        assert 950 <= rep.latencies_ms[0] < 5000, rep.latencies_ms


def test_per_model_failures_fail_over_without_retries(fault_index: Path,
                                                      tmp_path: Path) -> None:
    """A missing key variable, 401, 403 and 404 concern one model: one attempt each, then the
    next model (another provider may have the key, the model, the context)."""
    mix = Mix("per-model", (
        ModelDef("nokey", "openai", api_key_env="SEMROUTE_FAULTS_UNSET_KEY"),
        ModelDef("m401", "anthropic", weights={"http_401": 1}),
        ModelDef("m403", "openai", weights={"http_403": 1}),
        ModelDef("m404", "anthropic", weights={"http_404": 1}),
        ModelDef("healthy", "anthropic"),
    ))
    with MixRun(mix, fault_index, tmp_path) as m:
        reports = [m.run(mode, requests=4, concurrency=4) for mode in ("sync", "astream")]
    for rep in reports:
        assert rep.ok, rep.describe()
        assert dict(rep.answered_by) == {"healthy": 4} and rep.attempts == [5] * 4


def test_the_checks_catch_what_they_claim_to(fault_index: Path, tmp_path: Path) -> None:
    """The invariants are not vacuous: a clean run passes, tampered copies of it do not."""
    with MixRun(Mix("control", (ModelDef("h", "openai"),)), fault_index, tmp_path) as m:
        data = m.collect("sync", requests=6, concurrency=2)
    assert data.check().ok, data.check().describe()

    def kinds(**change: Any) -> set[str]:
        return set(dataclasses.replace(data, **change).check().violations)

    lines = data.trace_text.splitlines(keepends=True)
    assert "trace: 0 records for one request" in kinds(trace_text="".join(lines[1:]))
    assert "trace: 2 records for one request" in kinds(trace_text="".join(lines + lines[:1]))
    assert "key leak: trace file" in kinds(
        trace_text=data.trace_text.replace("hello", CANARY_KEY, 1))
    untyped = [dataclasses.replace(o) for o in data.outcomes]
    untyped[0].error, untyped[0].phase = ValueError("boom"), "dispatch"
    untyped[1].finished = False
    found = kinds(outcomes=untyped)
    assert {"lost: untyped builtins.ValueError", "lost: request never finished"} <= found
    truncated = [dataclasses.replace(o) for o in data.outcomes]
    truncated[2].response = dataclasses.replace(truncated[2].response, text="h [ok] says")
    assert "answer: incomplete text reported as success" in kinds(outcomes=truncated)

    with capture_logs() as logs:
        logging.getLogger("httpx2").debug("headers %s", {"authorization": CANARY_KEY})
        try:
            raise RuntimeError(f"bad key {CANARY_KEY}")
        except RuntimeError:
            logging.getLogger("openai").debug("retrying", exc_info=True)
        logging.getLogger("asyncio").error("Task exception was never retrieved")
    assert len(logs.leaks) == 2
    found = kinds(logs=logs)
    assert {"key leak: log lines", "asyncio: error logged (an unclosed stream or "
            "unretrieved task?)"} <= found

    extra = FaultyServer("h", HEALTHY)
    extra.hits = [*data.servers["h"].hits, Hit("/v1/chat/completions", False, "ok", True)]
    found = kinds(servers={"h": extra})
    assert {"attempts: server saw a different number of requests",
            "answers: a valid answer was discarded (slow first byte timed out?)"} <= found


# ---------------------------------------------------------------- the real path


def test_flaky_models_in_front_of_the_real_llama_server(llm_server: LLMServer,
                                                        fault_index: Path,
                                                        tmp_path: Path) -> None:
    """The same invariants with llama-server (SmolLM2-135M) as the healthy last model."""
    t0 = time.perf_counter()
    plan: list[tuple[Flavour, Mode, int]] = [("openai", "sync", 12), ("anthropic", "astream", 6)]
    for flavour, mode, n in plan:
        rep = run_mix(llama_mix(llm_server.base_url, flavour), mode, index=fault_index,
                      workdir=tmp_path, requests=n, concurrency=4, max_tokens=8, seed=11,
                      close_early_every=5)
        assert rep.ok, rep.describe()
        assert rep.lost == 0 and rep.trace_records == n
        assert rep.answered_by["llama"] > 0, "the real server answered nothing"
        if mode == "sync":
            assert rep.answered == n
    assert time.perf_counter() - t0 < 120


# ---------------------------------------------------------------- the benchmark


def test_benchmark_smoke_mode_runs_and_writes_results(tmp_path: Path) -> None:
    from benchmarks.reliability import main

    assert main(["--smoke", "--modes", "sync,astream", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "reliability.json").read_text())
    assert res["meta"]["machine"]["cores"] and "--smoke" in res["meta"]["command"]
    assert [(r["mix"], r["mode"]) for r in res["rows"]] == [
        (m, mode) for m in MIXES for mode in ("sync", "astream")]
    for row in res["rows"]:
        assert row["requests"] == 16 and row["answered"] + row["typed_errors"] + row["lost"] == 16
        assert {"trace_records", "lost_trace_records", "key_leaks", "attempts_p50",
                "failovers", "latency_p95_ms", "violations"} <= set(row)
    md = (tmp_path / "reliability.md").read_text()
    assert "| mix | mode | requests |" in md and "Command: `" in md
