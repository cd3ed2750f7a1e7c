"""The classifier floor (`router.classifier_min_score`): an undecided query scoring below it
is too far from every route to be worth a model call, so it goes straight to the default
route, saying so; above it the classifier is asked as before. Sync and async agree."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from semroute.errors import ConfigError
from semroute.index import build_index
from semroute.quality import classifier_floor_for
from semroute.routing import Router
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import load, write_set

UNDECIDED = {"margin_threshold": 1.5}  # no margin reaches it: the index decides nothing
NEAR = "write a python function to sort a list"  # close to the `code` route
FAR = "the mitochondria is the powerhouse of the cell"  # close to nothing
FLOOR = 0.35


@pytest.fixture(scope="module")
def shared_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classifier_floor")
    routes = write_set(root / "routes", {"m": {"provider": "openai", "model": "x"}}, ["m"])
    build_index(routes, root / "index")
    return root / "index"


def router_with(tmp_path: Path, index: Path, url: str, **router: Any) -> Router:
    models = {"clf": {"provider": "openai", "model": "c", "base_url": url},
              "m": {"provider": "openai", "model": "x"}}
    routes = write_set(tmp_path / "routes", models, ["m"], classifier_model="clf",
                       **{**UNDECIDED, **router})
    return load(routes, index)


def test_the_two_queries_fall_on_either_side_of_the_floor(tmp_path: Path, shared_index: Path,
                                                          refused_url: str) -> None:
    """The premise of the tests below, measured with the real encoder and index."""
    router = router_with(tmp_path, shared_index, f"{refused_url}/v1")
    near, far = (router.route(q, use_classifier=False) for q in (NEAR, FAR))
    assert near.method == far.method == "undecided"
    assert far.score < FLOOR < near.score, (far.score, near.score)


def test_below_the_floor_no_model_call_is_made(tmp_path: Path, shared_index: Path,
                                               fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    router = router_with(tmp_path, shared_index, ok.openai_base_url,
                         classifier_min_score=FLOOR)
    d = router.route(FAR)
    assert ok.hits == 0
    assert (d.route, d.method, d.classifier) == ("greet", "default", None)
    assert f"below the classifier floor {FLOOR:.3f}" in d.reason
    assert f"score {d.score:.3f}" in d.reason and "the default route 'greet'" in d.reason
    assert d.extra["classifier_floor"] == FLOOR
    assert json.loads(json.dumps(d.to_dict()))["extra"]["classifier_floor"] == FLOOR


def test_above_the_floor_the_classifier_is_asked(tmp_path: Path, shared_index: Path,
                                                 fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])  # answers every constrained request with an allowed label
    router = router_with(tmp_path, shared_index, ok.openai_base_url,
                         classifier_min_score=FLOOR)
    d = router.route(NEAR)
    assert ok.hits == 1
    assert d.method == "classifier" and d.classifier is not None
    assert "classifier floor" not in d.reason


def test_without_a_floor_every_undecided_query_is_sent(tmp_path: Path, shared_index: Path,
                                                       fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    router = router_with(tmp_path, shared_index, ok.openai_base_url)
    assert router.classifier_floor is None
    d = router.route(FAR)
    assert ok.hits == 1 and d.classifier is not None


def test_async_routing_applies_the_same_floor(tmp_path: Path, shared_index: Path,
                                              fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    router = router_with(tmp_path, shared_index, ok.openai_base_url,
                         classifier_min_score=FLOOR)

    async def both() -> tuple[Any, Any]:
        return await router.aroute(FAR), await router.aroute(NEAR)

    far, near = asyncio.run(both())
    assert (far.method, far.classifier) == ("default", None)
    assert far.reason == router.route(FAR).reason
    assert near.method == "classifier"
    assert ok.hits == 1


def test_without_a_default_route_a_query_below_the_floor_gets_no_route(
        tmp_path: Path, shared_index: Path, fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    router = router_with(tmp_path, shared_index, ok.openai_base_url,
                         classifier_min_score=FLOOR, default_route=None)
    d = router.route(FAR)
    assert (d.route, d.method) == (None, "default") and ok.hits == 0
    assert "no route (none set)" in d.reason


@pytest.mark.parametrize("bad", [1.5, -2.0, "high"])
def test_a_floor_outside_the_score_range_is_refused_naming_the_field(
        tmp_path: Path, shared_index: Path, refused_url: str, bad: Any) -> None:
    with pytest.raises(ConfigError) as err:
        router_with(tmp_path, shared_index, f"{refused_url}/v1", classifier_min_score=bad)
    assert "classifier_min_score" in str(err.value)
    assert "models.yaml" in str(err.value)


TRAFFIC = [NEAR, FAR, "hello there, how are you", "fix the bug in this javascript loop",
           "what is the capital of peru", "good evening", "recommend a novel to read",
           "compile this rust crate for me"]


def test_a_floor_picked_for_a_share_sends_at_most_that_share(
        tmp_path: Path, shared_index: Path, fault_server: MakeFaultServer) -> None:
    """Chosen on index-only decisions (no labels), then applied: 2 of 8 queries reach the
    model, the two best-scoring ones."""
    ok = fault_server([200])
    probe = router_with(tmp_path / "probe", shared_index, ok.openai_base_url)
    decisions = probe.route_batch(TRAFFIC, use_classifier=False)
    floor = classifier_floor_for(decisions, 0.25)
    assert floor is not None
    router = router_with(tmp_path / "floored", shared_index, ok.openai_base_url,
                         classifier_min_score=floor)
    routed = router.route_batch(TRAFFIC)
    asked = {d.query for d in routed if d.classifier is not None}
    best = sorted(decisions, key=lambda d: d.score, reverse=True)[:2]
    assert ok.hits == 2 and asked == {d.query for d in best}


def test_no_floor_is_needed_when_the_share_already_holds(tmp_path: Path, shared_index: Path,
                                                         refused_url: str) -> None:
    router = router_with(tmp_path, shared_index, f"{refused_url}/v1")
    decisions = router.route_batch(TRAFFIC, use_classifier=False)
    assert classifier_floor_for(decisions, 1.0) is None
    with pytest.raises(ValueError, match="max_share"):
        classifier_floor_for(decisions, 1.5)
