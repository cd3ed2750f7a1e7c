"""Budgets and agent steps through the gateway: `x-semroute-max-cost-usd` caps one request,
client keys' period caps count per key name, a refusal is a 429 in each API's format (with
Retry-After until the cap resets) and counted in /metrics, and `x-semroute-step` serves an
agent step instead of routing."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import anthropic
import openai
import pytest
import yaml

from semroute.config import hash_client_key, load_gateway_config
from semroute.gateway import create_app
from semroute.policies import estimate_input_tokens
from tests.dispatch_support import entry, shared_index, write_set
from tests.support.gateway import RunningGateway, run_gateway
from tests.support.llm_server import FaultServer

KEY = "sk-team-budget-0001"
HI = [{"role": "user", "content": "hi there"}]
PER_CALL = 6.0  # the fault server answers 3 + 3 tokens; $1M per million = $1 a token
MAX_TOKENS = 2
BOUND = estimate_input_tokens(HI, "Answer in one short sentence.") + MAX_TOKENS  # $ reserved
CAP = BOUND + PER_CALL + 1  # the first call's reservation fits, the second's after it; no third


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """Every route on `dear` ($1 a token) answered by a loopback server; a daily cap for the
    client key 'team' that lets exactly two calls through; an agent step `planning` on
    `cheap` (free)."""
    root = tmp_path_factory.mktemp("gateway-budgets")
    index = shared_index(root)
    server = FaultServer([200], reply_text="ok").start()
    price = {"input_price": 1e6, "output_price": 1e6}
    routes = write_set(root / "served", {
        "dear": entry("openai", server.base_url, model="dear-model", **price),
        "cheap": entry("openai", server.base_url, model="cheap-model")}, ["dear"],
        budgets={"store": str(root / "state.db"), "caps": [
            {"name": "team-daily", "scope": "client_key", "period": "day", "limit_usd": CAP,
             "policy": "refuse"}]})
    cat = yaml.safe_load((routes / "models.yaml").read_text())
    cat["steps"] = {"planning": "cheap"}
    (routes / "models.yaml").write_text(yaml.safe_dump(cat))
    config = root / "gateway.yaml"
    config.write_text(yaml.safe_dump({"keys": [{"name": "team",
                                                "sha256": hash_client_key(KEY)}]}))
    gw = run_gateway(create_app(routes, index, settings=load_gateway_config(config)))
    yield gw
    gw.stop()
    server.stop()


def oai(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.openai_base_url, api_key=KEY, max_retries=0)


def test_a_request_cap_below_the_routes_model_is_served_by_the_best_model_that_fits(
        gateway: RunningGateway) -> None:
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model="semroute", messages=HI, max_tokens=4,  # type: ignore[arg-type]
        extra_headers={"x-semroute-max-cost-usd": "0.5"})
    assert raw.headers["x-semroute-model"] == "cheap"  # `dear` costs dollars a call


def test_a_bad_request_cap_is_a_400_naming_the_header(gateway: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai(gateway).chat.completions.create(
            model="semroute", messages=HI, max_tokens=4,  # type: ignore[arg-type]
            extra_headers={"x-semroute-max-cost-usd": "lots"})
    assert "x-semroute-max-cost-usd" in str(caught.value)


def test_an_agent_step_is_served_by_its_model_and_an_unknown_step_is_a_400(
        gateway: RunningGateway) -> None:
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model="semroute", messages=HI, max_tokens=4,  # type: ignore[arg-type]
        extra_headers={"x-semroute-step": "planning"})
    assert (raw.headers["x-semroute-method"], raw.headers["x-semroute-route"],
            raw.headers["x-semroute-model"]) == ("step", "step:planning", "cheap")
    with pytest.raises(openai.BadRequestError) as caught:
        oai(gateway).chat.completions.create(
            model="semroute", messages=HI, max_tokens=4,  # type: ignore[arg-type]
            extra_headers={"x-semroute-step": "dreaming"})
    assert "dreaming" in str(caught.value) and "planning" in str(caught.value)


def test_the_client_keys_daily_cap_refuses_once_spent_in_both_formats_and_is_counted(
        gateway: RunningGateway) -> None:
    answered = 0
    for _ in range(4):  # each call reserves its bound, then costs $6: two fit under CAP
        try:
            oai(gateway).chat.completions.create(
                model="semroute", messages=HI, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
            answered += 1
        except openai.RateLimitError as exc:
            assert "team-daily" in str(exc) and exc.response.headers.get("retry-after")
    assert answered == 2
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(model="semroute", max_tokens=MAX_TOKENS,
                               messages=HI)  # type: ignore[arg-type]
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with urllib.request.urlopen(f"{gateway.base_url}/metrics") as page:
        metrics = page.read().decode()
    line = next(x for x in metrics.splitlines()
                if x.startswith('semroute_budget_refusals_total{client="team"}'))
    assert float(line.split()[-1]) >= 3
