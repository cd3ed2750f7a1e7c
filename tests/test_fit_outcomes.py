"""`semroute fit --outcomes`: thresholds fitted on the outcomes store's classifier-decided
and feedback-labelled requests, reweighted from the validation rows' route mix to the live
one, with the effective sample size reported and too little data refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from semroute.cli import main
from semroute.index import build_index, load_calibration
from semroute.outcomes import LoggedRequest, OutcomeStore
from semroute.quality import LabelledQuery, fit_thresholds
from semroute.quality.adaptive import (
    OutcomeValidation,
    cell_weights,
    fit_weighted,
    prior_weights,
)
from semroute.routing import Candidate, Decision
from tests.suggest_support import log, write_route_set


def dec(top: str, score: float, margin: float = 0.3) -> Decision:
    return Decision(query="q", route=None, method="undecided", score=score, margin=margin,
                    threshold=0.5, margin_threshold=0.05, reason="",
                    candidates=(Candidate(top, score, ()),
                                Candidate("other", round(score - margin, 6), ())),
                    timings_ms={})


def shifted_rows() -> tuple[list[Decision], list[LabelledQuery]]:
    """Route a: 80 rows the index sends to a, two of them (scores 0.80 and 0.70) queries of
    route c; route c: 20 more rows, sent right. Validation is 78% a, 22% c."""
    decisions, rows = [], []
    for i in range(80):
        s = round(0.9 - 0.005 * i, 4)
        decisions.append(dec("a", s))
        rows.append(LabelledQuery(f"a{i}", "c" if s in (0.8, 0.7) else "a"))
    for i in range(20):
        decisions.append(dec("c", round(0.9 - 0.02 * i, 3)))
        rows.append(LabelledQuery(f"c{i}", "c"))
    return decisions, rows


def test_uniform_weights_give_the_unweighted_fit() -> None:
    decisions, rows = shifted_rows()
    plain = fit_thresholds(decisions, rows, target_misroute=0.05, min_route_rows=0)
    same = fit_weighted(decisions, rows, [1.0] * len(rows), target_misroute=0.05)
    assert (same.decided, same.wrong) == (plain.decided, plain.wrong)
    assert same.score_threshold == pytest.approx(plain.score_threshold, abs=1e-5)


def test_live_traffic_rich_in_the_misrouted_route_raises_the_threshold() -> None:
    decisions, rows = shifted_rows()
    live = {"a": 200.0, "c": 800.0}  # live traffic is 80% c
    weights = prior_weights([q.label for q in rows], live)
    assert weights[-1] / weights[0] == pytest.approx((0.8 / 0.22) / (0.2 / 0.78))
    plain = fit_weighted(decisions, rows, [1.0] * len(rows), target_misroute=0.05)
    shifted = fit_weighted(decisions, rows, weights, target_misroute=0.05)
    assert plain.decided == 100 and plain.wrong == 2, "2/100 wrong is within 5% unweighted"
    assert shifted.score_threshold > 0.70 > plain.score_threshold, \
        "on live traffic c's queries weigh 14x: the index must stop above a misroute of c"
    assert shifted.wrong < plain.wrong
    assert "reweighted to the live route mix" in shifted.message
    ess = OutcomeValidation(rows, weights).ess
    assert 30 < ess < 100, "weights cost effective rows"


def test_weights_are_clipped_so_one_rare_route_cannot_carry_the_fit() -> None:
    w = prior_weights(["a"] + ["b"] * 99, {"a": 0.5, "b": 0.5}, max_weight=10)
    assert max(w) == pytest.approx(10.0) and sum(w) == pytest.approx(100.0)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_route_set(tmp_path / "routes")
    build_index(tmp_path / "routes", tmp_path / "index")
    rows = [(f"b{i}", t, "billing", "classifier") for i, t in enumerate([
        "I was charged twice this month", "can I get a copy of the receipt for March",
        "how do I change my billing address", "my payment was declined",
        "cancel my subscription please", "what is the price of the family plan",
        "I need an invoice for my company", "refund my annual plan"])]
    rows += [(f"c{i}", t, "code", "classifier") for i, t in enumerate([
        "write a go http server", "fix this null pointer exception in java",
        "implement quicksort in rust", "my python script crashes on import",
        "write a bash loop over files", "create a react button component"])]
    rows += [(f"g{i}", t, "greet", "classifier") for i, t in enumerate([
        "hello there", "good evening", "hey, how is it going", "nice to see you again"])]
    with OutcomeStore(tmp_path / "routes" / "outcomes.db") as store:
        log(store, rows, feedback={"g3": "greet"})
        with store.transaction() as tx:  # the rest of live traffic: routed by the index
            tx.log_requests([LoggedRequest(request_id=f"i{i}", ts=2000.0 + i, route="greet",
                                           method="index") for i in range(30)])
    return tmp_path


def test_fit_outcomes_writes_a_calibration_and_reports_the_effective_sample_size(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fit", "--outcomes", "--routes", str(folder / "routes"), "--index",
            str(folder / "index"), "--target-misroute", "0.1"]
    assert main([*args, "--min-rows", "5"]) == 0
    out = capsys.readouterr().out
    assert "18 rows (classifier 17, feedback 1)" in out
    assert "live route mix from 48 logged requests" in out
    assert "effective sample size" in out and "greet 70.8% vs 22.2%" in out
    cal = load_calibration(folder / "index")
    assert cal is not None and cal.data.startswith("outcomes:") and cal.rows == 18


def test_fit_outcomes_refuses_too_few_rows(folder: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--outcomes", "--routes", str(folder / "routes"), "--index",
                 str(folder / "index")]) == 2
    err = capsys.readouterr().err
    assert "too few labelled rows in the outcomes store to fit on: 18 rows" in err
    assert "50 needed" in err and "lower --min-rows" in err
    assert "keep_text" not in err, "every row had its text: no hint to keep texts"
    assert load_calibration(folder / "index") is None


def test_rated_index_decisions_stand_for_every_index_decision_of_their_route() -> None:
    cells = [("classifier", "a")] * 10 + [("index", "a")] * 5 + [("classifier", "b")] * 10
    live = {("classifier", "a"): 10, ("index", "a"): 100, ("classifier", "b"): 10,
            ("index", "b"): 90}
    w = cell_weights(cells, live, max_weight=1000)
    assert w[10] / w[0] == pytest.approx(20.0), "1 of 20 index decisions was rated"
    assert w[20] / w[0] == pytest.approx(10.0), \
        "b's index decisions, unrated, are carried by b's classifier rows (the prior shift)"
