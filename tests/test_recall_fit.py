"""Fitting for an out-of-scope recall goal (`fit_oos_recall`): the lowest thresholds that keep
R of the validation `oos` rows undecided, the margin chosen when it saves in-scope rows, and a
calibration the router reads. Hand-built decisions, then a real encoder and index."""

from __future__ import annotations

from pathlib import Path

import pytest

from semroute.cli import main
from semroute.errors import InfeasibleTargetError
from semroute.index import build_index, load_calibration, save_calibration
from semroute.quality import OOS, LabelledQuery, evaluate_with, fit_oos_recall, route_all
from semroute.quality.fitting import to_calibration
from semroute.routing import Decision, Router
from tests.conftest import WriteRoutes
from tests.test_fit import dec
from tests.test_negatives import OOS_LINES, ROUTES, catalogue


def labelled(spec: list[tuple[str, float, float, str]]
             ) -> tuple[list[Decision], list[LabelledQuery]]:
    """(top route, score, margin, gold label) -> decisions and labelled rows."""
    return ([dec(r, s, m) for r, s, m, _ in spec],
            [LabelledQuery(f"q{i}", gold) for i, (_, _, _, gold) in enumerate(spec)])


def test_the_score_threshold_is_the_lowest_that_keeps_the_goal() -> None:
    # in-scope rows at 0.9 .. 0.5 (all right), out-of-scope rows at 0.8, 0.6, 0.4, 0.3
    spec = [("a", s, 0.5, "a") for s in (0.9, 0.8, 0.7, 0.6, 0.5)]
    spec += [("a", s, 0.5, OOS) for s in (0.8, 0.6, 0.4, 0.3)]
    decisions, data = labelled(spec)
    half = fit_oos_recall(decisions, data, oos_recall=0.5)  # two oos rows may pass: 0.8, 0.6
    assert half.score_threshold == pytest.approx(0.4, abs=1e-6) and half.score_threshold > 0.4
    assert half.per_route == {} and half.decided == 7 and half.wrong == 2
    full = fit_oos_recall(decisions, data, oos_recall=1.0)
    assert full.score_threshold > 0.8 and full.decided == 1  # only the 0.9 row is left
    res = evaluate_with(decisions, data, full.thresholds(), ["a"])
    assert res.metrics["oos_recall"] == 1.0
    assert "OOS recall 100.0% (goal 100%)" in full.message


def test_a_margin_threshold_is_chosen_when_out_of_scope_rows_are_ambiguous() -> None:
    # out-of-scope rows score as high as in-scope ones but sit between two routes
    spec = [("a", 0.8, 0.3, "a"), ("b", 0.7, 0.3, "b"), ("a", 0.6, 0.25, "a")]
    spec += [("a", 0.85, 0.01, OOS), ("b", 0.75, 0.02, OOS)]
    decisions, data = labelled(spec)
    fit = fit_oos_recall(decisions, data, oos_recall=1.0)
    assert fit.margin_threshold > 0.02 and fit.decided == 3 and fit.wrong == 0
    res = evaluate_with(decisions, data, fit.thresholds(), ["a", "b"])
    assert res.metrics["in_scope_accuracy"] == 1.0 and res.metrics["oos_recall"] == 1.0


def test_without_out_of_scope_rows_the_goal_cannot_be_fitted() -> None:
    decisions, data = labelled([("a", 0.8, 0.3, "a")])
    with pytest.raises(InfeasibleTargetError, match="no rows labelled 'oos'"):
        fit_oos_recall(decisions, data)
    with pytest.raises(ValueError, match="oos_recall must be in"):
        fit_oos_recall(decisions, data, oos_recall=0.0)


VALID = [("I was charged twice on my invoice", "billing"),
         ("can I get a refund for last month's bill", "billing"),
         ("where is my parcel right now", "shipping"),
         ("my package has not arrived yet", "shipping"),
         ("how do I track my spending this month", OOS),
         ("plan a budget for my household", OOS),
         ("what's the weather in paris", OOS)]


def test_a_recall_fit_of_a_real_index_is_what_the_router_then_does(
        write_routes: WriteRoutes, tmp_path: Path) -> None:
    folder = write_routes(ROUTES, catalogue(oos_examples="oos.txt"), raw={"oos.txt": OOS_LINES})
    build_index(folder, tmp_path / "index")
    router = Router.load(folder, tmp_path / "index", classifier=False)
    data = [LabelledQuery(t, lbl) for t, lbl in VALID]
    decisions, _ = route_all(router, [q.text for q in data])
    fit = fit_oos_recall(decisions, data, oos_recall=1.0)
    held = evaluate_with(decisions, data, fit.thresholds(), ["billing", "shipping"])
    assert held.metrics["oos_recall"] == 1.0
    assert held.metrics["in_scope_accuracy"] >= 0.75  # the goal costs at most one row here
    save_calibration(tmp_path / "index", to_calibration(
        fit, build_id=router.index.manifest.build_id, data="valid"))
    fitted = Router.load(folder, tmp_path / "index", classifier=False)
    assert fitted.matcher.thresholds == fit.thresholds()
    again = fitted.route_batch([q.text for q in data], use_classifier=False)
    assert [d.route for d in again] == [d.route for d in held.decisions]


def test_cli_fit_takes_an_out_of_scope_recall_goal(
        write_routes: WriteRoutes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_routes(ROUTES, catalogue(oos_examples="oos.txt"), raw={"oos.txt": OOS_LINES})
    build_index(folder, tmp_path / "index")
    data = tmp_path / "valid.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{lbl}\n' for t, lbl in VALID))
    args = ["fit", "--routes", str(folder), "--index", str(tmp_path / "index"),
            "--data", str(data)]
    assert main([*args, "--oos-recall", "1.0", "--test", str(data)]) == 0
    out = capsys.readouterr().out
    assert "note: fitted for out-of-scope recall ≥ 100% (validation: 100.0%)" in out
    assert "oos recall 100.0%" in out and "wrote" in out
    assert "no misroute target: fitted for out-of-scope recall ≥ 100%" in out
    cal = load_calibration(tmp_path / "index")
    assert cal is not None and cal.per_route == {}
    assert cal.data.endswith("valid.csv (fitted for out-of-scope recall ≥ 100%)")
    assert main([*args, "--oos-recall", "1.5", "--dry-run"]) != 0
    assert "--oos-recall must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert main([*args, "--oos-recall", "0.9", "--oos-share", "0.2"]) != 0
    assert "drop --outcomes, --oos-share(-from), --shrink and --cross-fit" in \
        capsys.readouterr().err
    assert main([*args, "--oos-recall", "0.9", "--cross-fit", "5"]) != 0
    assert "drop --outcomes, --oos-share(-from), --shrink and --cross-fit" in \
        capsys.readouterr().err
