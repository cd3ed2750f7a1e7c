"""The fallback classifier answers only with allowed route names, never raises into the caller,
and records which path decided and what it cost."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from semroute.index import build_index
from semroute.routing import Router
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import load, write_set
from tests.support.llm_server import LLMServer

UNDECIDED = {"margin_threshold": 1.5}  # no margin reaches it: the index decides nothing
SERVER_DELAY = 20.0  # far beyond the classifier_timeout of the test that uses it
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


def test_failed_classifier_falls_to_the_default_route(tmp_path: Path, shared_index: Path,
                                                      refused_url: str) -> None:
    router = router_with(tmp_path, shared_index, {"provider": "openai", "model": "c",
                                                  "base_url": f"{refused_url}/v1"})
    d = router.route("good morning friend")
    assert (d.route, d.method) == ("greet", "default")
    assert d.classifier is not None and d.classifier.error is not None
    assert d.classifier.error.startswith("failed"), d.classifier.error
    assert "the default route 'greet'" in d.reason


def test_late_classifier_is_cut_off_at_the_classifier_timeout(
        tmp_path: Path, shared_index: Path, fault_server: MakeFaultServer) -> None:
    """The server would answer (with an allowed label) only after SERVER_DELAY s, so a
    default-route decision saying "timed out" shows that `classifier_timeout` cut the call
    short. No wall-clock bound close to the timeout: on a loaded machine the first call's SDK
    imports and client set-up alone took up to 1.5 s, against a bound of 1.9 s."""
    slow = fault_server([200], delay_s=SERVER_DELAY)
    router = router_with(tmp_path, shared_index, {"provider": "openai", "model": "c",
                                                  "base_url": slow.openai_base_url},
                         classifier_timeout=0.5)
    t0 = time.perf_counter()
    d = router.route("good morning friend")
    assert time.perf_counter() - t0 < SERVER_DELAY, "the classifier waited for the answer"
    assert (d.route, d.method) == ("greet", "default")
    assert d.classifier is not None and d.classifier.error is not None
    assert d.classifier.error.startswith("timed out"), d.classifier.error
    assert slow.hits == 1


def test_identical_queries_reuse_the_classifier_answer(tmp_path: Path, shared_index: Path,
                                                       fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])  # answers every constrained request with an allowed label
    router = router_with(tmp_path, shared_index, {"provider": "openai", "model": "c",
                                                  "base_url": ok.openai_base_url})
    first = router.route("tell me a joke")
    second = router.route("  tell me   a joke ")  # the same query once normalised
    assert first.method == "classifier" and first.classifier is not None
    assert not first.classifier.cached
    assert second.classifier is not None and second.classifier.cached
    assert (second.route, second.method) == (first.route, "classifier")
    assert ok.hits == 1


def test_index_only_routing_makes_no_model_call(tmp_path: Path, shared_index: Path,
                                                fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    router = router_with(tmp_path, shared_index, {"provider": "openai", "model": "c",
                                                  "base_url": ok.openai_base_url})
    d = router.route("write a python function to sort a list", use_classifier=False)
    assert d.method == "undecided" and d.route is None
    assert ok.hits == 0


def test_examples_shown_are_the_candidates_utterances_nearest_the_query(
        tmp_path: Path, shared_index: Path, fault_server: MakeFaultServer) -> None:
    ok = fault_server([200, 200])
    router = router_with(tmp_path, shared_index, {"provider": "openai", "model": "c",
                                                  "base_url": ok.openai_base_url})
    query = "make a REST API endpoint with flask"
    router.route(query)
    nearest = ok.bodies[0]["messages"][0]["content"]
    code_line = next(line for line in nearest.splitlines() if line.startswith("- code:"))
    assert '"create a REST endpoint in flask"' in code_line  # the 5th utterance, but nearest
    assert router.classifier is not None
    router.classifier.nearest = False
    router.classifier.clear_cache()
    router.route(query)
    first = ok.bodies[1]["messages"][0]["content"]
    assert "create a REST endpoint in flask" not in first  # the file's first three only
    assert '"write a python function to sort a list"' in first
