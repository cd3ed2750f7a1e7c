"""Route files are validated; every error names the file, the route and the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from semroute.config import RESERVED_ROUTE_NAMES, load_routes
from semroute.errors import ConfigError
from semroute.quality import OOS
from semroute.routing.classifier import NONE_LABEL
from tests.conftest import CATALOGUE, TINY_ROUTES, WriteRoutes


def problems_of(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_routes(directory)
    return info.value.problems


def routes_with(**changes: object) -> dict[str, dict[str, object]]:
    routes = copy.deepcopy(TINY_ROUTES)
    routes["code"].update(changes)
    return routes


def test_valid_route_set_loads(write_routes: WriteRoutes) -> None:
    rs = load_routes(write_routes())
    assert rs.names == ["code", "greet"]
    assert rs.route("code").models == ("fast",)
    assert rs.settings.default_route == "greet"


def test_unknown_key_names_file_route_and_field(write_routes: WriteRoutes) -> None:
    [msg] = problems_of(write_routes(routes_with(utterance=["typo key"])))
    assert "code.yaml" in msg and "route 'code'" in msg and "field 'utterance'" in msg
    assert "unknown key" in msg


def test_empty_utterance_list_is_rejected(write_routes: WriteRoutes) -> None:
    [msg] = problems_of(write_routes(routes_with(utterances=[])))
    assert "code.yaml" in msg and "route 'code'" in msg and "field 'utterances'" in msg


def test_blank_utterance_is_rejected_with_its_position(write_routes: WriteRoutes) -> None:
    [msg] = problems_of(write_routes(routes_with(utterances=["fine", "   "])))
    assert "field 'utterances'" in msg and "#2" in msg


def test_duplicate_route_names_name_both_files(write_routes: WriteRoutes) -> None:
    routes = copy.deepcopy(TINY_ROUTES)
    routes["code2"] = dict(routes["code"], utterances=["something else entirely"])
    [msg] = problems_of(write_routes(routes))
    assert "duplicate route name" in msg and "field 'name'" in msg
    assert "code.yaml" in msg and "code2.yaml" in msg


def test_same_utterance_in_two_routes_is_rejected(write_routes: WriteRoutes) -> None:
    utts = [*TINY_ROUTES["code"]["utterances"], "  Hi   THERE "]
    [msg] = problems_of(write_routes(routes_with(utterances=utts)))
    assert "field 'utterances'" in msg and "'hi there' is also in route" in msg
    assert "route 'code'" in msg and "route 'greet'" in msg


def test_model_key_missing_from_catalogue(write_routes: WriteRoutes) -> None:
    [msg] = problems_of(write_routes(routes_with(model=["fast", "huge"])))
    assert "code.yaml" in msg and "route 'code'" in msg and "field 'model'" in msg
    assert "'huge'" in msg and "known: fast" in msg


def test_unreadable_yaml_reports_the_line(write_routes: WriteRoutes) -> None:
    broken = "name: broken\ndescription: x\nmodel: fast\nutterances:\n  - ok\n  - [unclosed\n"
    [msg] = problems_of(write_routes(raw={"broken.yaml": broken}))
    assert "broken.yaml" in msg and "invalid YAML" in msg and "line 7" in msg


def test_all_problems_are_reported_at_once(write_routes: WriteRoutes) -> None:
    routes = copy.deepcopy(TINY_ROUTES)
    routes["code"]["model"] = "nope"
    routes["greet"]["colour"] = "blue"
    assert len(problems_of(write_routes(routes))) == 2


def test_catalogue_errors_name_the_field(write_routes: WriteRoutes) -> None:
    cat = copy.deepcopy(CATALOGUE)
    cat["profiles"]["local"]["fast"]["provider"] = "azure"
    cat["router"]["default_route"] = "missing"
    msgs = problems_of(write_routes(catalogue=cat))
    assert any("models.yaml" in m and "profiles.local.fast.provider" in m for m in msgs)


def test_default_route_must_exist(write_routes: WriteRoutes) -> None:
    cat = copy.deepcopy(CATALOGUE)
    cat["router"]["default_route"] = "missing"
    [msg] = problems_of(write_routes(catalogue=cat))
    assert "router.default_route" in msg and "'missing'" in msg


def test_missing_catalogue_is_an_error(write_routes: WriteRoutes) -> None:
    d = write_routes()
    (d / "models.yaml").unlink()
    [msg] = problems_of(d)
    assert "models.yaml" in msg and "missing" in msg


def test_shipped_example_set_is_valid_and_realistic() -> None:
    rs = load_routes(Path(__file__).resolve().parent.parent / "routes")
    assert len(rs.routes) >= 8
    for r in rs.routes:
        assert len(r.utterances) >= 25, f"{r.name} has only {len(r.utterances)} utterances"
    assert set(rs.profiles) >= {"cloud", "local"}
    for name, models in rs.profiles.items():
        assert {m.provider for m in models.values()} <= {"anthropic", "openai"}, name
    local = rs.profiles["local"]
    assert all((m.base_url or "").startswith("http://127.0.0.1") for m in local.values())


@pytest.mark.parametrize("name", ["none", "None", "oos", "OOS"])
def test_reserved_route_names_are_rejected(write_routes: WriteRoutes, name: str) -> None:
    routes = copy.deepcopy(TINY_ROUTES)
    routes["reserved"] = dict(routes["code"], name=name, utterances=["a different utterance"])
    [msg] = problems_of(write_routes(routes))
    assert "reserved.yaml" in msg and f"route '{name}'" in msg and "field 'name'" in msg
    assert "reserved" in msg
    assert ("classifier" in msg) if name.casefold() == "none" else ("out-of-scope" in msg)


def test_reserved_names_cover_the_labels_they_protect() -> None:
    assert NONE_LABEL.casefold() in RESERVED_ROUTE_NAMES
    assert OOS.casefold() in RESERVED_ROUTE_NAMES


@pytest.mark.parametrize(("provider", "structured", "allowed"), [
    ("anthropic", "grammar", "auto, tool"),
    ("anthropic", "json_schema", "auto, tool"),
    ("openai", "tool", "auto, json_schema, grammar"),
])
def test_structured_mode_must_suit_the_provider(write_routes: WriteRoutes, provider: str,
                                                structured: str, allowed: str) -> None:
    cat = copy.deepcopy(CATALOGUE)
    cat["profiles"]["local"]["fast"].update(provider=provider, structured=structured)
    [msg] = problems_of(write_routes(catalogue=cat))
    assert "models.yaml" in msg and "profile 'local'" in msg and "model 'fast'" in msg
    assert "field 'profiles.local.fast.structured'" in msg
    assert f"'{structured}'" in msg and f"use one of {allowed}" in msg


@pytest.mark.parametrize(("provider", "structured"), [
    ("openai", "auto"), ("openai", "json_schema"), ("openai", "grammar"),
    ("anthropic", "auto"), ("anthropic", "tool"),
])
def test_structured_modes_that_suit_the_provider_load(write_routes: WriteRoutes, provider: str,
                                                      structured: str) -> None:
    cat = copy.deepcopy(CATALOGUE)
    cat["profiles"]["local"]["fast"].update(provider=provider, structured=structured)
    assert load_routes(write_routes(catalogue=cat)).models["fast"].structured == structured
