"""The lexical signal for rare words: built with the index and saved in the build folder,
loaded and checked with it, and blended into route scores when `router.lexical_weight` is
set, so a rare entity word the encoder blurs can decide between look-alike routes."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.errors import CorruptIndexError, StaleIndexError
from semroute.index import RouteIndex, build_index, build_lexical, current_build
from semroute.routing import Router
from tests.conftest import CATALOGUE

LOOK_ALIKE: dict[str, dict[str, Any]] = {
    f"error_{code.lower()}": {
        "name": f"error_{code.lower()}", "description": f"The printer's error {code}.",
        "model": "fast",
        "utterances": [f"printer shows error {code}", f"{code} on the display",
                       f"how do I fix {code}", f"{code} keeps coming back"]}
    for code in ("E42", "E17")}
QUERY = "got E42 again on my printer today"


def write_set(folder: Path, lexical_weight: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, spec in LOOK_ALIKE.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    cat = copy.deepcopy(CATALOGUE)
    cat["router"].update(default_route=None, backend="torch", score_threshold=0.0,
                         margin_threshold=0.18, lexical_weight=lexical_weight)
    (folder / "models.yaml").write_text(yaml.safe_dump(cat))
    return folder


def test_scores_favour_the_route_that_owns_a_rare_word() -> None:
    lex = build_lexical(["reset my zorblax password", "reset my quintrel password",
                         "cancel my quintrel plan"], [0, 1, 1], 2)
    s = lex.scores("Zorblax, again!")
    assert s[0] > 0.45 and s[1] == 0.0, "only route 0 holds 'zorblax'"
    common = lex.scores("reset my password")
    assert abs(common[0] - common[1]) < 0.1 and common.max() < 0.6, \
        "words both routes hold say little about either"
    assert lex.scores("nothing known here").sum() == 0.0
    t0 = time.perf_counter()
    for _ in range(1000):
        lex.scores("please reset the zorblax password for me now")
    assert (time.perf_counter() - t0) / 1000 < 5e-4, "well under a millisecond per query"


def test_the_lexical_index_is_saved_loaded_and_changes_a_decision(tmp_path: Path) -> None:
    plain = write_set(tmp_path / "plain", 0.0)
    build_index(plain, tmp_path / "i_plain")
    without = Router.load(plain, tmp_path / "i_plain", classifier=False).route(QUERY)
    blended = write_set(tmp_path / "lexical", 0.3)
    build_index(blended, tmp_path / "i_lex")
    build = current_build(tmp_path / "i_lex")
    assert (build / "lexical.json").is_file()
    manifest = json.loads((build / "manifest.json").read_text())
    assert "lexical.json" in manifest["files"], "checksummed like every build file"
    index = RouteIndex.load(tmp_path / "i_lex")
    assert index.lexical is not None and "e42" in index.lexical.postings
    with_lex = Router.load(blended, tmp_path / "i_lex", classifier=False).route(QUERY)
    assert with_lex.route == "error_e42" and with_lex.method == "index"
    assert without.method in ("undecided", "default"), \
        "without the rare word's weight the two look-alike routes are too close to call"
    assert without.candidates[0].route == "error_e42"
    assert with_lex.margin > without.margin


def test_a_damaged_or_missing_lexical_file_is_caught(tmp_path: Path) -> None:
    routes = write_set(tmp_path / "routes", 0.3)
    build_index(routes, tmp_path / "index")
    lex_file = current_build(tmp_path / "index") / "lexical.json"
    lex_file.write_text(lex_file.read_text().replace("e42", "e43"))
    with pytest.raises(CorruptIndexError, match=r"lexical\.json"):
        RouteIndex.load(tmp_path / "index")
    build_index(routes, tmp_path / "old")
    build = current_build(tmp_path / "old")
    (build / "lexical.json").unlink()
    manifest = json.loads((build / "manifest.json").read_text())
    del manifest["files"]["lexical.json"]
    (build / "manifest.json").write_text(json.dumps(manifest))  # a build from before lexical
    assert RouteIndex.load(tmp_path / "old").lexical is None
    with pytest.raises(StaleIndexError, match=r"without its lexical file.*semroute build"):
        Router.load(routes, tmp_path / "old", classifier=False)
