"""Smoke test of the conversation benchmark on tiny synthetic SGD-shaped and MT-Bench-shaped
files (k=3, one seed, a few timing samples)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.conversations import (  # noqa: E402
    build_config,
    mt_bench_questions,
    run_benchmark,
    sample,
    sgd_pools,
)

ROUTES = {
    "Weather": ["what's the weather today", "will it rain tomorrow", "is it sunny outside",
                "forecast for the weekend"],
    "Music": ["play some jazz", "put on my workout playlist", "play the latest album by adele",
              "shuffle my favourites"],
    "Alarm": ["wake me up at 7", "set an alarm for 6 am", "cancel my morning alarm",
              "snooze the alarm"],
}
DIALOGUE = [("user", "will it be windy in paris tomorrow", "Weather"),
            ("assistant", "It will be calm.", ""), ("user", "and on sunday?", "Weather"),
            ("assistant", "Sunny.", ""), ("user", "now play some rock music", "Music"),
            ("assistant", "Playing.", ""), ("user", "louder please", "Music")]


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    sgd = tmp_path / "sgd"
    sgd.mkdir()
    with (sgd / "routes_train.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for label, texts in ROUTES.items():
            w.writerows((t, label) for t in texts)
        w.writerows([("thanks a lot", "Music"), ("thanks a lot", "Alarm")])  # ambiguous
    with (sgd / "conversations_dev.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["conversation_id", "turn", "speaker", "text", "label", "intent"])
        for c in range(6):  # dialogues of 7 + 6c turns, so some reach 20 messages
            turns = DIALOGUE + [("assistant", "Ok.", ""), ("user", "and again", "Music")] * (
                3 * c)
            w.writerows((f"d{c}", i, s, t, lab, "x") for i, (s, t, lab) in enumerate(turns))
    mt = tmp_path / "mt.csv"
    with mt.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question_id", "category", "turn", "model", "score", "judge",
                    "question_turns"])
        for qid in range(8):
            cat = ("math", "writing")[qid % 4 // 2]
            first = (f"solve equation number {qid}" if cat == "math"
                     else f"write a poem about topic {qid}")
            turns = json.dumps([first, "now make it shorter"])
            w.writerow([qid, cat, 1, "m", 5, "j", turns])
            w.writerow([qid, cat, 2, "m", 5, "j", turns])  # duplicate question: deduped
    return sgd, mt


def test_pools_and_questions(data: tuple[Path, Path]) -> None:
    sgd, mt = data
    pools, ambiguous = sgd_pools(sgd / "routes_train.csv")
    assert ambiguous == 1 and "thanks a lot" not in [t for v in pools.values() for t in v]
    assert sample(pools, 2, 0) == sample(pools, 2, 0)
    assert all(len(v) == 2 for v in sample(pools, 2, 1).values())
    qs = mt_bench_questions(mt)
    assert [q[0] for q in qs] == list(range(8)) and qs[0][2][1] == "now make it shorter"


def test_quick_benchmark_runs(data: tuple[Path, Path], tmp_path: Path) -> None:
    sgd, mt = data
    out = tmp_path / "out"
    cfg = build_config(["--quick", "--sgd", str(sgd), "--mt-bench", str(mt), "--k", "3",
                        "--timing-samples", "4", "--work", str(tmp_path / "work"),
                        "--out", str(out)])
    res = run_benchmark(cfg, log=lambda _m: None)
    rules = res["meta"]["rules"]
    assert rules[:2] == ["last_turn_only", "previous_glued"]
    rows = {(r["data"], r["rule"]) for r in res["summary"]}
    assert rows == {(d, r) for d in ("sgd", "mt-bench") for r in rules}
    for row in res["summary"]:
        for key in ("first_turn_accuracy", "followup_accuracy", "accuracy"):
            assert 0.0 <= row[key]["mean"] <= 1.0
    assert res["mt_bench"]["counts"] == {"questions": 8, "first_turns": 8, "followup_turns": 8}
    assert res["timing"]["single_p50_ms"] > 0
    md = (out / "conversations-quick.md").read_text()
    assert "Machine:" in md and "Command:" in md and "| sgd | 3 |" in md
    assert "semantic-router" in md and "## Against the aims" in md
    assert json.loads((out / "conversations-quick.json").read_text())["summary"]


def test_the_tuned_and_held_out_halves_are_reported_apart(data: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    sgd, _ = data
    out = tmp_path / "out"
    cfg = build_config(["--quick", "--sgd", str(sgd), "--mt-bench", "none", "--k", "3",
                        "--tuned", "3", "--timing-samples", "4", "--work",
                        str(tmp_path / "work"), "--out", str(out)])
    res = run_benchmark(cfg, log=lambda _m: None)
    parts = {(r["part"], r["rule"]) for r in res["by_part"]}
    assert parts == {(p, r) for p in ("tuned", "held_out") for r in res["meta"]["rules"]}
    run = res["runs"][0]
    whole, halves = run["counts"], run["by_part"]
    for rule in res["meta"]["rules"]:  # the halves partition the user turns
        acc = [halves[p][rule]["accuracy"] for p in ("tuned", "held_out")]
        assert min(acc) <= run["by_rule"][rule]["accuracy"] <= max(acc)
    assert whole["conversations"] == 6 and res["meta"]["tuned_conversations"] == 3
    md = (out / "conversations-quick.md").read_text()
    assert "held out (the rest)" in md and "sgd held-out half k=3" in md
