"""Operating the gateway: client keys (hashed at rest) and rate limits, body and message-count
limits, every model failing (502, or 503 when all were overloaded) with the attempts listed,
/healthz, /readyz and a /metrics scrape after real traffic."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
import yaml

from semroute.config import GatewaySettings, hash_client_key, load_gateway_config
from semroute.errors import ConfigError
from semroute.gateway import create_app
from tests.dispatch_support import entry, live_openai, shared_index, write_set
from tests.support.gateway import RunningGateway, run_gateway
from tests.support.llm_server import LLMServer

OPEN_KEY, LIMITED_KEY = "sk-team-open-1234", "sk-team-limited-5678"
HI = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, llm_server: LLMServer
            ) -> Iterator[RunningGateway]:
    """Two client keys (one limited to a burst of 2 then 0.2 requests/s), small limits,
    routes on the live model, and two loopback fault servers reachable by name."""
    from tests.support.llm_server import FaultServer

    root = tmp_path_factory.mktemp("gateway-ops")
    index = shared_index(root)
    failing = FaultServer([500]).start()
    busy = FaultServer([429]).start()
    routes = write_set(root / "served", {
        "fast": live_openai(llm_server),
        "failing": entry("openai", failing.base_url),
        "busy": entry("anthropic", busy.base_url)}, ["fast"])
    config = root / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "keys": [{"name": "open", "sha256": hash_client_key(OPEN_KEY)},
                 {"name": "limited", "sha256": hash_client_key(LIMITED_KEY),
                  "rate_limit": {"requests_per_second": 0.2, "burst": 2}}],
        "limits": {"max_body_bytes": 4096, "max_messages": 4, "max_tokens_cap": 64},
        "cors_origins": ["https://app.example"]}))
    gw = run_gateway(create_app(routes, index, settings=load_gateway_config(config)))
    yield gw
    gw.stop()
    failing.stop()
    busy.stop()


def oai(gw: RunningGateway, key: str = OPEN_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.openai_base_url, api_key=key, max_retries=0)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_client_keys_are_checked_by_hash(gateway: RunningGateway) -> None:
    assert oai(gateway).chat.completions.create(model="semroute", messages=HI, max_tokens=4)
    with pytest.raises(openai.AuthenticationError) as caught:
        oai(gateway, "sk-wrong").chat.completions.create(model="semroute", messages=HI)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "authentication_error"
    assert "sk-wrong" not in str(caught.value.body)
    ant = anthropic.Anthropic(base_url=gateway.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught_a:
        ant.messages.create(model="semroute", max_tokens=4, messages=HI)
    assert isinstance(caught_a.value.body, dict)
    assert caught_a.value.body["error"]["type"] == "authentication_error"
    ok = anthropic.Anthropic(base_url=gateway.base_url, api_key=OPEN_KEY, max_retries=0)
    assert ok.messages.create(model="semroute", max_tokens=4, messages=HI).content


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(gateway: RunningGateway) -> None:
    c = oai(gateway, LIMITED_KEY)
    for _ in range(2):  # the burst
        c.chat.completions.create(model="semroute", messages=HI, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as caught:
        c.chat.completions.create(model="semroute", messages=HI, max_tokens=2)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert isinstance(caught.value.body, dict) and "limited" in caught.value.body["message"]
    # another key is not affected
    assert oai(gateway).chat.completions.create(model="semroute", messages=HI, max_tokens=2)


def test_bodies_and_message_lists_over_the_limits_get_413(gateway: RunningGateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        oai(gateway).chat.completions.create(
            model="semroute", max_tokens=4,
            messages=[{"role": "user", "content": "x" * 5000}])
    assert caught.value.status_code == 413
    assert "max_body_bytes" in caught.value.message
    with pytest.raises(openai.APIStatusError) as caught:
        oai(gateway).chat.completions.create(model="semroute", max_tokens=4, messages=HI * 5)
    assert caught.value.status_code == 413
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "messages"


def test_max_tokens_over_the_cap_is_a_400_naming_the_field(gateway: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai(gateway).chat.completions.create(model="semroute", messages=HI, max_tokens=65)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "max_tokens"
    assert "cap of 64" in caught.value.body["message"]


def test_every_model_failing_is_a_502_listing_the_attempts(gateway: RunningGateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        oai(gateway).chat.completions.create(model="failing", messages=HI, max_tokens=4)
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "all_models_failed"
    attempts = body["attempts"]
    assert [a["model_key"] for a in attempts] == ["failing", "failing"]  # retried once
    assert all(a["status"] == 500 and not a["ok"] for a in attempts)
    assert caught.value.response.headers["x-semroute-request-id"] == body["request_id"]


def test_every_model_overloaded_is_a_503_in_anthropic_format(gateway: RunningGateway) -> None:
    c = anthropic.Anthropic(base_url=gateway.base_url, api_key=OPEN_KEY, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        c.messages.create(model="busy", max_tokens=4, messages=HI)
    assert caught.value.status_code == 503
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "overloaded_error"
    assert {a["status"] for a in body["error"]["attempts"]} == {429}


def test_health_and_readiness(gateway: RunningGateway) -> None:
    assert get(f"{gateway.base_url}/healthz") == (200, '{"status":"ok"}')
    status, text = get(f"{gateway.base_url}/readyz")
    ready = json.loads(text)
    assert status == 200 and ready["status"] == "ready" and ready["routes"] == 2
    assert ready["build_id"].startswith("b")


def test_metrics_scrape_after_traffic(gateway: RunningGateway) -> None:
    oai(gateway).chat.completions.create(
        model="semroute", max_tokens=4,
        messages=[{"role": "user", "content": "write a python function to sort a list"}])
    with pytest.raises(openai.APIStatusError):
        oai(gateway).chat.completions.create(model="failing", messages=HI, max_tokens=4)
    status, text = get(f"{gateway.base_url}/metrics")
    assert status == 200
    samples = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
               for ln in text.splitlines() if ln and not ln.startswith("#")}
    assert samples['semroute_decisions_total{method="index",route="code"}'] >= 1
    assert samples['semroute_tokens_total{direction="output",model="fast"}'] > 0
    assert 'semroute_cost_usd_total{model="fast"}' in samples
    assert samples["semroute_decision_seconds_count"] >= 1
    assert samples['semroute_upstream_seconds_count{model="fast"}'] >= 1
    assert samples['semroute_upstream_errors_total{model="failing",scope="retry"}'] >= 2
    assert samples['semroute_requests_total{api="openai",status="502"}'] >= 1
    assert samples['semroute_models_cooling{model="failing"}'] == 1.0
    assert samples['semroute_models_cooling{model="fast"}'] == 0.0
    assert 'semroute_build_info{build_id="' in text
    assert "# TYPE semroute_budget_refusals_total counter" in text
    assert "# TYPE semroute_failovers_total counter" in text
    assert "# TYPE semroute_classifier_calls_total counter" in text


def preflight(url: str, origin: str) -> dict[str, str]:
    req = urllib.request.Request(url, method="OPTIONS", headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return {k.lower(): v for k, v in e.headers.items()}


def test_cors_allows_only_the_configured_origins(gateway: RunningGateway) -> None:
    url = f"{gateway.openai_base_url}/chat/completions"
    allowed = preflight(url, "https://app.example")
    assert allowed["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in preflight(url, "https://evil.example")


def test_readyz_is_503_when_no_model_of_a_route_has_its_key(
        tmp_path: Path, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMROUTE_TEST_UNSET_KEY", raising=False)
    index = shared_index(tmp_path)
    routes = write_set(tmp_path / "keyless", {"cloud": {
        "provider": "openai", "model": "gpt-x", "api_key_env": "SEMROUTE_TEST_UNSET_KEY"}},
        ["cloud"])
    gw = run_gateway(create_app(routes, index))
    try:
        status, text = get(f"{gw.base_url}/readyz")
        assert status == 503
        problems = json.loads(text)["problems"]
        assert any("route 'code'" in p and "API key" in p for p in problems)
        # CORS is off unless origins are configured
        cors = preflight(f"{gw.openai_base_url}/chat/completions", "https://app.example")
        assert "access-control-allow-origin" not in cors
    finally:
        gw.stop()


def test_gateway_settings_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text(yaml.safe_dump({"keys": [{"name": "a", "sha256": "sk-plain-key"}],
                                   "limits": {"max_mesages": 3}}))
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(bad)
    text = str(caught.value)
    assert f"{bad}: field 'keys[1].sha256'" in text and "never the key itself" in text
    assert "field 'limits.max_mesages': unknown key" in text
    assert load_gateway_config(None) == GatewaySettings()


