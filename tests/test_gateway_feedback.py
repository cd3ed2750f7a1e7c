"""`POST /v1/feedback` on a real running gateway: the request id comes from the
`x-semroute-request-id` header of a real routed call (OpenAI SDK and curl), the feedback lands
in the outcomes store, unknown ids are a 404 and bad bodies a 400 in OpenAI's error shape, a
client key is required when keys are configured, and /metrics shows the shadow counters."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from semroute.config import GatewaySettings, hash_client_key
from semroute.gateway import create_app
from semroute.outcomes import OutcomeStore
from tests.dispatch_support import shared_index, write_set
from tests.support.gateway import RunningGateway, run_gateway
from tests.support.scripted_model import ScriptedModel, always

KEY = "sk-feedback-test-key"
QUERY = "write a python function to sort a list"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path]]:
    root = tmp_path_factory.mktemp("gateway-feedback")
    fast = ScriptedModel(answer="routed answer").start()
    frontier = ScriptedModel(answer="reference answer", judge=always("A")).start()
    index = shared_index(root)
    routes = write_set(root / "served", {"fast": fast.entry(), "frontier": frontier.entry()},
                       ["fast"], outcomes={"log_requests": True},
                       shadow={"rate": 1.0, "reference": "frontier"})
    settings = GatewaySettings.model_validate(
        {"keys": [{"name": "team", "sha256": hash_client_key(KEY)}]})
    gw = run_gateway(create_app(routes, index, settings=settings))
    yield gw, routes
    gw.stop()
    fast.stop()
    frontier.stop()


def routed_request_id(gw: RunningGateway) -> str:
    client = openai.OpenAI(base_url=gw.openai_base_url, api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="semroute", messages=[{"role": "user", "content": QUERY}], max_tokens=16)
    assert raw.parse().choices[0].message.content == "routed answer"
    return raw.headers["x-semroute-request-id"]


@dataclass
class Answer:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def post(gw: RunningGateway, body: object, key: str | None = KEY) -> Answer:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{gw.base_url}/v1/feedback", json.dumps(body).encode(),
                                 headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return Answer(res.status, res.read().decode())
    except urllib.error.HTTPError as err:
        return Answer(err.code, err.read().decode())


def test_feedback_on_a_routed_call_is_stored(served: tuple[RunningGateway, Path]) -> None:
    gw, routes = served
    rid = routed_request_id(gw)
    res = post(gw, {"request_id": rid, "score": True, "note": "spot on"})
    assert res.status_code == 200, res.text
    got = res.json()
    assert (got["object"], got["request_id"], got["score"], got["note"]) == (
        "feedback", rid, 1.0, "spot on")
    assert isinstance(got["id"], int)
    with OutcomeStore(routes / "outcomes.db") as store:
        (entry,) = store.feedback(request_id=rid)
        assert entry.score == 1.0
        assert [r.model for r in store.records(source="feedback")] == ["fast"]


def test_curl_gives_a_label(served: tuple[RunningGateway, Path], tmp_path: Path) -> None:
    gw, _ = served
    headers = tmp_path / "headers.txt"
    chat = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "-D", str(headers), "-H", f"x-api-key: {KEY}",
         "-H", "content-type: application/json", "-d", json.dumps(
             {"model": "semroute", "max_tokens": 8,
              "messages": [{"role": "user", "content": "hello, how are you"}]}),
         f"{gw.openai_base_url}/chat/completions"], capture_output=True, text=True, check=True)
    assert json.loads(chat.stdout)["choices"]
    rid = next(line.split(":", 1)[1].strip() for line in headers.read_text().splitlines()
               if line.lower().startswith("x-semroute-request-id:"))
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "-H", f"x-api-key: {KEY}", "-H",
         "content-type: application/json", "-d",
         json.dumps({"request_id": rid, "label": "code", "score": 0}),
         f"{gw.base_url}/v1/feedback"], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert (got["label"], got["score"]) == ("code", 0.0)


def test_an_unknown_id_is_a_404_in_openai_shape(served: tuple[RunningGateway, Path]) -> None:
    res = post(served[0], {"request_id": "f" * 32, "score": 1})
    assert res.status_code == 404
    err = res.json()["error"]
    assert err["code"] == "request_not_found" and err["param"] == "request_id"
    assert f"unknown request id '{'f' * 32}'" in err["message"]


@pytest.mark.parametrize(("body", "param", "text"), [
    ({"score": 1}, "request_id", "required field is missing"),
    ({"request_id": "x", "score": "great"}, "score", ""),
    ({"request_id": "x", "score": 1, "rating": 5}, "rating", "unknown field"),
    ("not an object", "(body)", ""),
])
def test_a_bad_body_is_a_400_naming_the_field(served: tuple[RunningGateway, Path],
                                              body: object, param: str, text: str) -> None:
    res = post(served[0], body)
    assert res.status_code == 400, res.text
    err = res.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert text in err["message"]


def test_a_label_naming_no_route_is_a_400(served: tuple[RunningGateway, Path]) -> None:
    gw, _ = served
    res = post(gw, {"request_id": routed_request_id(gw), "label": "billing"})
    assert res.status_code == 400
    err = res.json()["error"]
    assert err["param"] == "label" and "no route named 'billing'" in err["message"]
    assert "code, greet" in err["message"]


def test_a_client_key_is_required(served: tuple[RunningGateway, Path]) -> None:
    res = post(served[0], {"request_id": "x", "score": 1}, key=None)
    assert res.status_code == 401 and res.json()["error"]["type"] == "authentication_error"


def test_metrics_count_shadow_evaluations(served: tuple[RunningGateway, Path]) -> None:
    gw, routes = served
    routed_request_id(gw)
    with OutcomeStore(routes / "outcomes.db") as store:
        for _ in range(100):
            if store.shadow():
                break
            time.sleep(0.05)
        assert store.shadow() and store.shadow()[0].score == 0.5
    with urllib.request.urlopen(f"{gw.base_url}/metrics", timeout=30) as res:
        body = res.read().decode()
    assert 'semroute_shadow_total{outcome="sampled"}' in body
    assert 'semroute_requests_total{api="feedback",status="200"}' in body


def test_a_streamed_answer_takes_feedback_once_it_ended(
        served: tuple[RunningGateway, Path]) -> None:
    gw, routes = served
    client = openai.OpenAI(base_url=gw.openai_base_url, api_key=KEY, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
            model="semroute", messages=[{"role": "user", "content": QUERY}], max_tokens=16,
            stream=True) as res:
        rid = res.headers["x-semroute-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in res.parse() if c.choices)
    assert text
    for _ in range(100):  # the stream's end is settled just after its last byte
        got = post(gw, {"request_id": rid, "score": 0.5})
        if got.status_code == 200:
            break
        time.sleep(0.05)
    assert got.status_code == 200, got.text
    with OutcomeStore(routes / "outcomes.db") as store:
        logged = store.request(rid)
        assert logged is not None and logged.model == "fast"
