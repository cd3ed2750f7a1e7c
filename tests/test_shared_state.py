"""`router.shared_state` puts cooldowns, stickiness and budget counters on one Redis (real
redis-server), and the outage policy of each kind holds in the library: cooldowns and
stickiness fall back in-process (a warning once per outage), budgets fail closed with a typed
error or open as configured, all recover when Redis returns; and a slow Redis never blocks
`adispatch`'s event loop (its calls are offloaded)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from semroute import BudgetStoreUnavailableError, ConfigError, StoreUnavailableError
from semroute.cli import main
from semroute.config import RateLimit, SharedStateSettings, load_routes
from semroute.dispatching import Dispatcher
from semroute.gateway.access import SharedRateLimiter
from semroute.gateway.failures import failure_of
from semroute.state import Circuit, FallbackStore, MemoryStore, RedisStore, SharedState
from tests.dispatch_support import entry, load, shared_index, write_set
from tests.support.llm_server import FaultServer
from tests.support.redis_server import MISSING, REDIS_SERVER, RedisServer

FREE = {"input_price": 0.0, "output_price": 0.0}


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server this module may stop and start again on the same port."""
    if REDIS_SERVER is None:
        pytest.skip(MISSING)
    server = RedisServer(tmp_path_factory.mktemp("redis-outage")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def running(redis: RedisServer) -> Iterator[None]:
    """Every test starts (and leaves) Redis running and empty."""
    if redis.cli("ping") != "PONG":
        redis.start()
    redis.flush()
    yield
    if redis.cli("ping") != "PONG":
        redis.start()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("shared-state"))


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FaultServer, FaultServer]]:
    flaky, steady = FaultServer([404]).start(), FaultServer([200], reply_text="ok").start()
    yield flaky, steady
    flaky.stop()
    steady.stop()


def replica(root: Path, index: Path, servers: tuple[FaultServer, FaultServer], url: str,
            **router: Any) -> Dispatcher:
    """A Dispatcher (its own state, as a replica has) over [flaky, steady], shared state on
    Redis at `url`; `dear` ($1 a token) for budgets."""
    flaky, steady = servers
    routes = write_set(root, {
        "flaky": entry("openai", flaky.base_url, model="flaky-model", **FREE),
        "steady": entry("openai", steady.base_url, model="steady-model", **FREE),
        "dear": entry("openai", steady.base_url, model="dear-model", input_price=1e6,
                      output_price=1e6)}, ["flaky", "steady"],
        shared_state={"backend": "redis", "url": url, "retry_seconds": 0.1,
                      "timeout_seconds": 0.3, **router.pop("shared", {})},
        stickiness={"mode": "same_model"}, **router)
    return Dispatcher(load(routes, index, classifier=False))


CAPS = {"caps": [{"name": "daily", "scope": "user", "period": "day", "limit_usd": 1000.0}]}


def test_a_bad_shared_state_setting_names_the_file_and_field(tmp_path: Path) -> None:
    routes = write_set(tmp_path / "r", {"m": {"provider": "openai", "model": "x"}}, ["m"],
                       shared_state={"backend": "redis", "url": "http://cache:6379"})
    with pytest.raises(ConfigError) as caught:
        load_routes(routes)
    text = str(caught.value)
    assert "models.yaml" in text and "router.shared_state.url" in text and "redis://" in text
    write_set(tmp_path / "r", {"m": {"provider": "openai", "model": "x"}}, ["m"],
              shared_state={"backend": "sqlite"})
    with pytest.raises(ConfigError, match=r"router\.shared_state\.backend"):
        load_routes(tmp_path / "r")


