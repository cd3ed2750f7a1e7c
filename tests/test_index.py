"""Index builds are incremental and atomic; stale or corrupt indexes are refused, with the fix."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from semroute.config import load_routes
from semroute.errors import (
    ConfigError,
    CorruptIndexError,
    IndexNotFoundError,
    StaleIndexError,
)
from semroute.index import RouteIndex, build_index, current_build
from semroute.routing import Router
from tests.conftest import TINY_ROUTES, WriteRoutes


@pytest.fixture
def built(write_routes: WriteRoutes, tmp_path: Path) -> tuple[Path, Path]:
    routes = write_routes()
    out = tmp_path / "index"
    build_index(routes, out)
    return routes, out


def add_utterances(routes: Path, route: str, texts: list[str]) -> None:
    f = routes / f"{route}.yaml"
    spec = yaml.safe_load(f.read_text())
    spec["utterances"] += texts
    f.write_text(yaml.safe_dump(spec))


def test_build_writes_a_loadable_index(built: tuple[Path, Path]) -> None:
    routes, out = built
    idx = RouteIndex.load(out, load_routes(routes))
    assert idx.manifest.n_vectors == 10
    assert sorted(idx.route_names) == ["code", "greet"]
    assert idx.manifest.encoder.name == "all-MiniLM-L6-v2" and idx.manifest.encoder.dim == 384
    assert set(idx.manifest.routes) == {"code", "greet"}


def test_rebuild_embeds_only_new_utterances(built: tuple[Path, Path]) -> None:
    routes, out = built
    new = ["print hello world in rust", "write a bash loop over files", "make a react button",
           "generate a regex for emails", "code a fizzbuzz in go"]
    add_utterances(routes, "code", new)
    report = build_index(routes, out)
    assert report.embedded == 5
    assert report.reused == 10
    assert report.routes_changed == ["code"]
    assert "embedded 5" in report.summary() and "changed: code" in report.summary()


def test_unchanged_rebuild_embeds_nothing(built: tuple[Path, Path]) -> None:
    routes, out = built
    report = build_index(routes, out)
    assert report.embedded == 0 and report.reused == 10
    assert "no route changed" in report.summary()


def test_index_is_stale_after_utterances_change(built: tuple[Path, Path]) -> None:
    routes, out = built
    add_utterances(routes, "greet", ["howdy partner"])
    with pytest.raises(StaleIndexError, match=r"greet.*semroute build"):
        Router.load(routes, out)


def test_index_is_stale_after_a_route_is_added(built: tuple[Path, Path]) -> None:
    routes, out = built
    spec = {"name": "maths", "description": "Maths.", "model": "fast",
            "utterances": ["what is 2 plus 2", "solve x squared equals 9"]}
    (routes / "maths.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(StaleIndexError, match=r"routes added since the build: maths"):
        Router.load(routes, out)


def test_descriptions_and_models_can_change_without_a_rebuild(built: tuple[Path, Path]) -> None:
    routes, out = built
    f = routes / "code.yaml"
    spec = yaml.safe_load(f.read_text())
    spec["description"] = "Anything about writing programs."
    f.write_text(yaml.safe_dump(spec))
    Router.load(routes, out)


def test_index_built_with_another_encoder_is_stale(built: tuple[Path, Path]) -> None:
    routes, out = built
    build = current_build(out)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["encoder"]["weights_hash"] = "0" * 64
    (build / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StaleIndexError, match=r"built with encoder.*semroute build"):
        Router.load(routes, out)


def test_missing_index_says_how_to_build_it(write_routes: WriteRoutes, tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="semroute build"):
        Router.load(write_routes(), tmp_path / "nowhere")


@pytest.mark.parametrize("damage", ["truncate_vectors", "flip_byte", "delete_table",
                                    "garbage_manifest", "dangling_pointer", "pointer_outside"])
def test_corrupt_index_is_detected(built: tuple[Path, Path], damage: str) -> None:
    routes, out = built
    build = current_build(out)
    if damage == "truncate_vectors":
        p = build / "vectors.faiss"
        p.write_bytes(p.read_bytes()[:100])
    elif damage == "flip_byte":
        p = build / "vectors.faiss"
        data = bytearray(p.read_bytes())
        data[-10] ^= 0xFF
        p.write_bytes(bytes(data))
    elif damage == "delete_table":
        (build / "utterances.json").unlink()
    elif damage == "garbage_manifest":
        (build / "manifest.json").write_text("{not json")
    elif damage == "dangling_pointer":
        (out / "CURRENT").write_text("b-gone")
    else:  # CURRENT names a build id, never a path: not even to a whole build elsewhere
        shutil.copytree(build, out.parent / "elsewhere")
        (out / "CURRENT").write_text("../elsewhere")
    with pytest.raises(CorruptIndexError, match="semroute build"):
        Router.load(routes, out)


def test_failed_build_leaves_the_previous_index_in_place(built: tuple[Path, Path]) -> None:
    routes, out = built
    before = (out / "CURRENT").read_text()
    cat = yaml.safe_load((routes / "models.yaml").read_text())
    cat["router"]["encoder"] = str(routes / "no-such-model")
    (routes / "models.yaml").write_text(yaml.safe_dump(cat))
    add_utterances(routes, "code", ["one more"])
    with pytest.raises(Exception, match="no-such-model"):
        build_index(routes, out)
    assert (out / "CURRENT").read_text() == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".tmp")] == []


def test_old_builds_are_pruned(built: tuple[Path, Path]) -> None:
    routes, out = built
    for i in range(3):
        add_utterances(routes, "greet", [f"greeting number {i}"])
        build_index(routes, out)
    builds = [p for p in out.iterdir() if p.is_dir()]
    assert len(builds) == 2  # the live build and its predecessor


def test_bad_route_file_stops_the_build(write_routes: WriteRoutes, tmp_path: Path) -> None:
    routes = copy.deepcopy(TINY_ROUTES)
    routes["code"]["utterances"] = []
    with pytest.raises(ConfigError, match=r"code.yaml.*route 'code'.*field 'utterances'"):
        build_index(write_routes(routes), tmp_path / "index")
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_hnsw_index_routes_like_the_flat_one(write_routes: WriteRoutes, tmp_path: Path) -> None:
    import copy as _copy

    from tests.conftest import CATALOGUE

    queries = ["sort a list in python please", "good morning to you", "binary search code"]
    decisions = {}
    for kind in ("flat", "hnsw"):
        cat = _copy.deepcopy(CATALOGUE)
        cat["router"]["index_type"] = kind
        routes = write_routes(catalogue=cat, name=f"routes-{kind}")
        build_index(routes, tmp_path / kind)
        router = Router.load(routes, tmp_path / kind, classifier=False)
        assert router.index.manifest.index_type == kind
        decisions[kind] = [(d.route, d.candidates[0].route, round(d.score, 4))
                           for d in router.route_batch(queries, use_classifier=False)]
    assert decisions["hnsw"] == decisions["flat"]


def test_a_build_removes_only_what_it_made(write_routes: WriteRoutes, tmp_path: Path) -> None:
    """`--out DIR` may hold the user's own files: no build deletes or truncates any of them, even
    folders that start with "b" or ".tmp-", or that are named like a build without being one."""
    routes = write_routes()
    out = tmp_path / "index"
    out.mkdir()
    theirs = {"bin/tool": "#!/bin/sh", "backup/db.sql": "dump", "benchmarks/run.py": "pass",
              "b-notes/todo.md": "notes", ".tmp-mine/scratch": "wip", "notes.txt": "mine",
              "bfile": "a file starting with b", ".lock": "the user's own .lock file",
              "b20240101T000000-abcdef/data.csv": "named like a build, no manifest",
              "b20240101T000001-abcdef/manifest.json": '{"build_id": "b20240101T000001-abcdef"}',
              ".tmp-b20240101T000000-abcdef-x/keep": "not exactly a temp name",
              ".CURRENT.mine": "not a pointer"}
    for rel, text in theirs.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    for i in range(4):
        add_utterances(routes, "greet", [f"greeting number {i}"])
        build_index(routes, out)
    for rel, text in theirs.items():
        assert (out / rel).read_text() == text, rel
    ours = {p.name for p in out.iterdir()} - {Path(rel).parts[0] for rel in theirs}
    assert len(ours) == 3 and "CURRENT" in ours  # the live build and its predecessor
    RouteIndex.load(out, load_routes(routes))


def test_a_build_removes_what_killed_builds_left_behind(built: tuple[Path, Path]) -> None:
    """Temp folders, half-pruned builds and pointer temp files of killed builds are ours, by
    their exact names; the next build removes them."""
    routes, out = built
    live = (out / "CURRENT").read_text()
    leftovers = [".tmp-b20240101T000000-abcdef", ".old-b20240101T000000-abcdef"]
    for name in leftovers:
        (out / name / "encoder").mkdir(parents=True)
        (out / name / "vectors.faiss").write_bytes(b"half")
    (out / ".CURRENT.b20240101T000000-abcdef").write_text("b20240101T000000-abcdef")
    report = build_index(routes, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".lock", "CURRENT", live, report.build_id])
