"""Smoke test of the latency benchmark on a tiny synthetic data folder: quick mode, one backend,
no peer; checks the result structure only (no timing assertions)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.latency import (  # noqa: E402
    build_config,
    parse_importtime,
    percentile,
    render_markdown,
    run_benchmark,
    write_results,
)
from benchmarks.latency_data import change_utterances, load_pools, make_route_set  # noqa: E402
from semroute.config import utterance_key  # noqa: E402

INTENTS = {
    "banking77": {
        "card_arrival": ["where is my new card", "my card has not arrived yet",
                         "how long does card delivery take", "still waiting on my card",
                         "when will my card come", "card not delivered"],
        "exchange_rate": ["what is the exchange rate today", "how much is a euro in dollars",
                          "which rate do you use for currency", "exchange rate for yen",
                          "is the exchange rate fair", "rate for pounds to euros"],
        "top_up_failed": ["my top up failed", "top up did not go through",
                          "why was my top-up declined", "cannot top up my account",
                          "top up keeps failing", "the top up was rejected"],
    },
    "hwu64": {
        "alarm_set": ["wake me up at seven", "set an alarm for 6 am", "alarm at noon tomorrow",
                      "alarm in ten minutes", "set my morning alarm", "new alarm for 5"],
        "music_play": ["play some jazz", "put on my playlist", "play the new adele album",
                       "play something relaxing", "start my workout music", "play rock"],
    },
    "snips": {
        "GetWeather": ["will it rain tomorrow", "weather in paris", "is it sunny outside",
                       "forecast for the weekend", "do I need an umbrella", "how cold is it"],
        "BookRestaurant": ["book a table for two", "reserve a restaurant tonight",
                           "table for four at eight", "book sushi for friday",
                           "reservation at an italian place", "get me a table downtown"],
    },
}
TESTS = ["has my card shipped", "euro rate please", "top up error", "alarm for 9 pm",
         "play the beatles", "rain in london", "book dinner for 3", "card arrival time",
         "dollar to euro", "my topup bounced", "weather tomorrow morning", "play jazz now",
         "book brunch saturday", "set alarm 6:30"]


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def tiny_data(root: Path) -> Path:
    for ds, intents in INTENTS.items():
        rows = [(t, lab) for lab, texts in intents.items() for t in texts]
        _write(root / ds / "train.csv", rows)
        first = next(iter(intents))
        _write(root / ds / "test.csv", [(t, first) for t in TESTS])
    _write(root / "hwu64" / "valid.csv", [("wake me at dawn", "alarm_set"),
                                          ("snooze it", "alarm_set")])
    return root


def test_route_sets_are_unique_and_deterministic(tmp_path: Path) -> None:
    pools = load_pools(tiny_data(tmp_path / "data"))
    assert len(pools.routes) == 3 + 1 + 2  # banking77 all, hwu64 every 4th label, snips all
    routes, counts = make_route_set(pools, 80)  # more than the 36 real texts: variants
    assert counts["real"] + counts["synthetic"] == 80 and counts["synthetic"] > 0
    keys = [utterance_key(t) for utts in routes.values() for t in utts]
    assert len(keys) == len(set(keys)) == 80
    assert make_route_set(pools, 80)[0] == routes
    assert not {utterance_key(q) for q in pools.queries} & set(keys)
    changed = change_utterances(routes, pools, 10)
    diff = sum(a != b for n in routes for a, b in zip(routes[n], changed[n], strict=True))
    assert diff == 10


def test_helpers() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([], 50) is None
    text = ("import time: self [us] | cumulative | imported package\n"
            "import time:       100 |        100 |   numpy.core\n"
            "import time:       300 |        400 | numpy\n"
            "import time:        50 |         50 | yaml\n")
    it = parse_importtime(text)
    assert it["by_package_ms"][0] == ["numpy", 0.4]
    assert it["outermost_ms"][0] == ["numpy", 0.4]


def test_quick_run_structure(tmp_path: Path) -> None:
    data = tiny_data(tmp_path / "data")
    out = tmp_path / "out"
    cfg = build_config(["--quick", "--sizes", "40", "--backends", "onnx-int8", "--no-peer",
                        "--queries", "12", "--passes", "2", "--cold-runs", "1",
                        "--keep-export-cache", "--data-root", str(data),
                        "--work", str(tmp_path / "work"), "--out", str(out)])
    res = run_benchmark(cfg, log=lambda _msg: None)
    assert set(res) >= {"meta", "summary", "runs", "sets", "cold_start", "importtime", "peer"}
    m = res["meta"]
    assert m["machine"]["cores"] and m["versions"]["semroute-llm"] and m["command"]
    assert len(m["loadavg_start"]) == 3 and len(m["loadavg_end"]) == 3
    run = res["summary"]["runs"]["40/onnx-int8"]
    for key in ("p50_ms", "p99_ms", "bare_p50_ms", "ratio_bare", "batch_per_s",
                "build_process_s", "build_peak_rss_mib"):
        assert isinstance(run[key], float), key
    assert set(run["parts_p50_ms"]) >= {"encode", "search", "score"}
    assert run["cache_hits"] == 0 and run["queries"] == 12
    assert run["incremental"]["embedded"] >= 1 and run["incremental"]["reused"] >= 1
    cold = res["summary"]["cold_start"]["40/onnx-int8"]
    assert cold["route_first_output_s"] > 0 and cold["load_router_s"] > 0
    assert res["importtime"]["semroute route"]["by_package_ms"]
    names = [t["target"] for t in res["summary"]["targets"]]
    assert len(names) == 7 and all("pass" in t for t in res["summary"]["targets"])
    md, js = write_results(res, out, cfg.name)
    assert "## Targets" in md.read_text() and "| 40 | onnx-int8 |" in render_markdown(res)
    assert json.loads(js.read_text())["summary"]["runs"]
