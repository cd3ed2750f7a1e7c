"""Cost-quality metrics, the outcome-learned quality predictor and `semroute outcomes eval`.

Metrics are checked on small tables whose answer is known by hand (RouteLLM's definitions);
the predictor runs on real FAISS, the evaluation on the real encoder."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from semroute.errors import DataError
from semroute.outcomes import (
    KnnSettings,
    QualityPredictor,
    apgr,
    cpt,
    frontier,
    operating_points,
    pgr,
    text_features,
    threshold_curve,
)
from semroute.outcomes.metrics import Curve
from semroute.quality.cost_quality import cost_matrix, evaluate_outcomes, fold_ids

GSM8K = Path("/work/shared/data/routellm_evals/gsm8k_mixtral_vs_gpt4.csv")


def two_model_rows(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Weak right on 60%, strong right wherever weak is and on half of the rest (q 0.8)."""
    rng = np.random.default_rng(seed)
    weak = (rng.random(n) < 0.6).astype(float)
    strong = np.where(weak == 1, 1.0, (rng.random(n) < 0.5).astype(float))
    return weak, strong


# ------------------------------------------------------------------ metrics


def test_pgr_is_zero_at_the_weak_model_one_at_the_strong_and_undefined_without_a_gap() -> None:
    assert pgr(0.6, 0.6, 0.8) == 0.0
    assert pgr(0.8, 0.6, 0.8) == pytest.approx(1.0)
    assert pgr(0.7, 0.6, 0.8) == pytest.approx(0.5)
    assert pgr(0.7, 0.7, 0.7) is None


def test_an_oracle_router_recovers_the_whole_gap_with_few_strong_calls() -> None:
    weak, strong = two_model_rows()
    gain = strong - weak  # the oracle prefers exactly the rows only the strong model gets right
    curve = threshold_curve(gain, weak, strong)
    a = apgr(curve, weak.mean(), strong.mean())
    assert a is not None and a > 0.85
    share_needed = float(gain.mean())  # the rows the strong model wins: ~20%
    c50 = cpt(curve, weak.mean(), strong.mean(), 0.5)
    assert c50 is not None and c50 <= share_needed + 0.1


def test_a_random_router_has_apgr_near_one_half_and_cpt_near_the_target() -> None:
    weak, strong = two_model_rows()
    rng = np.random.default_rng(1)
    values = []
    for _ in range(20):
        curve = threshold_curve(rng.random(weak.size), weak, strong)
        values.append(apgr(curve, weak.mean(), strong.mean()))
    assert np.mean(values) == pytest.approx(0.5, abs=0.03)
    curve = threshold_curve(rng.random(weak.size), weak, strong, bins=None)
    c80 = cpt(curve, weak.mean(), strong.mean(), 0.8)
    assert c80 == pytest.approx(0.8, abs=0.1)


def test_the_curve_uses_routellm_quantile_thresholds_from_all_strong_to_all_weak() -> None:
    weak, strong = two_model_rows(100)
    curve = threshold_curve(np.arange(100.0), weak, strong)
    assert len(curve.cost) == 11  # 10 bins: thresholds at the 0%, 10%, ..., 100% quantiles
    assert curve.cost[0] == 0.0 and curve.cost[-1] == 1.0
    assert curve.quality[0] == weak.mean() and curve.quality[-1] == strong.mean()


def test_apgr_of_a_hand_made_curve() -> None:
    # quality rises from 0.5 to 0.9 at 50% strong calls and stays: area 0.35 + 0.45 = 0.8
    curve = Curve(np.array([0.0, 0.5, 1.0]), np.array([0.5, 0.9, 0.9]))
    assert apgr(curve, 0.5, 0.9) == pytest.approx((0.8 - 0.5) / 0.4)
    assert cpt(curve, 0.5, 0.9, 0.5) == pytest.approx(0.25)
    assert cpt(curve, 0.5, 0.9, 1.5) is None  # never reached


def test_equal_models_have_no_apgr_or_cpt() -> None:
    same = np.array([1.0, 0.0, 1.0, 0.0])
    curve = threshold_curve(np.arange(4.0), same, same)
    assert apgr(curve, 0.5, 0.5) is None
    assert cpt(curve, 0.5, 0.5, 0.5) is None


def test_threshold_curve_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="equal-length"):
        threshold_curve(np.zeros(3), np.zeros(3), np.zeros(2))


