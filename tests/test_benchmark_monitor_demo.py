"""A tiny run of benchmarks/monitor_demo.py: real dispatches on the example routes against its
loopback upstream, journalled, shadow-evaluated and given feedback by semroute itself,
restamped over a week, and `semroute monitor` on the result: the report and the run's
summary are written."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from benchmarks import monitor_demo


def test_a_short_demo_week_produces_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results" / "monitor_demo"
    assert monitor_demo.main(["--requests", "60", "--work", str(tmp_path / "work"),
                              "--out", str(out)]) == 0
    report = json.loads((out / "monitor.json").read_text())
    (trace,) = report["traces"]
    assert trace["requests"] == 60 and trace["bad"] == 1, "the demo appends one cut line"
    lines = (tmp_path / "work" / "trace.jsonl").read_text().splitlines()[:-1]
    records = [json.loads(line) for line in lines]
    answered = [r for r in records if "kind" not in r and not r["error"]]
    assert report["store"]["requests"] == len(answered) > 50, "the journal has every answer"
    shadow = [r for r in records if r.get("kind") == "shadow"]
    assert report["store"]["shadow"] == len(shadow) > 0, "a fifth is shadow-evaluated"
    assert all(r["ts"] < "2026-11-30T00:01" for r in records), "every line is on the calendar"
    assert report["since"] == "2026-11-23T00:00:00Z" and len(report["buckets"]) == 14
    assert report["savings"]["baseline"] == "powerful" and report["savings"]["priced"] == 60
    with Image.open(out / "methods.png") as im:
        im.verify()
    summary = (tmp_path / "results" / "monitor_demo.md").read_text()
    assert "| requests dispatched | 60 |" in summary
