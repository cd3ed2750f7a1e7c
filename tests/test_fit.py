"""Threshold fitting: known optima on hand-built decisions, infeasible targets, per-route
thresholds, and a calibration that `Router.load` reads and that changes decisions."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.cli import main
from semroute.errors import CalibrationWarning, InfeasibleTargetError
from semroute.index import build_index, load_calibration, save_calibration
from semroute.quality import OOS, LabelledQuery, index_route, load_labelled, route_all
from semroute.quality.fitting import (
    evaluate_with,
    fit_thresholds,
    redecide,
    to_calibration,
)
from semroute.routing import Candidate, Decision, Method, Router, Thresholds
from tests.conftest import CATALOGUE


def dec(top: str, score: float, margin: float = 0.5, method: Method = "undecided",
        route: str | None = None) -> Decision:
    return Decision(query="q", route=route, method=method, score=score, margin=margin,
                    threshold=0.5, margin_threshold=0.05, reason="",
                    candidates=(Candidate(top, score, ()),
                                Candidate("other", round(score - margin, 6), ())),
                    timings_ms={})


def rows(spec: list[tuple[str, float, float, bool]]) -> tuple[list[Decision],
                                                              list[LabelledQuery]]:
    """(top route, score, margin, right?) -> decisions and labels (wrong rows are `oos`)."""
    return ([dec(r, s, m) for r, s, m, _ in spec],
            [LabelledQuery(f"q{i}", r if ok else OOS) for i, (r, _, _, ok) in enumerate(spec)])


def redecided(decisions: list[Decision], data: list[LabelledQuery],
              th: Thresholds) -> tuple[int, int]:
    routes = [index_route(d, th) for d in decisions]
    return (sum(r is not None for r in routes),
            sum(r is not None and r != q.label for r, q in zip(routes, data, strict=True)))


# scores 0.95 .. 0.50; the rows at 0.70 and 0.55 are wrong
TEN = [("a", round(0.95 - 0.05 * i, 2), 0.2, round(0.95 - 0.05 * i, 2) not in (0.70, 0.55))
       for i in range(10)]


def test_score_threshold_optimum_is_found_exactly() -> None:
    decisions, data = rows(TEN)
    fit = fit_thresholds(decisions, data, target_misroute=0.1, min_route_rows=0)
    # prefixes: 5 rows 0 wrong; 6 rows 1/6; 7 1/7; 8 1/8; 9 2/9; 10 2/10 -> only 5 meet 10%
    assert fit.feasible
    assert (fit.decided, fit.wrong) == (5, 0)
    assert 0.70 < fit.score_threshold < 0.75 and fit.score_threshold == pytest.approx(0.75,
                                                                                     abs=1e-5)
    assert fit.margin_threshold == 0.0
    assert fit.coverage == 0.5 and fit.misroute == 0.0
    assert redecided(decisions, data, fit.thresholds()) == (5, 0)


def test_looser_target_takes_every_row() -> None:
    decisions, data = rows(TEN)
    fit = fit_thresholds(decisions, data, target_misroute=0.2, min_route_rows=0)
    assert (fit.decided, fit.wrong) == (10, 2)
    assert fit.score_threshold < 0.5


def test_margin_threshold_removes_wrong_rows() -> None:
    spec = [("a", 0.90, 0.10, True), ("a", 0.85, 0.02, False), ("a", 0.80, 0.10, True),
            ("a", 0.75, 0.10, True), ("a", 0.70, 0.10, True), ("a", 0.65, 0.015, True)]
    decisions, data = rows(spec)
    fit = fit_thresholds(decisions, data, target_misroute=0.0, min_route_rows=0)
    # margin in (0.02, 0.10] keeps the four 0.10 rows, drops the wrong one (and 0.65)
    assert (fit.decided, fit.wrong) == (4, 0)
    assert 0.02 < fit.margin_threshold <= 0.10
    assert 0.65 < fit.score_threshold <= 0.70
    assert redecided(decisions, data, fit.thresholds()) == (4, 0)


def test_infeasible_target_says_what_is_reachable() -> None:
    decisions, data = rows([("a", 0.9, 0.2, False), ("a", 0.8, 0.2, True),
                            ("a", 0.7, 0.2, False)])
    fit = fit_thresholds(decisions, data, target_misroute=0.03)
    assert not fit.feasible
    assert fit.best_misroute == pytest.approx(0.5)
    assert "3.0%" in fit.message and "lowest reachable misroute rate: 50.0%" in fit.message
    with pytest.raises(InfeasibleTargetError):
        to_calibration(fit, build_id="b", data="v.csv")


def test_min_coverage_makes_a_tiny_fit_infeasible() -> None:
    decisions, data = rows(TEN)
    assert not fit_thresholds(decisions, data, target_misroute=0.1, min_route_rows=0,
                              min_coverage=0.6).feasible


def test_per_route_thresholds_beat_one_router_wide_threshold() -> None:
    x = [("x", round(0.60 + 0.01 * i, 2), 0.5, i != 0) for i in range(40)]
    y = [("y", round(0.60 + 0.01 * i, 2), 0.5, i not in (20, 30)) for i in range(40)]
    z = [("z", s, 0.5, True) for s in (0.95, 0.90, 0.85, 0.80, 0.75)]
    decisions, data = rows(x + y + z)
    fit = fit_thresholds(decisions, data, target_misroute=0.03, min_route_rows=30)
    # one threshold: rows >= 0.61 -> 83 rows, 2 wrong (0.60 adds x's wrong row: 3/85 > 3%)
    assert fit.global_only_decided == 83
    # per route: x drops its wrong 0.60 row, y keeps all 40 (2 wrong), z all 5 -> 84, 2 wrong
    assert set(fit.per_route) == {"x", "y"}
    assert (fit.decided, fit.wrong) == (84, 2)
    assert 0.60 < fit.per_route["x"] <= 0.61
    assert fit.per_route["y"] < 0.60
    assert 0.70 < fit.score_threshold <= 0.75  # z, below min_route_rows, uses the global one
    assert fit.misroute is not None and fit.misroute <= 0.03
    assert redecided(decisions, data, fit.thresholds()) == (84, 2)
    assert not any("re-deciding" in n for n in fit.notes)


def test_route_file_thresholds_are_taken_as_given() -> None:
    spec = [("a", 0.9, 0.5, True), ("a", 0.8, 0.5, True), ("b", 0.95, 0.5, False),
            ("b", 0.7, 0.5, True)]
    decisions, data = rows(spec)
    fit = fit_thresholds(decisions, data, target_misroute=0.0, min_route_rows=0,
                         fixed={"b": 0.99})
    assert fit.thresholds().per_route == {"b": 0.99}
    assert (fit.decided, fit.wrong) == (2, 0)
    assert fit.score_threshold < 0.8


def test_redecide_and_held_out_scoring() -> None:
    strict = Thresholds(0.85, 0.0, {})
    taken = redecide(dec("a", 0.9, method="undecided"), strict)
    assert (taken.route, taken.method, taken.threshold) == ("a", "index", 0.85)
    dropped = redecide(dec("a", 0.8, method="index", route="a"), strict)
    assert (dropped.route, dropped.method) == (None, "undecided")
    assert "below the threshold 0.850" in dropped.reason
    kept = redecide(dec("a", 0.8, method="classifier", route="b"), strict)
    assert (kept.route, kept.method) == ("b", "classifier")
    decisions, data = rows(TEN)
    m = evaluate_with(decisions, data, Thresholds(0.74, 0.0, {}), ["a"]).metrics
    assert m["index_rate"] == 0.5 and m["misroute_rate_index"] == 0.0


# ---------------------------------------------------------------- with the real router

FIT_ROUTES: dict[str, dict[str, Any]] = {
    "greet": {"name": "greet", "description": "Greetings and small talk with the user.",
              "model": "fast",
              "utterances": ["hi there", "hello, how are you", "good morning friend",
                             "hey what's up", "nice to meet you", "good evening"]},
    "code": {"name": "code", "description": "Writing and explaining program code.",
             "model": "fast",
             "utterances": ["write a python function to sort a list",
                            "implement binary search in java", "reverse a linked list in C",
                            "write a SQL query joining two tables",
                            "create a REST endpoint in flask"]},
}
VALID = [("hello, good morning to you", "greet"), ("hey, how's it going", "greet"),
         ("hi! nice to see you", "greet"), ("good evening everyone", "greet"),
         ("write a function that sorts numbers in python", "code"),
         ("implement quicksort in java", "code"), ("write a SQL join query", "code"),
         ("reverse a string in C", "code")]


@pytest.fixture(scope="module")
def strict_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two routes whose models.yaml thresholds (0.95) leave almost everything undecided."""
    root = tmp_path_factory.mktemp("fit")
    routes = root / "routes"
    routes.mkdir()
    for stem, spec in FIT_ROUTES.items():
        (routes / f"{stem}.yaml").write_text(yaml.safe_dump(spec))
    cat = copy.deepcopy(CATALOGUE)
    cat["router"].update(backend="torch", score_threshold=0.95, margin_threshold=0.0)
    (routes / "models.yaml").write_text(yaml.safe_dump(cat))
    build_index(routes, root / "index")
    data = root / "valid.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{lbl}\n' for t, lbl in VALID))
    return routes, root / "index", data