def test_operating_points_against_the_best_single_model() -> None:
    # three models; the middle one is as good as the best on the rows it is asked about
    actual = np.array([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    cost = np.tile([1.0, 2.0, 10.0], (4, 1))
    curve = frontier(actual, actual, cost)  # perfect predictions: the oracle's frontier
    ops = operating_points(curve, actual, cost)
    assert ops.best_single == 2 and ops.best_single_quality == 1.0
    assert ops.best_single_cost == 10.0
    assert ops.quality == 1.0 and ops.cost == pytest.approx((1 + 2 + 10 + 1) / 4)
    assert ops.cost_at_95 is not None and ops.cost_at_95 <= ops.cost
    assert ops.saving_at_95 == pytest.approx(1 - ops.cost_at_95 / 10.0)


# ------------------------------------------------------------------ predictor


def clustered(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two clusters of unit vectors: the weak model fails on cluster B, the strong never."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8, dtype=np.float32)[:2]
    label = rng.integers(0, 2, n)
    vecs = centres[label] + 0.1 * rng.standard_normal((n, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = np.stack([(label == 0).astype(float), np.ones(n)], axis=1)
    return vecs.astype(np.float32), scores


def test_predictor_learns_where_the_weak_model_fails_and_shows_its_neighbours() -> None:
    vecs, scores = clustered()
    model = QualityPredictor(vecs[:300], scores[:300], ["weak", "strong"],
                             settings=KnnSettings(k=10))
    pred = model.predict(vecs[300:])
    truth = scores[300:, 0]
    assert np.all((pred.quality[:, 0] > 0.5) == (truth == 1))
    assert np.allclose(pred.quality[:, 1], 1.0)
    assert pred.support.shape == (100, 2) and np.allclose(pred.support, 10)
    why = pred.explain(0)
    assert set(why["quality"]) == {"weak", "strong"}  # type: ignore[arg-type]
    assert len(why["neighbours"]) == 5  # type: ignore[arg-type]


def test_missing_scores_do_not_count_and_the_prior_shrinks_to_the_mean() -> None:
    vecs, scores = clustered(50)
    scores[:, 0] = np.nan  # the weak model has no outcomes at all
    model = QualityPredictor(vecs, scores, settings=KnnSettings(k=5, prior=2.0))
    pred = model.predict(vecs[:3])
    assert np.all(pred.support[:, 0] == 0)
    assert np.allclose(pred.quality[:, 0], 0.0)  # no evidence: the (empty) mean, 0


def test_text_features_count_numbers_and_length() -> None:
    f = text_features(["I have 3 apples and 12 pears.", ""])
    assert f.shape == (2, 9)
    assert f[0, 2] == 2 and f[1].sum() == 0


def test_a_predictor_built_with_texts_needs_the_query_texts() -> None:
    vecs, scores = clustered(40)
    texts = [f"question {i} costs ${i}" for i in range(40)]
    model = QualityPredictor(vecs, scores, texts=texts)
    with pytest.raises(ValueError, match="texts"):
        model.predict(vecs[:2])
    assert model.predict(vecs[:2], texts[:2]).quality.shape == (2, 2)


# ------------------------------------------------------------------ evaluation


@dataclass
class Table:
    source: str
    texts: list[str]
    models: list[str]
    scores: np.ndarray
    costs: np.ndarray | None = None


def test_folds_are_seeded_balanced_and_keep_groups_together() -> None:
    f = fold_ids(103, 5, seed=3)
    assert sorted(np.bincount(f)) == [20, 20, 21, 21, 21]
    assert np.array_equal(f, fold_ids(103, 5, seed=3))
    groups = [i // 2 for i in range(20)]
    g = fold_ids(20, 5, seed=0, groups=groups)
    assert all(g[i] == g[i + 1] for i in range(0, 20, 2))


def test_without_costs_the_cost_is_the_strong_call_share_or_the_rank() -> None:
    scores = np.array([[0.0, 1.0], [1.0, 1.0]])
    cost, unit = cost_matrix(scores, None)
    assert unit == "strong_share" and cost.tolist() == [[0.0, 1.0], [0.0, 1.0]]
    cost3, unit3 = cost_matrix(np.array([[0.9, 0.1, 0.5]]), None)
    assert unit3 == "quality_rank" and cost3.tolist() == [[1.0, 0.0, 0.5]]
    dollars, unit_usd = cost_matrix(scores, np.array([[1.0, np.nan], [3.0, 4.0]]))
    assert unit_usd == "usd" and dollars.tolist() == [[1.0, 4.0], [3.0, 4.0]]


def test_evaluation_beats_random_where_the_weak_model_fails_predictably() -> None:
    vecs, scores = clustered(300)
    texts = ["a question"] * 300
    report = evaluate_outcomes(Table("clusters", texts, ["weak", "strong"], scores),
                               vectors=vecs, folds=5, seed=0)
    # half the rows need the strong model, so even the oracle's APGR is 0.75 (quality climbs
    # from 0.5 to 1.0 over the first 50% of strong calls, then stays)
    assert report.apgr is not None and 0.7 < report.apgr <= 0.75 + 1e-9
    assert report.cpt50 is not None and report.cpt50 < 0.3
    assert report.quality == 1.0 and report.cost_at_95 is not None and report.cost_at_95 < 0.5
    d = report.to_dict()
    for key in ("apgr", "cpt50", "cpt80", "quality", "cost", "best_single_quality",
                "best_single_cost", "cost_at_95", "saving_at_95"):
        assert key in d


def test_evaluation_refuses_one_model_and_too_few_rows() -> None:
    vecs, scores = clustered(10)
    with pytest.raises(DataError, match="at least 2 models"):
        evaluate_outcomes(Table("one", ["q"] * 10, ["a"], scores[:, :1]), vectors=vecs)
    with pytest.raises(DataError, match="folds"):
        evaluate_outcomes(Table("few", ["q"] * 10, ["a", "b"], scores), vectors=vecs, folds=20)


@pytest.mark.skipif(not GSM8K.exists(), reason="shared data not mounted")
def test_cli_outcomes_eval_json_on_the_real_gsm8k_file() -> None:
    out = subprocess.run([sys.executable, "-m", "semroute.cli", "outcomes", "eval", "--data",
                          str(GSM8K), "--folds", "5", "--seed", "0", "--json"],
                         capture_output=True, text=True, timeout=600, check=True)
    d = json.loads(out.stdout)
    for key in ("apgr", "cpt50", "cpt80", "quality", "cost", "best_single_quality",
                "best_single_cost", "cost_at_95", "saving_at_95"):
        assert key in d
    assert d["rows"] == 1307  # contaminated rows left out
    assert d["apgr"] > 0.6 and d["cpt50"] < 0.45
