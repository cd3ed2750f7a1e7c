"""`semroute fit --cross-fit K`: thresholds fitted where the cross-fitted held-out misroute
meets the target, so the target holds on unseen rows rather than only on the rows it was
fitted on; the held-out estimate is reported, and an unreachable target is said so."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from semroute.cli import main
from semroute.quality import (
    OOS,
    LabelledQuery,
    cross_fit_target,
    fit_cross_fitted,
    fit_thresholds,
    misroute_at_share,
    oos_share_weights,
)
from semroute.quality.crossfit import monotone, read_curve, stratified_folds
from tests.test_fit import VALID, strict_set  # noqa: F401  (the fixture)
from tests.test_fit_live_share import ROUTES, sample


def test_folds_spread_every_label_evenly() -> None:
    data = [LabelledQuery(f"a{i}", "a") for i in range(23)] + \
        [LabelledQuery(f"o{i}", OOS) for i in range(7)]
    folds = stratified_folds(data, 5)
    for label in ("a", OOS):
        sizes = Counter(f for f, q in zip(folds, data, strict=True) if q.label == label)
        assert max(sizes.values()) - min(sizes.values()) <= 1
    assert sorted(Counter(folds).values()) == [6] * 5
    assert stratified_folds(data, 5, seed=1) != folds, "another seed, another split"


def test_the_held_out_curve_is_smoothed_and_read_where_it_crosses_the_target() -> None:
    assert monotone([0.02, 0.05, 0.04, 0.06]) == pytest.approx([0.02, 0.045, 0.045, 0.06])
    grid = (0.5, 1.0, 1.5)
    internal, expected = read_curve(grid, [0.02, 0.04, 0.06], 0.03)
    assert internal == pytest.approx(0.75) and expected == pytest.approx(0.03)
    # never reaching the target: the lowest level, and never above the target itself
    assert read_curve(grid, [0.05, 0.04, 0.06], 0.03) == (pytest.approx(1.0),
                                                        pytest.approx(0.045))
    assert read_curve(grid, [0.05, 0.06, 0.07], 0.03) == (0.5, 0.05)


def test_cross_fitting_brings_the_held_out_misroute_back_to_the_target() -> None:
    """600 validation rows reweighted to a 40% out-of-scope share: fitted and scored on the
    same rows, the thresholds misroute more than the target on fresh rows (winner's curse);
    cross-fitted, the fresh misroute is closer to it on average over six draws."""
    target, live = 0.05, 0.4
    test_d, test = sample(20000, live, seed=99)
    plain_gap, crossed_gap, plain_mean = 0.0, 0.0, 0.0
    for seed in range(6):
        vd, v = sample(600, 0.2, seed=seed + 10)
        w = oos_share_weights(v, ROUTES, live)
        plain = fit_thresholds(vd, v, target_misroute=target, weights=w)
        crossed, cf = fit_cross_fitted(vd, v, target_misroute=target, weights=w)
        assert crossed.target == target and cf.internal <= target
        assert crossed.notes[0].startswith("cross-fitted over 5 folds")
        p = misroute_at_share(test_d, test, plain.thresholds(), ROUTES, live)
        c = misroute_at_share(test_d, test, crossed.thresholds(), ROUTES, live)
        assert p is not None and c is not None
        plain_mean += p / 6
        plain_gap += (p - target) / 6
        crossed_gap += (c - target) / 6
    assert plain_mean > target + 0.005, "the plain fit is optimistic on fresh rows"
    assert abs(crossed_gap) < abs(plain_gap) / 2


def test_an_unreachable_target_is_reported_not_chased() -> None:
    """In-scope rows routed wrong as often at every score: no threshold meets 1% on held-out
    rows, so the fit keeps the target itself and says what to expect."""
    vd, v = sample(800, 0.5, seed=3)
    cf = cross_fit_target(vd, v, target=0.01, folds=4)
    assert not cf.reachable and cf.expected > 0.01
    assert cf.internal <= 0.01
    assert "not met on held-out rows" in cf.describe()
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_fit_target(vd, v, target=0.05, folds=1)


def test_cli_fit_cross_fit(strict_set: tuple[Path, Path, Path],  # noqa: F811
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routes, index, _ = strict_set
    shutil.copytree(index, tmp_path / "index")
    data = tmp_path / "valid.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{lbl}\n' for t, lbl in VALID * 3)
                    + "what is the capital of peru,oos\nhow tall is mount everest,oos\n")
    args = ["fit", "--data", str(data), "--routes", str(routes), "--index",
            str(tmp_path / "index"), "--target-misroute", "0.1", "--dry-run"]
    assert main([*args, "--cross-fit", "3", "--oos-share", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "note: cross-fitted over 3 folds" in out and "target 10.0%" in out
    assert main([*args, "--cross-fit", "1"]) == 2
    assert "--cross-fit needs at least 2 folds" in capsys.readouterr().err
    assert main([*args, "--cross-fit", "3", "--outcomes"]) == 2
    assert "not on --outcomes" in capsys.readouterr().err