def test_calibration_is_read_by_the_router_and_changes_decisions(
        strict_set: tuple[Path, Path, Path], tmp_path: Path) -> None:
    routes, index, data_file = strict_set
    index_copy = tmp_path / "index"
    shutil.copytree(index, index_copy)
    data = load_labelled(data_file)
    before = Router.load(routes, index_copy)
    decisions, _ = route_all(before, [q.text for q in data])
    assert sum(d.method == "index" for d in decisions) <= 2
    fit = fit_thresholds(decisions, data, target_misroute=0.0, min_route_rows=0)
    assert fit.feasible and fit.decided == len(data)  # these queries are all routed right
    save_calibration(index_copy, to_calibration(fit, build_id=before.index.manifest.build_id,
                                                data=str(data_file)))
    cal = load_calibration(index_copy)
    assert cal is not None and cal.score_threshold == fit.score_threshold
    after = Router.load(routes, index_copy)
    assert after.matcher.thresholds == fit.thresholds()
    assert after.calibration == cal and after.calibration_status == "current"
    again = after.route_batch([q.text for q in data], use_classifier=False)
    assert [d.route for d in again] == [q.label for q in data]
    assert all(d.method == "index" for d in again)


def test_calibration_from_an_earlier_build_is_not_applied(strict_set: tuple[Path, Path, Path],
                                                          tmp_path: Path) -> None:
    """Every rebuild moves the per-route offsets, so old thresholds mean something else now:
    the router keeps the label-free defaults and says why (unless asked to apply them)."""
    routes, index, data_file = strict_set
    index_copy = tmp_path / "index"
    shutil.copytree(index, index_copy)
    router = Router.load(routes, index_copy)
    defaults = router.matcher.thresholds
    assert defaults == Thresholds(0.95, 0.0, {})  # models.yaml's, as there is no calibration
    fit = fit_thresholds(route_all(router, [q.text for q in load_labelled(data_file)])[0],
                         load_labelled(data_file), target_misroute=0.5, min_route_rows=0)
    assert fit.thresholds() != defaults, "the test needs a calibration that would change them"
    save_calibration(index_copy, to_calibration(fit, build_id="b-earlier", data="x.csv"))
    with pytest.warns(CalibrationWarning, match=r"b-earlier"):
        stale = Router.load(routes, index_copy)
    assert stale.matcher.thresholds == defaults, "a stale calibration was applied"
    assert router.calibration is None and router.calibration_status == "none"
    assert stale.calibration is None and stale.calibration_status == "stale-ignored"
    with pytest.warns(CalibrationWarning, match=r"ignored.*run `semroute fit` again"):
        Router.load(routes, index_copy)
    with pytest.warns(CalibrationWarning, match="applied anyway"):
        kept = Router.load(routes, index_copy, stale_calibration="apply")
    assert kept.matcher.thresholds == fit.thresholds()
    assert kept.calibration is not None and kept.calibration_status == "stale-applied"
    with pytest.raises(ValueError, match="stale_calibration"):
        Router.load(routes, index_copy, stale_calibration="sometimes")  # type: ignore[arg-type]


def test_cli_fit_writes_calibration_and_reports_held_out(
        strict_set: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    routes, index, data_file = strict_set
    shutil.copytree(index, tmp_path / "index")
    rc = main(["fit", "--data", str(data_file), "--test", str(data_file), "--routes",
               str(routes), "--index", str(tmp_path / "index"), "--target-misroute", "0.05"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "score threshold" in out and "expected coverage 100.0%" in out
    assert "held-out" in out and "index decides 100.0%" in out
    assert (tmp_path / "index" / "calibration.json").exists()


def test_cli_fit_refuses_an_infeasible_target(strict_set: tuple[Path, Path, Path],
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    routes, index, _ = strict_set
    bad = tmp_path / "all_oos.csv"
    bad.write_text("text,label\n" + "".join(f'"{t}",oos\n' for t, _ in VALID))
    rc = main(["fit", "--data", str(bad), "--routes", str(routes), "--index", str(index)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "lowest reachable misroute rate: 100.0%" in err
    assert not (index / "calibration.json").exists()
