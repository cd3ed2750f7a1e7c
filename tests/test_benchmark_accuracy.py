"""Smoke test of the accuracy benchmark's core on a tiny synthetic CSV (no peer, k=5)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.accuracy import build_config, plan, run_benchmark  # noqa: E402
from benchmarks.datasets import load_dataset  # noqa: E402
from semroute.config import utterance_key  # noqa: E402

INTENTS = {
    "weather": ["what's the weather today", "will it rain tomorrow", "is it sunny outside",
                "how hot is it right now", "forecast for the weekend", "do I need an umbrella",
                "temperature in paris", "is it going to snow tonight"],
    "music": ["play some jazz", "put on my workout playlist", "skip this song",
              "play the latest album by adele", "turn the music up", "shuffle my favourites",
              "play something relaxing", "next track please"],
    "alarm": ["wake me up at 7", "set an alarm for 6 am", "cancel my morning alarm",
              "snooze the alarm", "alarm for ten minutes from now", "remove all my alarms",
              "alarm at noon tomorrow", "change my alarm to 8"],
}
OOS = ["what is the capital of peru", "tell me a joke", "how do I bake bread",
       "translate hello to french", "who won the game last night"]


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for label, texts in INTENTS.items():
            w.writerows((t, label) for t in texts)
        w.writerows((t, "oos") for t in OOS)
        w.writerow(["What's the weather  today", "weather"])  # a duplicate of a train row
    return path


def test_loader_splits_and_pools(tiny_csv: Path) -> None:
    ds = load_dataset(str(tiny_csv))
    assert sorted(ds.routes) == sorted(INTENTS)
    assert ds.test and ds.valid
    pool_keys = {utterance_key(t) for texts in ds.pools.values() for t in texts}
    # oos rows are never utterances; validation and test rows never overlap the pools
    # (the near-duplicate "What's the weather  today" included: compared as semroute does)
    assert not pool_keys & {utterance_key(t) for t in OOS}
    assert not pool_keys & {utterance_key(q.text) for q in ds.valid + ds.test}
    five = ds.utterances(5, seed=1)
    assert all(len(v) == min(5, len(ds.pools[r])) for r, v in five.items())
    # sets are nested across k for the same seed (rebuilds reuse cached embeddings)
    three = ds.utterances(3, seed=1)
    assert all(three[r] == five[r][:3] for r in ds.routes)
    assert plan([5, 10, 20, None], 3)[:4] == [(None, 0), (20, 0), (10, 0), (5, 0)]


def test_benchmark_runs_on_a_tiny_csv(tiny_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = build_config(["--data", str(tiny_csv), "--k", "5", "--seeds", "2", "--no-peer",
                        "--target-misroute", "0.03,0.1",
                        "--work", str(tmp_path / "work"), "--out", str(out)])
    res = run_benchmark(cfg, log=lambda _msg: None)

    assert set(res) >= {"meta", "datasets", "summary", "runs"}
    assert res["meta"]["machine"]["cores"] and res["meta"]["versions"]["semroute-llm"]
    assert list(res["datasets"]) == ["tiny"]
    systems = {r["system"] for r in res["runs"]}
    assert systems == {"semroute", "semroute+fit@3%", "semroute+fit@10%"}
    assert len(res["runs"]) == 3 * 2  # 3 systems x 2 seeds
    for run in res["runs"]:
        m = run["metrics"]
        for key in ("in_scope_accuracy", "top1_accuracy", "oos_recall", "coverage",
                    "misroute_rate"):
            assert m[key] is not None and 0.0 <= m[key] <= 1.0, (key, m[key])
    for row in res["summary"]:
        assert row["seeds"] == 2
        acc = row["metrics"]["in_scope_accuracy"]
        assert 0.0 <= acc["mean"] <= 1.0 and acc["std"] is not None
    # the route set was built for real, as route files
    assert (tmp_path / "work" / "tiny" / "torch" / "routes" / "weather.yaml").exists()
    assert json.loads((out / "accuracy.json").read_text())["runs"]
    md = (out / "accuracy.md").read_text()
    assert "| tiny | 5 | semroute |" in md and "Machine:" in md and "Command:" in md


def test_oos_examples_add_semroute_oos_rows(tmp_path: Path) -> None:
    """With a validation split, `--oos-examples N` reruns the same route set with N train
    rows labelled oos as its out-of-scope file (never as utterances, never in validation)."""
    data = tmp_path / "tinyoos"
    data.mkdir()
    splits: dict[str, list[tuple[str, str]]] = {
        "train": [(t, label) for label, texts in INTENTS.items() for t in texts[:6]]
        + [(t, "oos") for t in OOS[:4]],
        "valid": [(INTENTS[label][6], label) for label in INTENTS] + [(OOS[4], "oos")],
        "test": [(INTENTS[label][7], label) for label in INTENTS]
        + [("how do I make bread at home", "oos")],
    }
    for name, rows in splits.items():
        with (data / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "label"), *rows])
    assert load_dataset(str(data)).train_oos == OOS[:4]
    cfg = build_config(["--data", str(data), "--k", "5", "--seeds", "1", "--no-peer",
                        "--backends", "onnx-int8", "--oos-examples", "3",
                        "--target-misroute", "0.1", "--oos-recall", "1.0",
                        "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    res = run_benchmark(cfg, log=lambda _msg: None)
    systems = {r["system"]: r for r in res["runs"]}
    assert set(systems) == {"semroute", "semroute+fit@10%", "semroute+recall@100%",
                            "semroute+oos", "semroute+oos+fit@10%", "semroute+oos+recall@100%"}
    recall = systems["semroute+oos+recall@100%"]["info"]["fit"]
    assert recall["oos_recall_goal"] == 1.0 and "OOS recall 100.0%" in recall["message"]
    md = (tmp_path / "out" / "accuracy.md").read_text()
    assert md.index("| semroute+fit@10% |") < md.index("| semroute+recall@100% |") \
        < md.index("| semroute+oos |") < md.index("| semroute+oos+recall@100% |")
    assert systems["semroute+oos"]["info"]["oos_examples"] == 3
    assert systems["semroute"]["info"]["oos_examples"] == 0
    routes = tmp_path / "work" / "tinyoos" / "onnx-int8" / "routes"
    assert len((routes / "oos.txt").read_text().splitlines()) == 3
