"""Two real `semroute serve` processes sharing one real redis-server behave as one gateway: a
model that fails through one replica is cooled on the other, one budget cap and one rate
limit hold across both, and a Redis restart during traffic fails no request (cooldowns,
stickiness and rate limits fall back in-process, budgets fail open as configured, each
outage is logged once per replica and counted) and shared state works again once it is back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from semroute.config import hash_client_key
from semroute.policies import estimate_input_tokens
from tests.dispatch_support import entry, shared_index, write_set
from tests.support.llm_server import FaultServer, free_port
from tests.support.redis_server import MISSING, REDIS_SERVER, RedisServer

REPO = Path(__file__).resolve().parent.parent
TEAM, LIMITED = "sk-team-replicas-0001", "sk-limited-replicas-0002"
HI = [{"role": "user", "content": "hi there"}]
PER_CALL = 6.0  # the fault server answers 3 + 3 tokens; `dear` costs $1 a token
MAX_TOKENS = 2
BOUND = estimate_input_tokens(HI, None) + MAX_TOKENS  # what a call to `dear` reserves
CAP = BOUND + PER_CALL + 1  # two calls to `dear` fit in the day, a third does not


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]


def post(url: str, body: dict[str, object], headers: dict[str, str]) -> Answer:
    req = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()})
    except urllib.error.HTTPError as e:
        e.read()
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()})


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def chat(self, key: str, model: str = "semroute", **headers: str) -> Answer:
        return post(f"{self.url}/v1/chat/completions",
                    {"model": model, "messages": HI, "max_tokens": MAX_TOKENS},
                    {"authorization": f"Bearer {key}", **headers})

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            return str(r.read().decode())


@dataclass
class Cluster:
    a: Replica
    b: Replica
    redis: RedisServer
    flaky: FaultServer
    steady: FaultServer


def start_replica(routes: Path, index: Path, config: Path, redis_url: str,
                  log: Path) -> Replica:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), SEMROUTE_REDIS_URL=redis_url)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "semroute.cli", "serve", "--routes",
                                 str(routes), "--index", str(index), "--port", str(port),
                                 "--config", str(config)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    return Replica(proc, port, log)


def wait_ready(r: Replica, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.proc.poll() is not None:
            raise RuntimeError(f"replica exited: {r.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{r.url}/readyz", timeout=2) as got:
                if got.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"replica not ready: {r.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Every route on [flaky (always 404: cooled at once), steady]; `dear` ($1 a token) for
    the budget; a daily cap per client key; key `limited` at 3 requests then 0.2/s; shared
    state on a private redis-server (given by $SEMROUTE_REDIS_URL, as in deploy/), budgets
    failing open, retried every 0.2 s while Redis is down."""
    if REDIS_SERVER is None:
        pytest.skip(MISSING)
    root = tmp_path_factory.mktemp("replicas")
    redis = RedisServer(root / "redis").start()
    index = shared_index(root)
    flaky, steady = FaultServer([404]).start(), FaultServer([200], reply_text="ok").start()
    dear = FaultServer([200], reply_text="ok").start()
    routes = write_set(root / "served", {
        "flaky": entry("openai", flaky.base_url, model="flaky-model", input_price=0,
                       output_price=0),
        "steady": entry("openai", steady.base_url, model="steady-model", input_price=0,
                        output_price=0),
        "dear": entry("openai", dear.base_url, model="dear-model", input_price=1e6,
                      output_price=1e6)}, ["flaky", "steady"],
        system_prompt=None,  # it would change the budget bound
        cooldown_seconds=300.0, stickiness={"mode": "same_model"},
        shared_state={"backend": "memory", "budgets_on_outage": "open", "retry_seconds": 0.2,
                      "timeout_seconds": 0.5},
        budgets={"store": str(root / "unused.db"), "caps": [
            {"name": "daily", "scope": "client_key", "period": "day", "limit_usd": CAP}]})
    config = root / "gateway.yaml"
    config.write_text(yaml.safe_dump({"keys": [
        {"name": "team", "sha256": hash_client_key(TEAM)},
        {"name": "limited", "sha256": hash_client_key(LIMITED),
         "rate_limit": {"requests_per_second": 0.2, "burst": 3}}]}))
    a = start_replica(routes, index, config, redis.url, root / "a.log")
    b = start_replica(routes, index, config, redis.url, root / "b.log")
    try:
        wait_ready(a)
        wait_ready(b)
        yield Cluster(a, b, redis, flaky, steady)
    finally:
        for r in (a, b):
            r.proc.terminate()
        for r in (a, b):
            r.proc.wait(timeout=60)
        redis.stop()
        for s in (flaky, steady, dear):
            s.stop()


