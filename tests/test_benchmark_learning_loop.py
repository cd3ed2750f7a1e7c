"""Smoke test of the learning-loop simulation on a tiny synthetic stream: the real suggest
code path runs between windows, its patch is applied to real route files, the index is
rebuilt, and the results (table, JSON, PNG) are written."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.learning_loop import main  # noqa: E402

INTENTS = {
    "weather": ["what's the weather today", "will it rain tomorrow", "is it sunny outside",
                "how hot is it right now", "forecast for the weekend", "do I need an umbrella",
                "temperature in paris", "is it going to snow tonight", "how cold is it",
                "any storms expected this week", "what's the humidity", "is it windy",
                "weather in london tomorrow", "will it be foggy in the morning",
                "should I wear a coat today"],
    "music": ["play some jazz", "put on my workout playlist", "skip this song",
              "play the latest album by adele", "turn the music up", "shuffle my favourites",
              "play something relaxing", "next track please", "play rock music",
              "pause the song", "who sings this song", "play my road trip mix",
              "louder please", "play classical music for studying", "repeat this track"],
    "alarm": ["wake me up at 7", "set an alarm for 6 am", "cancel my morning alarm",
              "snooze the alarm", "alarm for ten minutes from now", "remove all my alarms",
              "alarm at noon tomorrow", "change my alarm to 8", "what alarms do I have",
              "set a wake up call for 5:30", "turn off the alarm", "alarm every weekday at 7",
              "delete the 9 am alarm", "I need an alarm in an hour", "move my alarm later"],
}


def test_the_simulation_adds_utterances_between_windows_and_writes_its_results(
        tmp_path: Path) -> None:
    data = tmp_path / "tiny.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for label, texts in INTENTS.items():
            w.writerows([t, label] for t in texts)
    out = tmp_path / "results"
    assert main(["--data", str(data), "--start", "3", "--every", "4", "--per-route", "2",
                 "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    res = json.loads((out / "learning_loop_tiny.json").read_text())
    rounds = res["rounds"]
    assert len(rounds) >= 2 and sum(r["loop"]["queries"] for r in rounds) == res["stream"]
    added = sum(r["suggest"]["added"] for r in rounds if "suggest" in r)
    assert added >= 1, "undecided queries of the first window became utterances"
    assert rounds[-1]["utterances"]["total"] == rounds[0]["utterances"]["total"] + added
    routes = tmp_path / "work" / "tiny" / "routes"
    weather = (routes / "weather.yaml").read_text()
    assert weather.startswith("# weather: started with 3 utterances"), "the comment survives"
    assert len(yaml.safe_load(weather)["utterances"]) >= 3
    assert (out / "learning_loop_tiny.png").stat().st_size > 1000
    md = (out / "learning_loop_tiny.md").read_text()
    assert "| round |" in md and "python -m benchmarks.learning_loop --data" in md
