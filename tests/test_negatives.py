"""Negatives (`negatives:` in a route file) and out-of-scope examples (`router.oos_examples`):
validated like utterances, embedded by `build` (manifest, staleness), lowering a route's
score when close, explained in the Decision, and checked by `lint`. Real encoder, real FAISS."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from semroute.cli import main
from semroute.config import load_routes
from semroute.errors import ConfigError, StaleIndexError
from semroute.index import RouteIndex, build_index
from semroute.quality import lint
from semroute.routing import Router
from tests.conftest import CATALOGUE, WriteRoutes
from tests.test_lint import DUP_SHIPPING, MISPLACED, PLANTED

ROUTES: dict[str, dict[str, Any]] = {
    "billing": copy.deepcopy(PLANTED["billing"]),
    "shipping": dict(PLANTED["shipping"], utterances=[
        u for u in PLANTED["shipping"]["utterances"] if u not in (MISPLACED, DUP_SHIPPING)]),
}
# the index sends this to shipping; the route set's author says a charge on a bill is billing
WRONG = "how much does shipping cost on my bill"
NEGATIVE = "what is the shipping charge on my bill"
# off topic (personal budgeting), yet the index routes it to billing
OFF_TOPIC = "how do I track my spending this month"
OOS_LINES = "# personal finance is out of scope\nhow do I keep track of my monthly spending\n" \
            "make me a budget for groceries\n"


def catalogue(**router: Any) -> dict[str, Any]:
    return dict(CATALOGUE, router={"default_route": None, **router})


def with_negatives(negatives: list[str], route: str = "shipping") -> dict[str, dict[str, Any]]:
    routes = copy.deepcopy(ROUTES)
    routes[route]["negatives"] = negatives
    return routes


def problems(folder: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_routes(folder)
    return err.value.problems


# ---------------------------------------------------------------- validation


def test_negatives_are_validated_like_utterances(write_routes: WriteRoutes) -> None:
    routes = with_negatives(["  ", "track my order", "Where is my  package", "x y"])
    found = problems(write_routes(routes, catalogue()))
    assert any("shipping.yaml: route 'shipping': field 'negatives'" in p and
               "negative #1 is empty" in p for p in found), found

    routes = with_negatives(["cancel my order", "Cancel  my order", "Where is my package"])
    found = problems(write_routes(routes, catalogue(), name="again"))
    assert any("field 'negatives[2]': 'Cancel my order' appears twice" in p for p in found)
    assert any("field 'negatives[3]': 'Where is my package' is also an utterance of this "
               "route" in p and "route 'shipping'" in p for p in found), found


def test_negatives_are_normalised_and_need_not_be_unique_across_routes(
        write_routes: WriteRoutes) -> None:
    routes = with_negatives(["  cancel   my order "])
    routes["billing"]["negatives"] = ["cancel my order", "where is my package"]
    rs = load_routes(write_routes(routes, catalogue()))
    assert rs.route("shipping").negatives == ("cancel my order",)
    assert rs.route("billing").negatives == ("cancel my order", "where is my package")


def test_the_out_of_scope_file_is_validated(write_routes: WriteRoutes) -> None:
    folder = write_routes(ROUTES, catalogue(oos_examples="oos.txt"), raw={
        "oos.txt": "tell me a joke\n\n# comment\nTell me  a joke\ntrack my order\n"})
    found = problems(folder)
    assert any("oos.txt: line 4: field 'router.oos_examples': 'Tell me a joke' repeats "
               "line 1" in p for p in found), found
    assert any("oos.txt: line 5" in p and "utterance of route 'shipping'" in p for p in found)

    folder = write_routes(ROUTES, catalogue(oos_examples="missing.txt"), name="b")
    assert any("missing.txt" in p and "router.oos_examples" in p for p in problems(folder))
    folder = write_routes(ROUTES, catalogue(oos_examples="oos.yaml"), name="c",
                          raw={"oos.yaml": "- tell me a joke\n- ''\n"})
    assert any("oos.yaml: item 2" in p and "empty" in p for p in problems(folder))
    folder = write_routes(ROUTES, catalogue(oos_examples="oos.yaml"), name="d",
                          raw={"oos.yaml": "examples: [a]\n"})
    assert any("expected a YAML list" in p for p in problems(folder))


def test_a_yaml_out_of_scope_file_in_the_routes_folder_is_not_a_route(
        write_routes: WriteRoutes) -> None:
    folder = write_routes(ROUTES, catalogue(oos_examples="oos.yaml"),
                          raw={"oos.yaml": "- tell me a joke\n- what's the capital of peru\n"})
    rs = load_routes(folder)
    assert rs.names == ["billing", "shipping"]
    assert rs.oos_examples == ("tell me a joke", "what's the capital of peru")


# ---------------------------------------------------------------- build and staleness


def test_build_embeds_negatives_and_oos_examples_and_staleness_covers_them(
        write_routes: WriteRoutes, tmp_path: Path) -> None:
    folder = write_routes(ROUTES, catalogue())
    index_dir = tmp_path / "index"
    build_index(folder, index_dir)
    before = RouteIndex.load(index_dir, load_routes(folder))
    assert before.contrast is None and before.manifest.n_contrast == 0

    write_routes(with_negatives([NEGATIVE]), catalogue(oos_examples="oos.txt"),
                 raw={"oos.txt": OOS_LINES})
    with pytest.raises(StaleIndexError) as err:
        RouteIndex.load(index_dir, load_routes(folder))
    assert "negatives changed: shipping" in str(err.value)
    assert "out-of-scope examples" in str(err.value)

    report = build_index(folder, index_dir)
    assert report.embedded == 3 and report.n_contrast == 3  # the utterances were reused
    assert report.routes_changed == ["shipping"]
    idx = RouteIndex.load(index_dir, load_routes(folder))
    m = idx.manifest
    assert m.n_contrast == 3 and m.routes["shipping"].negatives == 1
    assert m.routes["billing"].negatives == 0
    assert m.oos is not None and m.oos.file == "oos.txt" and m.oos.examples == 2
    assert {"contrast.json", "contrast.npy"} <= set(m.files)
    assert idx.contrast is not None and idx.contrast.texts == [
        NEGATIVE, "how do I keep track of my monthly spending", "make me a budget for groceries"]
    assert idx.contrast.owners.tolist() == [idx.route_names.index("shipping"), -1, -1]
    assert json.loads((idx.build_dir / "contrast.json").read_text())["rows"][0] == [
        idx.route_names.index("shipping"), NEGATIVE]

    (folder / "oos.txt").write_text(OOS_LINES + "what is the capital of peru\n")
    with pytest.raises(StaleIndexError, match="out-of-scope examples"):
        RouteIndex.load(index_dir, load_routes(folder))


def test_a_route_without_negatives_keeps_its_hash(write_routes: WriteRoutes) -> None:
    plain = load_routes(write_routes(ROUTES, catalogue())).route("billing")
    import hashlib
    expected = hashlib.sha256(json.dumps(["billing", list(plain.utterances)]).encode())
    assert plain.content_hash() == expected.hexdigest()  # builds before negatives stay fresh


# ---------------------------------------------------------------- the decision


def test_a_negative_turns_a_wrong_index_decision_around_and_is_explained(
        write_routes: WriteRoutes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_routes(ROUTES, catalogue())
    build_index(folder, tmp_path / "index")
    before = Router.load(folder, tmp_path / "index", classifier=False).route(WRONG)
    assert (before.route, before.method, before.negatives) == ("shipping", "index", ())

    write_routes(with_negatives([NEGATIVE]), catalogue())
    build_index(folder, tmp_path / "index")
    after = Router.load(folder, tmp_path / "index", classifier=False).route(WRONG)
    assert after.route != "shipping"
    (hit,) = after.negatives
    assert (hit.kind, hit.route, hit.text) == ("negative", "shipping", NEGATIVE)
    assert hit.similarity > hit.nearest - 0.05 and hit.penalty > 0
    shipping = next(c for c in after.candidates if c.route == "shipping")
    before_score = next(c.score for c in before.candidates if c.route == "shipping")
    assert shipping.score == pytest.approx(before_score - hit.penalty, abs=1e-5)
    assert f"negative '{NEGATIVE}'" in after.reason and "'shipping' lowered by" in after.reason
    assert after.to_dict()["negatives"][0]["route"] == "shipping"
    # queries the route should take are untouched
    ok = Router.load(folder, tmp_path / "index", classifier=False).route("track my parcel")
    assert (ok.route, ok.negatives) == ("shipping", ())
    capsys.readouterr()
    assert main(["route", "--routes", str(folder), "--index", str(tmp_path / "index"),
                 WRONG]) == 0
    assert f"neg     shipping lowered {hit.penalty:.3f} by '{NEGATIVE}'" in capsys.readouterr().out


def test_oos_examples_reject_an_off_topic_query_that_was_routed(
        write_routes: WriteRoutes, tmp_path: Path) -> None:
    folder = write_routes(ROUTES, catalogue())
    build_index(folder, tmp_path / "index")
    before = Router.load(folder, tmp_path / "index", classifier=False).route(OFF_TOPIC)
    assert (before.route, before.method) == ("billing", "index")

    write_routes(ROUTES, catalogue(oos_examples="oos.txt"), raw={"oos.txt": OOS_LINES})
    build_index(folder, tmp_path / "index")
    router = Router.load(folder, tmp_path / "index", classifier=False)
    after = router.route(OFF_TOPIC)
    assert after.route is None  # the index is undecided, and no default route is set
    assert after.negatives[0].kind == "oos"
    assert after.negatives[0].text == "how do I keep track of my monthly spending"
    assert "out-of-scope example 'how do I keep track of my monthly spending'" in after.reason
    assert router.route("I need a copy of my invoice from march").route == "billing"
    chat = router.route([{"role": "user", "content": OFF_TOPIC}])  # a chat's scores too
    assert chat.route is None and chat.score == pytest.approx(after.score, abs=1e-5)


def test_contrast_weight_zero_turns_the_rule_off(write_routes: WriteRoutes,
                                                 tmp_path: Path) -> None:
    folder = write_routes(ROUTES, catalogue(oos_examples="oos.txt", contrast_weight=0),
                          raw={"oos.txt": OOS_LINES})
    build_index(folder, tmp_path / "index")
    d = Router.load(folder, tmp_path / "index", classifier=False).route(OFF_TOPIC)
    assert (d.route, d.negatives) == ("billing", ())


# ---------------------------------------------------------------- lint


def test_lint_flags_confusing_negatives_utterances_near_them_and_oos_inside_a_route(
        write_routes: WriteRoutes, tmp_path: Path) -> None:
    routes = with_negatives(["where is my package right now"])  # only like shipping itself
    routes["billing"]["negatives"] = ["what is the shipping charge to canada"]  # has a home
    folder = write_routes(routes, catalogue(oos_examples="oos.txt"),
                          raw={"oos.txt": OOS_LINES + "track my parcel please\n"})
    build_index(folder, tmp_path / "index")
    rs = load_routes(folder)
    found = lint(rs, RouteIndex.load(tmp_path / "index", rs))
    text = "\n".join(f.format() for f in found)
    confusing = [f for f in found if "confusing negative" in f.message]
    assert [(f.route, f.utterance) for f in confusing] == [
        ("shipping", "where is my package right now")], text
    assert confusing[0].file.endswith("shipping.yaml") and "'where is my package'" in \
        confusing[0].message
    near = [f for f in found if "near this route's negative" in f.message]
    assert ("shipping", "where is my package") in [(f.route, f.utterance) for f in near], text
    inside = [f for f in found if "sits inside route" in f.message]
    assert [(f.route, f.utterance) for f in inside] == [("shipping", "track my parcel please")]
    assert inside[0].file.endswith("oos.txt")
    assert not any(f.utterance == "make me a budget for groceries" for f in found)
