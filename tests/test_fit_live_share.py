"""`semroute fit --oos-share` / `--oos-share-from`: validation rows reweighted so the
misroute target holds on live traffic with another out-of-scope share, the share estimated
from a trace's scores, and clear errors at the command line."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from semroute.cli import main
from semroute.errors import DataError
from semroute.index import load_calibration
from semroute.quality import (
    OOS,
    LabelledQuery,
    estimate_oos_share,
    fit_thresholds,
    misroute_at_share,
    oos_share_weights,
    trace_scores,
)
from semroute.routing import Candidate, Decision
from tests.test_fit import VALID, strict_set  # noqa: F401  (the fixture)

ROUTES = ["a", "b"]


def dec(top: str, score: float, margin: float = 0.3) -> Decision:
    return Decision(query="q", route=None, method="undecided", score=round(score, 6),
                    margin=round(margin, 6), threshold=0.5, margin_threshold=0.0, reason="",
                    candidates=(Candidate(top, round(score, 6), ()),
                                Candidate("other", round(score - margin, 6), ())),
                    timings_ms={})


def sample(n: int, oos_share: float, seed: int) -> tuple[list[Decision], list[LabelledQuery]]:
    """Synthetic index decisions: in-scope rows score high (10% of them wrongly routed, at
    lower scores), out-of-scope rows score lower but overlap the in-scope ones."""
    rng = random.Random(seed)
    decisions, data = [], []
    for i in range(n):
        top = rng.choice(ROUTES)
        if rng.random() < oos_share:
            decisions.append(dec(top, rng.gauss(0.45, 0.1)))
            data.append(LabelledQuery(f"o{i}", OOS))
        elif rng.random() < 0.1:
            decisions.append(dec(top, rng.gauss(0.5, 0.1)))
            data.append(LabelledQuery(f"w{i}", "b" if top == "a" else "a"))
        else:
            decisions.append(dec(top, rng.gauss(0.7, 0.1)))
            data.append(LabelledQuery(f"r{i}", top))
    return decisions, data


def test_weights_give_out_of_scope_rows_the_live_share() -> None:
    data = [LabelledQuery("x", "a")] * 6 + [LabelledQuery("y", OOS)] * 2 \
        + [LabelledQuery("z", "not_a_route")] * 2
    w = oos_share_weights(data, ROUTES, 0.2)
    assert sum(w) == pytest.approx(len(data))
    assert sum(w[6:]) / sum(w) == pytest.approx(0.2), "labels naming no route count as oos"
    assert oos_share_weights(data, ROUTES, 0.0)[6:] == [0.0] * 4


def test_a_larger_live_share_raises_the_threshold_and_a_smaller_one_lowers_it() -> None:
    decisions, data = sample(3000, 0.2, seed=1)
    told = {s: fit_thresholds(decisions, data, target_misroute=0.05, min_route_rows=0,
                              weights=oos_share_weights(data, ROUTES, s))
            for s in (0.0, 0.2, 0.5)}
    plain = fit_thresholds(decisions, data, target_misroute=0.05, min_route_rows=0)
    assert told[0.0].score_threshold < plain.score_threshold < told[0.5].score_threshold
    assert told[0.2].score_threshold == pytest.approx(plain.score_threshold, abs=0.01), \
        "told the validation share itself, the fit is the plain one"


@pytest.mark.parametrize("live", [0.05, 0.4])
def test_told_the_live_share_the_misroute_target_holds_on_a_mix_with_that_share(
        live: float) -> None:
    valid_d, valid = sample(6000, 0.2, seed=2)
    test_d, test = sample(6000, live, seed=3)
    target = 0.05
    plain = fit_thresholds(valid_d, valid, target_misroute=target)
    told = fit_thresholds(valid_d, valid, target_misroute=target,
                          weights=oos_share_weights(valid, ROUTES, live))
    held_told = misroute_at_share(test_d, test, told.thresholds(), ROUTES, live)
    held_plain = misroute_at_share(test_d, test, plain.thresholds(), ROUTES, live)
    assert held_told is not None and held_plain is not None
    assert abs(held_told - target) <= 0.015
    assert abs(held_plain - target) > abs(held_told - target), \
        "the plain fit should miss the target on traffic with another share"


def write_trace(path: Path, scores: list[float]) -> None:
    lines = [{"request_id": str(i), "method": "index" if s > 0.6 else "undecided",
              "score": s, "candidates": [{"route": "a", "score": s}]}
             for i, s in enumerate(scores)]
    lines += [{"kind": "feedback", "request_id": "1", "score": 0.0},
              {"request_id": "r", "method": "rule", "score": 1.0, "candidates": []}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_the_share_is_estimated_from_trace_scores(tmp_path: Path) -> None:
    valid_d, valid = sample(4000, 0.3, seed=4)
    live_d, _ = sample(4000, 0.1, seed=5)
    trace = tmp_path / "trace.jsonl"
    write_trace(trace, [d.score for d in live_d])
    scores = trace_scores(trace)
    assert len(scores) == 4000, "feedback lines and rule decisions are not scored requests"
    est = estimate_oos_share(valid_d, valid, ROUTES, scores)
    assert est.share == pytest.approx(0.1, abs=0.04)
    assert "estimated out-of-scope share" in est.describe()
    with pytest.raises(DataError, match="50 needed"):
        estimate_oos_share(valid_d, valid, ROUTES, scores[:10])


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no out-of-scope rows"):
        oos_share_weights([LabelledQuery("x", "a")], ROUTES, 0.2, where="valid.csv")
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"method": "index"}\nnot json\n')
    with pytest.raises(DataError, match=r"t.jsonl:2: not a JSON line"):
        trace_scores(bad)
    with pytest.raises(DataError, match="cannot read the trace file"):
        trace_scores(tmp_path / "missing.jsonl")


def test_cli_fit_with_a_live_share(strict_set: tuple[Path, Path, Path],  # noqa: F811
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routes, index, _ = strict_set
    shutil.copytree(index, tmp_path / "index")
    data = tmp_path / "valid.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{lbl}\n' for t, lbl in VALID)
                    + "what is the capital of peru,oos\nhow tall is mount everest,oos\n")
    args = ["fit", "--data", str(data), "--routes", str(routes), "--index",
            str(tmp_path / "index"), "--target-misroute", "0.1"]
    assert main([*args, "--oos-share", "0.3", "--test", str(data)]) == 0
    out = capsys.readouterr().out
    assert "live out-of-scope share 30.0% (given)" in out
    assert "at the live share" in out and "misroute at live out-of-scope shares" in out
    cal = load_calibration(tmp_path / "index")
    assert cal is not None and "oos share 0.3" in cal.data

    assert main([*args, "--oos-share", "1.5"]) == 2
    assert "--oos-share must be in [0, 1)" in capsys.readouterr().err
    assert main([*args, "--oos-share", "0.2", "--outcomes"]) == 2
    assert "use one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--oos-share", "0.2", "--oos-share-from", "t.jsonl"])
    assert "not allowed with argument" in capsys.readouterr().err
    in_scope_only = tmp_path / "in.csv"
    in_scope_only.write_text("text,label\n" + "".join(f'"{t}",{lbl}\n' for t, lbl in VALID))
    assert main([*args[:2], str(in_scope_only), *args[3:], "--oos-share", "0.2"]) == 2
    assert "has no out-of-scope rows" in capsys.readouterr().err
    few = tmp_path / "few.jsonl"
    write_trace(few, [0.5] * 5)
    assert main([*args, "--oos-share-from", str(few)]) == 2
    assert "give --oos-share instead" in capsys.readouterr().err


def test_shrinkage_pulls_a_thin_route_towards_the_router_wide_threshold() -> None:
    """Route a has 300 rows, route b 12: b's own threshold rests on a handful of rows, so
    with shrinkage it moves most of the way to the shared one, and the target still holds."""
    rng = random.Random(7)
    decisions, data = [], []
    for i in range(300):
        s = rng.uniform(0.3, 0.9)
        decisions.append(dec("a", s))
        data.append(LabelledQuery(f"a{i}", "a" if s > 0.45 or rng.random() < 0.5 else OOS))
    for i in range(12):
        s = 0.5 + 0.03 * i
        decisions.append(dec("b", s))
        data.append(LabelledQuery(f"b{i}", OOS if i == 9 else "b"))
    own = fit_thresholds(decisions, data, target_misroute=0.05, min_route_rows=10)
    shrunk = fit_thresholds(decisions, data, target_misroute=0.05, min_route_rows=10, shrink=50)
    assert "b" in own.per_route and "b" in shrunk.per_route
    gap = abs(own.per_route["b"] - own.per_route["a"])
    assert abs(shrunk.per_route["b"] - shrunk.score_threshold) < gap
    assert shrunk.misroute is not None and shrunk.misroute <= 0.05 + 1e-9