def test_two_dispatchers_on_one_redis_share_cooldowns_and_stickiness(
        tmp_path: Path, index: Path, servers: tuple[FaultServer, FaultServer],
        redis: RedisServer) -> None:
    flaky, _ = servers
    a = replica(tmp_path / "a", index, servers, redis.url)
    b = replica(tmp_path / "b", index, servers, redis.url)
    hits = flaky.hits
    assert a.dispatch("hi there", max_tokens=4, conversation_id="c1").model_key == "steady"
    assert flaky.hits == hits + 1 and b.cooldowns.is_cooling("flaky")
    assert b.dispatch("hi there", max_tokens=4).model_key == "steady"
    assert flaky.hits == hits + 1, "b tried flaky last: it never needed it"
    assert redis.cli("exists", "semroute:cooldown:flaky") == "1"
    assert redis.cli("keys", "semroute:sticky:conv:*") != "", "stickiness lives in Redis too"
    ttl_ms = int(redis.cli("pttl", "semroute:cooldown:flaky"))
    assert 0 < ttl_ms <= 60_000, "a cooldown lives router.cooldown_seconds (60 s here)"


def test_during_an_outage_cooldowns_and_stickiness_fall_back_with_one_warning_then_recover(
        tmp_path: Path, index: Path, servers: tuple[FaultServer, FaultServer],
        redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    d = replica(tmp_path / "a", index, servers, redis.url)
    redis.stop()
    with caplog.at_level(logging.WARNING, logger="semroute.state"):
        for i in range(5):
            r = d.dispatch("hi there", max_tokens=4, conversation_id=f"c{i % 2}")
            assert r.model_key == "steady"
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1, "one warning per outage, not one per call"
    status = d.state.shared.status()
    assert status["up"] is False and status["outages"] == 1
    assert status["fallbacks"]["cooldowns"] >= 5 and status["fallbacks"]["stickiness"] >= 5
    assert d.cooldowns.is_cooling("flaky"), "cooled in-process while Redis is down"

    redis.start()  # empty: no persistence
    time.sleep(0.3)  # past the circuit's retry time
    d.dispatch("hi there", max_tokens=4)
    assert d.state.shared.status()["up"] is True
    assert redis.cli("exists", "semroute:cooldown:flaky") == "1", "Redis is used again"


def test_budgets_fail_closed_with_a_typed_error_naming_the_store(
        tmp_path: Path, index: Path, servers: tuple[FaultServer, FaultServer],
        redis: RedisServer) -> None:
    d = replica(tmp_path / "a", index, servers, redis.url, budgets=CAPS)
    assert d.dispatch("hi there", max_tokens=4, user="ann").model_key == "steady"
    redis.stop()
    with pytest.raises(BudgetStoreUnavailableError) as caught:
        d.dispatch("hi there", max_tokens=4, user="ann")
    assert "budget store is unreachable" in str(caught.value)
    assert "budgets_on_outage" in str(caught.value) and "127.0.0.1" in str(caught.value)
    f = failure_of(caught.value)
    assert (f.status, f.retry_after) == (503, 1.0), "the gateway answers 503, retry soon"
    assert d.dispatch("hi there", max_tokens=4).model_key == "steady", \
        "a request no cap applies to is still served"
    redis.start()
    time.sleep(0.3)
    assert d.dispatch("hi there", max_tokens=4, user="ann").model_key == "steady"


def test_budgets_fail_open_count_in_process_while_redis_is_down(
        tmp_path: Path, index: Path, servers: tuple[FaultServer, FaultServer],
        redis: RedisServer) -> None:
    d = replica(tmp_path / "a", index, servers, redis.url, budgets=CAPS,
                shared={"budgets_on_outage": "open"})
    redis.stop()
    for _ in range(3):
        assert d.dispatch("hi", max_tokens=2, user="ann", model="dear").model_key == "dear"
    assert d.state.budgets.spent("daily", "ann") == pytest.approx(3 * 6.0, abs=0.01), \
        "counted in-process while Redis is down"
    assert d.state.shared.status()["fallbacks"]["budgets"] > 0


def test_the_circuit_waits_longer_while_the_store_stays_down() -> None:
    now = [0.0]
    circuit = Circuit("redis://test", retry_s=1.0, clock=lambda: now[0])
    down = RedisStore("redis://127.0.0.1:1/0", timeout_s=0.2)
    store = FallbackStore(down, MemoryStore(), circuit, "cooldowns")
    store.set("k", 1, 60)  # fails over to the local store and opens the circuit
    assert not circuit.up and not circuit.allow() and store.get("k") == 1
    now[0] = 1.0
    assert circuit.allow()
    store.get("k")  # tried, failed again: the wait doubles
    now[0] = 2.9
    assert not circuit.allow()
    now[0] = 3.0
    assert circuit.allow()
    no_fallback = FallbackStore(down, None, circuit, "budgets")
    now[0] = 3.5
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        no_fallback.get("k")  # tried: no local store to fall back to
    with pytest.raises(StoreUnavailableError, match=r"is down \(next try in 4\.0 s\)"):
        no_fallback.get("k")  # not tried: the wait doubled again


def test_memory_is_the_default_and_never_dials_redis() -> None:
    shared = SharedState.open(SharedStateSettings())
    assert not shared.shared and shared.store("cooldowns", MemoryStore()) is None


def test_a_paused_redis_never_blocks_the_event_loop_of_adispatch(
        tmp_path: Path, index: Path, servers: tuple[FaultServer, FaultServer],
        redis: RedisServer) -> None:
    """Redis stops answering for 0.4 s (CLIENT PAUSE) while adispatch runs: its store calls
    wait in worker threads, and a ticker on the same loop keeps ticking."""
    d = replica(tmp_path / "a", index, servers, redis.url,
                shared={"timeout_seconds": 2.0})

    async def run() -> tuple[float, float]:
        await d.adispatch("hi there", max_tokens=4, conversation_id="warm")  # clients, scripts
        lag = 0.0

        async def ticker() -> None:
            nonlocal lag
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                lag = max(lag, time.perf_counter() - t - 0.01)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        assert redis.cli("client", "pause", "400", "all") == "OK"
        t0 = time.perf_counter()
        r = await d.adispatch("hi there", max_tokens=4, conversation_id="c-async")
        took = time.perf_counter() - t0
        assert r.model_key == "steady"
        tick.cancel()
        return lag, took

    lag, took = asyncio.run(run())
    assert took > 0.3, "the dispatch really waited on the paused Redis"
    assert lag < 0.2, f"the event loop stalled {lag * 1e3:.0f} ms"


def test_the_shared_rate_limit_falls_back_to_each_replicas_buckets_and_returns(
        redis: RedisServer) -> None:
    limit = RateLimit(requests_per_second=0.1, burst=2)
    store, circuit = RedisStore(redis.url), Circuit("redis", retry_s=0.05)
    a, b = SharedRateLimiter(store, circuit), SharedRateLimiter(store, circuit)
    assert [a.take("team", limit), b.take("team", limit)] == [None, None]
    assert b.take("team", limit) is not None, "one burst of 2 across both"
    redis.stop()
    assert a.take("team", limit) is None, "Redis down: a's own in-process bucket"
    assert circuit.fallbacks["rate_limits"] == 1
    redis.start()  # empty: the shared bucket starts full again
    time.sleep(0.1)
    assert [a.take("team", limit), b.take("team", limit), a.take("team", limit)][2] \
        is not None and circuit.up


def test_serve_refuses_a_redis_url_that_is_not_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--redis", "http://cache:6379"]) == 2
    assert "--redis" in capsys.readouterr().err


def test_a_reservation_lost_with_a_restart_never_makes_a_counter_negative(
        tmp_path: Path, index: Path, servers: tuple[FaultServer, FaultServer],
        redis: RedisServer) -> None:
    """Redis restarts empty between a request's reservation and its settlement: the counter
    then holds what the request cost, not minus its unused reservation (which would give the
    cap extra room for the rest of the period)."""
    slow = FaultServer([200], reply_text="ok", delay_s=1.0).start()
    try:
        d = replica(tmp_path / "a", index, (servers[0], slow), redis.url, budgets=CAPS)
        call = threading.Thread(target=lambda: answers.append(
            d.dispatch("hi", max_tokens=2, user="ann", model="dear")))
        answers: list[Any] = []
        call.start()
        time.sleep(0.4)  # reserved, waiting on the model
        assert d.state.budgets.spent("daily", "ann") > 6.0
        redis.stop()
        redis.start()  # empty
        call.join(timeout=30)
    finally:
        slow.stop()
    assert answers[0].cost_usd == pytest.approx(6.0)
    assert d.state.budgets.spent("daily", "ann") == pytest.approx(6.0, abs=0.01)
