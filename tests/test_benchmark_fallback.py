"""The fallback benchmark's index-side baseline: each query the classifier would get routed to
the index's own top-1 route instead, exact over all of them, and `--n 0` (no LLM, no
llama-server) on a tiny real route set."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.fallback import main  # noqa: E402
from benchmarks.fallback_index import index_side, index_table  # noqa: E402
from semroute.quality import LabelledQuery  # noqa: E402
from semroute.routing.decision import Candidate, Decision  # noqa: E402


def decision(route: str | None, top: str, score: float) -> Decision:
    """An index-only decision whose best-scoring route is `top` (routed to `route`)."""
    return Decision(query="q", route=route, method="index" if route else "undecided",
                    score=score, margin=0.0, threshold=0.5, margin_threshold=0.05,
                    reason="test", candidates=(Candidate(top, score, ()),
                                               Candidate("other", score / 2, ())),
                    timings_ms={})


# Eight queries: 5 in scope, 3 out of scope; the classifier (floor 0.5) would get rows 2, 3
# and 5; the LLM's sample is rows 3 and 5.
ROWS = [("weather", decision("weather", "weather", 0.9)),   # 0 routed, right
        ("weather", decision("music", "music", 0.8)),       # 1 routed, wrong
        ("music", decision(None, "music", 0.6)),            # 2 sent, top-1 right
        ("music", decision(None, "weather", 0.55)),         # 3 sent, top-1 wrong (sampled)
        ("alarm", decision(None, "alarm", 0.3)),            # 4 below the floor: kept undecided
        ("oos", decision(None, "alarm", 0.7)),              # 5 sent: top-1 misroutes it
        ("oos", decision(None, "music", 0.2)),              # 6 below the floor: rejected
        ("oos", decision("weather", "weather", 0.9))]       # 7 routed: misrouted
SENT, SAMPLE = [2, 3, 5], [3, 5]


def test_top1_on_sent_counts_each_sent_query_by_the_index_best_route() -> None:
    rows = [LabelledQuery(f"q{i}", label) for i, (label, _) in enumerate(ROWS)]
    side = index_side([d for _, d in ROWS], rows, SENT, SAMPLE)
    assert side == {
        "index_in_scope_acc": 1 / 5,            # row 0
        "top1_in_scope_acc": 2 / 5,             # + row 2
        "top1_gain": 2 / 5 - 1 / 5,
        "sent_in_scope": 2, "top1_hits_on_sent": 1, "top1_acc_on_sent": 1 / 2,
        "index_oos_recall": 2 / 3,              # rows 5 and 6 left undecided
        "top1_oos_recall": 1 / 3,               # row 5 now misrouted
        "index_routed_share": 3 / 8, "top1_routed_share": 6 / 8,
        "sample_top1_hits": 0, "sample_top1_acc": 0.0,  # row 3: the only in-scope one sampled
    }
    table = index_table([{"dataset": "hand", "floor": 0.5, "sent_share": 3 / 8,
                          "valid_sent_share": 0.4, "index_side": side}])
    assert table.splitlines()[-1] == ("| hand | 0.500 | 37.5% (40.0%) | 20.0% | 40.0% | +20.0 "
                                      "| 50% (1/2) | 66.7% → 33.3% | 37.5% → 75.0% |")


def test_with_the_llm_top1_and_the_llm_are_compared_on_the_same_sample() -> None:
    rows = [LabelledQuery(f"q{i}", label) for i, (label, _) in enumerate(ROWS)]
    side = index_side([d for _, d in ROWS], rows, SENT, SAMPLE)
    r = {"dataset": "hand", "floor": None, "sent_share": 3 / 8, "valid_sent_share": 0.4,
         "index_side": side, "sample": 2, "sample_in_scope": 1,
         "classifier_in_scope_acc": 1.0, "classifier_in_scope_ci": [0.2065, 1.0],
         "with_fallback_in_scope_acc": 0.6,
         "outcomes": [{"gold": "music", "correct": True, "index_top1_correct": False},
                      {"gold": None, "correct": True, "index_top1_correct": False}]}
    head, _, line = index_table([r]).splitlines()
    assert head.endswith("| on the LLM's sample (in-scope): top-1 acc (95% CI) | "
                         "LLM acc (95% CI) | in-scope acc + LLM (sampled estimate) | "
                         "in-scope sampled right: both / top-1 only / LLM only |")
    assert line.endswith("| 0% (0%–79%; 0/1) | 100% (21%–100%) | 60.0% | 0 / 0 / 1 |")
    assert "| — | 37.5% (40.0%) |" in line  # no floor


INTENTS = {
    "weather": ["what's the weather today", "will it rain tomorrow", "is it sunny outside",
                "how hot is it right now", "forecast for the weekend", "do I need an umbrella",
                "temperature in paris", "is it going to snow tonight", "how cold is it",
                "will there be a storm", "what's the humidity", "is it windy today"],
    "music": ["play some jazz", "put on my workout playlist", "skip this song",
              "play the latest album by adele", "turn the music up", "shuffle my favourites",
              "play something relaxing", "next track please", "pause the music",
              "play my rock playlist", "repeat this song", "play classical music"],
    "alarm": ["wake me up at 7", "set an alarm for 6 am", "cancel my morning alarm",
              "snooze the alarm", "alarm for ten minutes from now", "remove all my alarms",
              "alarm at noon tomorrow", "change my alarm to 8", "set a wake up alarm",
              "turn off my alarm", "list my alarms", "alarm every weekday at 6"],
}
VALID = {"weather": ["will it be rainy this evening"], "music": ["play a song by queen"],
         "alarm": ["set an alarm for 5 pm"], "oos": ["how do I bake bread"]}
# Six clear paraphrases the index routes right; five terse ones it leaves undecided (score
# below its threshold), whose best route is right but for "rise and shine" (music); two
# out-of-scope queries it leaves undecided.
TEST = {"weather": ["is it raining in london", "weather forecast for monday", "sunscreen",
                    "bring a coat?"],
        "music": ["play some blues", "turn up the volume of this song", "louder"],
        "alarm": ["wake me at six thirty", "delete my alarm for tomorrow", "6:30",
                  "rise and shine"],
        "oos": ["what is the capital of peru", "tell me a joke"]}


def write_split(path: Path, rows: dict[str, list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([t, label] for label, texts in rows.items() for t in texts)


def tiny_set(tmp_path: Path) -> Path:
    """The three-intent set as a dataset folder (train/valid/test CSVs) named `tiny`."""
    data = tmp_path / "tiny"
    data.mkdir()
    write_split(data / "train.csv", INTENTS)
    write_split(data / "valid.csv", VALID)
    write_split(data / "test.csv", TEST)
    return data


def test_n0_writes_the_index_side_only_without_an_llm(tmp_path: Path) -> None:
    data = tiny_set(tmp_path)
    out = tmp_path / "results"
    # No floor: every undecided query is sent, so with top-1 on them every query is routed
    # and "+ top-1 on sent" is the index's plain top-1 accuracy over all in-scope queries.
    assert main(["--n", "0", "--no-floor", "--datasets", str(data), "--out", str(out),
                 "--work", str(tmp_path / "work")]) == 0
    saved = json.loads((out / "fallback_top1.json").read_text(encoding="utf-8"))
    (r,) = saved["results"]
    side = r["index_side"]
    assert r["dataset"] == "tiny" and r["sample"] == 0 and "outcomes" not in r
    assert "classifier_in_scope_acc" not in r and "model" not in r
    assert (r["undecided"], r["sent"], r["floor"]) == (7, 7, None)
    assert side["index_in_scope_acc"] == r["index_in_scope_acc"] == 6 / 11
    assert (side["sent_in_scope"], side["top1_hits_on_sent"]) == (5, 4)
    assert side["top1_in_scope_acc"] == 10 / 11  # = the plain top-1 accuracy, with no floor
    assert side["top1_acc_on_sent"] == 4 / 5
    assert (side["index_oos_recall"], side["top1_oos_recall"]) == (1.0, 0.0)
    assert (side["index_routed_share"], side["top1_routed_share"]) == (6 / 13, 1.0)
    md = (out / "fallback_top1.md").read_text(encoding="utf-8")
    assert md.startswith("# Fallback baseline: index only vs the index's top-1")
    assert "no LLM (--n 0)" in md
    assert ("| tiny | — | 53.8% (25.0%) | 54.5% | 90.9% | +36.4 | 80% (4/5) | 100.0% → 0.0% "
            "| 46.2% → 100.0% |") in md
    assert "LLM acc" not in md and "ms/call" not in md


def test_top1_is_scored_on_the_queries_an_earlier_llm_run_sampled(tmp_path: Path) -> None:
    data = tiny_set(tmp_path)
    args = ["--n", "0", "--no-floor", "--datasets", str(data), "--work", str(tmp_path / "w")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    # An LLM run's json holding two sent queries, one in scope (the LLM got it wrong, top-1
    # gets it) and one out of scope.
    sent_texts = ["louder", "tell me a joke"]
    prior = {"results": [{
        "dataset": "tiny", "split": "test", "sample": 2, "sample_in_scope": 1,
        "classifier_in_scope_acc": 0.0, "classifier_in_scope_ci": [0.0, 0.7935],
        "with_fallback_in_scope_acc": 0.5, "with_fallback_oos_recall": 0.25,
        "outcomes": [{"text": t, "correct": t != "louder"} for t in sent_texts]}]}
    llm = tmp_path / "llm.json"
    llm.write_text(json.dumps(prior), encoding="utf-8")
    assert main([*args, "--out", str(tmp_path / "b"), "--llm-results", str(llm)]) == 0
    (r,) = json.loads((tmp_path / "b" / "fallback_top1.json").read_text("utf-8"))["results"]
    assert r["sample"] == 2 and r["sample_in_scope"] == 1
    assert (r["index_side"]["sample_top1_hits"], r["index_side"]["sample_top1_acc"]) == (1, 1.0)
    md = (tmp_path / "b" / "fallback_top1.md").read_text(encoding="utf-8")
    assert "| 100% (21%–100%; 1/1) | 0% (0%–79%) | 50.0% (OOS recall 25.0%) | 0 / 1 / 0 |" in md
    assert r["sample_outcomes"] == [
        {"text": "louder", "gold": "music", "index_top1": "music", "index_top1_correct": True,
         "llm_correct": False},
        {"text": "tell me a joke", "gold": None, "index_top1": "music",
         "index_top1_correct": False, "llm_correct": True}]
    routed = {"text": "play some blues", "correct": True}  # the index routed it: not sent
    prior["results"][0]["outcomes"].append(routed)
    llm.write_text(json.dumps(prior), encoding="utf-8")
    with pytest.raises(ValueError, match="1 queries the LLM saw on tiny are not sent here"):
        main([*args, "--out", str(tmp_path / "c"), "--llm-results", str(llm)])