def test_a_model_that_fails_through_one_replica_is_cooled_on_the_other(
        cluster: Cluster) -> None:
    first = cluster.a.chat(TEAM)
    assert first.status_code == 200 and first.headers["x-semroute-model"] == "steady"
    assert cluster.flaky.hits == 1, "flaky answered 404 through replica A: cooled"
    second = cluster.b.chat(TEAM)
    assert second.status_code == 200 and second.headers["x-semroute-model"] == "steady"
    assert cluster.flaky.hits == 1, "replica B knew flaky was cooling: it went last, unasked"
    assert 'semroute_models_cooling{model="flaky"} 1.0' in cluster.b.metrics()
    assert cluster.redis.cli("exists", "semroute:cooldown:flaky") == "1"


def test_one_budget_cap_holds_across_both_replicas(cluster: Cluster) -> None:
    statuses = [r.chat(TEAM, model="dear").status_code
                for r in (cluster.a, cluster.b, cluster.a, cluster.b)]
    assert statuses == [200, 200, 429, 429], "two calls fit the cap, whichever replica"
    spent = float(cluster.redis.cli("get", next(
        k for k in cluster.redis.cli("keys", "semroute:budget:*").split())))
    assert spent == pytest.approx(2 * PER_CALL)


def test_one_rate_limit_holds_across_both_replicas(cluster: Cluster) -> None:
    statuses = [r.chat(LIMITED, model="steady").status_code
                for r in (cluster.a, cluster.b, cluster.a, cluster.b)]
    assert statuses == [200, 200, 200, 429], "a burst of 3 shared, not 3 per replica"


def test_a_redis_restart_during_traffic_fails_no_request_and_sharing_resumes(
        cluster: Cluster) -> None:
    results: list[int] = []
    stop = threading.Event()

    def traffic(replica: Replica, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1  # a conversation per request and one kept: stickiness reads and writes
            conv = f"conv-{n}-{i % 3}"
            try:
                results.append(replica.chat(TEAM, **{"x-semroute-conversation-id": conv})
                               .status_code)
            except OSError:
                results.append(-1)

    threads = [threading.Thread(target=traffic, args=(r, n))
               for n, r in enumerate((cluster.a, cluster.b, cluster.a, cluster.b))]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = len(results)
    cluster.redis.stop()
    time.sleep(2.0)
    during = len(results) - before
    cluster.redis.start()  # the same port, empty: no persistence
    time.sleep(2.5)  # the circuits retry every 0.2 s (doubling) and find it back
    stop.set()
    for t in threads:
        t.join(timeout=60)
    print(f"\nredis restart: {len(results)} requests, {during} while Redis was down, "
          f"{sum(1 for s in results if s != 200)} failed")
    assert during > 10, f"traffic kept flowing during the outage ({during} requests)"
    assert results and set(results) == {200}, \
        f"{sum(1 for s in results if s != 200)} of {len(results)} requests failed"
    for r in (cluster.a, cluster.b):
        lines = [x for x in r.log.read_text().splitlines()
                 if "semroute: shared state" in x]
        assert len(lines) == 2, "one warning per outage per replica, one when it is back"
        assert "unreachable" in lines[0] and "is back" in lines[1]
        with urllib.request.urlopen(f"{r.url}/readyz", timeout=10) as got:
            assert json.loads(got.read())["shared_state"] == {"backend": "redis", "up": True}
        m = r.metrics()
        assert 'semroute_shared_state_up{backend="redis"} 1.0' in m
        assert "semroute_shared_state_outages_total 1.0" in m
        for kind in ("cooldowns", "stickiness", "budgets"):  # budgets: open, capped traffic
            assert f'semroute_shared_state_fallbacks_total{{kind="{kind}"}}' in m
    # Redis came back empty: flaky fails once more through A and is cooled for B again
    hits = cluster.flaky.hits
    assert cluster.redis.cli("exists", "semroute:cooldown:flaky") == "1", \
        "traffic after the restart cooled flaky in Redis again"
    assert cluster.b.chat(TEAM).headers["x-semroute-model"] == "steady"
    assert cluster.flaky.hits == hits
