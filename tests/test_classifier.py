"""The fallback classifier answers only with allowed route names, never raises into the caller,
and records which path decided and what it cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from semroute.index import build_index
from semroute.routing import Router
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import load, write_set
from tests.support.llm_server import LLMServer

UNDECIDED = {"margin_threshold": 1.5}  # no margin reaches it: the index decides nothing
QUERIES = ["write a python function to sort a list", "good morning friend",
           "what do you think about the weather", "tell me a joke"]


@pytest.fixture(scope="module")
def shared_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classifier")
    routes = write_set(root / "routes", {"m": {"provider": "openai", "model": "x"}}, ["m"])
    build_index(routes, root / "index")
    return root / "index"


def router_with(tmp_path: Path, index: Path, clf: dict[str, Any], **router: Any) -> Router:
    models = {"clf": clf, "m": {"provider": "openai", "model": "x"}}
    routes = write_set(tmp_path / "routes", models, ["m"], classifier_model="clf",
                       **{**UNDECIDED, **router})
    return load(routes, index)


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_classifier_answers_only_allowed_labels(tmp_path: Path, shared_index: Path,
                                                llm_server: LLMServer, flavour: str) -> None:
    url = llm_server.openai_base_url if flavour == "openai" else llm_server.base_url
    router = router_with(tmp_path, shared_index,
                         {"provider": flavour, "model": "local", "base_url": url, "timeout": 60})
    for q in QUERIES:
        d = router.route(q)
        assert d.method in {"classifier", "default"}, d.reason
        assert d.classifier is not None and d.classifier.model == "clf"
        assert d.classifier.answer in {"code", "greet", "none", None}
        if d.method == "classifier":
            assert d.route in {"code", "greet"}
            assert d.classifier.input_tokens > 0 and d.classifier.latency_ms > 0
        else:
            assert d.route == "greet" and "default route" in d.reason
        assert "classify" in d.timings_ms


def test_constrained_output_is_requested_on_openai_endpoints(tmp_path: Path,
                                                             shared_index: Path,
                                                             fault_server: MakeFaultServer
                                                             ) -> None:
    ok = fault_server([200])
    router = router_with(tmp_path, shared_index, {"provider": "openai", "model": "c",
                                                  "base_url": ok.openai_base_url})
    router.route("write a python function to sort a list")
    body = ok.bodies[0]
    allowed = {"code", "greet", "none"}
    schema_enum = body.get("response_format", {}).get("json_schema", {}).get("schema", {}) \
        .get("properties", {}).get("label", {}).get("enum")
    grammar = body.get("grammar", "")
    assert (schema_enum and set(schema_enum) == allowed) or all(x in grammar for x in allowed)
    assert "Examples:" in body["messages"][0]["content"]


def test_invalid_answer_falls_to_the_default_route(tmp_path: Path, shared_index: Path,
                                                   fault_server: MakeFaultServer) -> None:
    ok = fault_server([200], reply_text='{"label": "weather"}')  # not an allowed name
    router = router_with(tmp_path, shared_index, {"provider": "openai", "model": "c",
                                                  "base_url": ok.openai_base_url})
    d = router.route("write a python function to sort a list")
    assert (d.route, d.method) == ("greet", "default")
    assert d.classifier is not None and d.classifier.error is not None
    assert "invalid answer" in d.classifier.error


def test_failed_or_late_classifier_falls_to_the_default_route(
        tmp_path: Path, shared_index: Path, fault_server: MakeFaultServer,
        refused_url: str) -> None:
    slow = fault_server([200], delay_s=2.0)
    for url in (f"{refused_url}/v1", slow.openai_base_url):
        router = router_with(tmp_path, shared_index,
                             {"provider": "openai", "model": "c", "base_url": url},
                             classifier_timeout=0.5)
        d = router.route("good morning friend")
        assert (d.route, d.method) == ("greet", "default")
        assert d.classifier is not None and d.classifier.error
        assert d.classifier.latency_ms < 1900


def test_identical_queries_reuse_the_classifier_answer(tmp_path: Path, shared_index: Path,
                                                       llm_server: LLMServer) -> None:
    router = router_with(tmp_path, shared_index, {"provider": "openai", "model": "local",
                                                  "base_url": llm_server.openai_base_url})
    first = router.route("tell me a joke")
    second = router.route("tell me a joke")
    if first.method == "classifier":
        assert second.classifier is not None and second.classifier.cached
        assert second.route == first.route


def test_index_only_routing_makes_no_model_call(tmp_path: Path, shared_index: Path,
                                                fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    router = router_with(tmp_path, shared_index, {"provider": "openai", "model": "c",
                                                  "base_url": ok.openai_base_url})
    d = router.route("write a python function to sort a list", use_classifier=False)
    assert d.method == "undecided" and d.route is None
    assert ok.hits == 0
