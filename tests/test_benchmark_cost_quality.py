"""Smoke test of the cost-quality benchmark on tiny synthetic routellm and routerarena CSVs
(real encoder, real FAISS; one fold seed, no nested CV, no timing)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.cost_quality import main, stats  # noqa: E402
from benchmarks.cost_quality_gates import (  # noqa: E402
    arithmetic_holds,
    cascade,
    has_final_number,
    no_hedging,
    states_answer,
)

EASY = "What is {a} plus {b}?"
HARD = "A train leaves at {a} km/h and another at {b} km/h; after 3 hours and 20% delay, how far?"


@pytest.fixture
def sets(tmp_path: Path) -> dict[str, Path]:
    """Easy questions both models get right; hard ones only the strong model gets right."""
    gsm = tmp_path / "gsm8k.csv"
    with gsm.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "weak_correct", "strong_correct", "weak_response",
                    "strong_response", "contaminated"])
        for i in range(40):
            hard = i % 2 == 1
            text = (HARD if hard else EASY).format(a=i + 2, b=i + 5)
            answer = (f"{i + 2} + {i + 5} = {2 * i + 7}. The answer is {2 * i + 7}" if not hard
                      else f"Assuming {i} * 3 = {3 * i + 1}, I am not sure.")
            w.writerow([text, str(not hard), "True", answer, "The answer is 1", "False"])
    arena = tmp_path / "arena.csv"
    with arena.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["global_index", "source", "category", "question", "ground_truth", "metric",
                    "cheap_score", "cheap_cost", "dear_score", "dear_cost", "cheap_answer",
                    "dear_answer"])
        for i in range(40):
            hard = i % 2 == 1
            w.writerow([f"Q_{i}", "S", "C", (HARD if hard else EASY).format(a=i, b=i + 1), "1",
                        "accuracy", 0.0 if hard else 1.0, 0.0001, 1.0, 0.001, "x", "y"])
    return {"gsm8k": gsm, "routerarena": arena}


def test_gates_read_the_answer_text() -> None:
    good = "16 - 3 = 13. 13 - 4 = 9. 9 * 2 = 18. The answer is 18"
    assert has_final_number(good) and states_answer(good) and arithmetic_holds(good)
    assert no_hedging(good)
    assert not arithmetic_holds("9 * 2 = 19, so the answer is 19")
    assert not arithmetic_holds("no equations here")
    assert not no_hedging("I am not sure, but maybe 4")


def test_cascade_counts_precision_recall_and_cost() -> None:
    answers = ["2 + 2 = 4. The answer is 4", "2 + 2 = 5. The answer is 5"]
    rows = {r["gate"]: r for r in cascade(answers, np.array([1.0, 0.0]), np.array([1.0, 1.0]),
                                          weak_cost=0.05)}
    arith = rows["arithmetic holds"]
    assert arith["precision"] == 1.0 and arith["recall"] == 1.0
    assert arith["strong_calls"] == 0.5 and arith["quality"] == 1.0
    assert arith["cost"] == pytest.approx(0.55)
    assert rows["final number present"]["quality"] == 0.5  # passes both: never escalates


def test_stats_skip_missing_values() -> None:
    assert stats([0.5, None, 0.7])["mean"] == pytest.approx(0.6)
    assert stats([None])["mean"] is None


def test_benchmark_runs_on_tiny_sets(sets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["--seeds", "1", "--no-nested", "--out", str(out), "--name", "tiny",
                 "--set", f"gsm8k={sets['gsm8k']}", "--set", f"routerarena={sets['routerarena']}"])
    assert code == 0
    res = json.loads((out / "tiny.json").read_text())
    gsm = res["sets"]["gsm8k"]
    assert gsm["rows"] == 40 and gsm["weak"] == "weak" and gsm["strong"] == "strong"
    learned = gsm["systems"]["semroute (features + kNN)"]
    assert learned["apgr"]["mean"] > 0.6  # the hard questions are easy to tell apart
    assert {r["gate"] for r in gsm["cascade"]} >= {"arithmetic holds", "no hedging"}
    arena = res["routerarena"]
    assert arena["best_single"] == "dear" and arena["oracle_quality"] == 1.0
    assert arena["cost"]["mean"] < arena["model_cost"]["dear"]
    md = (out / "tiny.md").read_text()
    assert "| GSM8K | 40 | semroute (features + kNN) |" in md
    assert "*published*" in md and "python -m benchmarks.cost_quality" in md
    assert (out / "tiny_gsm8k.png").stat().st_size > 1000
    assert (out / "tiny_routerarena.png").exists()
