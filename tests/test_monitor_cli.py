"""`semroute monitor` end to end: a trace written by real dispatches (a real index, retries and
failover against loopback servers) and a real outcomes store whose journal rows, feedback and
shadow verdicts go through the store's Writer; the report folder it writes (Markdown whose
links resolve, PNGs that decode, monitor.json), window filtering, bad trace lines, absent
inputs, and an existing folder that is never half-overwritten."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from semroute.cli import main
from semroute.dispatching import Dispatcher
from semroute.outcomes import FeedbackEntry, LoggedRequest, OutcomeStore, ShadowVerdict
from tests.dispatch_support import dispatcher_factory, shared_index

DAY1 = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
DAY = 86400.0
QUERIES = ["hi there, how are you", "write a python function to sort a list",
           "implement binary search in java please", "good morning friend!",
           "create a REST endpoint in flask", "hey what's up", "reverse a linked list in C",
           "write a SQL query joining two tables", "nice to meet you", "hello there"]
CHARTS = ("traffic.png", "methods.png", "margins.png", "quality.png")


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory,
            fault_server_module: Callable[..., Any]) -> dict[str, Any]:
    """Ten real dispatches (the first fails over from `cheap` to `strong`), restamped over
    two days; the journal, 25 shadow verdicts (code on cheap: all lost) and feedback in the
    store; a feedback line and a truncated line appended to the trace."""
    root = tmp_path_factory.mktemp("monitor")
    cheap = fault_server_module([500, 500, 200])
    strong = fault_server_module([200])
    models = {"cheap": {"provider": "openai", "model": "c", "base_url": cheap.openai_base_url,
                        "input_price": 1.0, "output_price": 5.0},
              "strong": {"provider": "openai", "model": "s",
                         "base_url": strong.openai_base_url, "input_price": 5.0,
                         "output_price": 25.0}}
    make: Callable[..., Dispatcher] = dispatcher_factory(root, shared_index(root / "shared"))
    dispatcher = make(models, ["cheap", "strong"], backoff_seconds=0.001, cooldown_seconds=0.0)
    for q in QUERIES:
        dispatcher.dispatch(q, max_tokens=16)
    trace = root / "trace.jsonl"
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(records) == len(QUERIES)
    stamps = [DAY1 + (i // 5) * DAY + i * 60 for i in range(len(records))]  # 5 a day
    for rec, ts in zip(records, stamps, strict=True):
        rec["ts"] = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    trace.write_text("".join(json.dumps(r) + "\n" for r in records)
                     + '{"kind": "feedback", "request_id": "x", "score": 1}\n'
                     + '{"ts": "2026-11-24T10:00:00+00:00", "request_id": "cut-of')
    store = root / "outcomes.db"
    code = [r for r in records if r["route"] == "code"]
    with OutcomeStore(store) as s, s.transaction() as tx:
        tx.log_requests([LoggedRequest(request_id=r["request_id"], ts=ts, route=r["route"],
                                       method=r["method"], model=r["model_key"],
                                       score=r["score"], margin=r["margin"],
                                       cost_usd=r["cost_usd"])
                         for r, ts in zip(records, stamps, strict=True)])
        for i in range(25):
            tx.add_shadow(ShadowVerdict(request_id=code[i % len(code)]["request_id"],
                                        route="code", model="cheap", reference="strong",
                                        judge="strong", score=0.0, verdicts=("B", "B"),
                                        cost_usd=0.002, ts=DAY1 + DAY + i))
        tx.add_feedback(FeedbackEntry(request_id=records[0]["request_id"], score=1.0,
                                      ts=DAY1 + 10))
    return {"root": root, "routes": root / "routes", "trace": trace, "store": store,
            "records": records}


@pytest.fixture(scope="module")
def fault_server_module() -> Any:
    from tests.support.llm_server import FaultServer

    started: list[FaultServer] = []

    def make(statuses: list[int]) -> FaultServer:
        server = FaultServer(statuses).start()
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()


def monitor(t: dict[str, Any], out: Path, *extra: str, store: bool = True,
            trace: bool = True) -> list[str]:
    args = ["monitor", "--routes", str(t["routes"]), "--out", str(out), "--json",
            "--bucket", "12h", *extra]
    if trace:
        args += ["--trace", str(t["trace"])]
    if store:
        args += ["--store", str(t["store"])]
    return args


def test_the_report_folder_has_valid_charts_resolving_links_and_every_section(
        traffic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(monitor(traffic, out)) == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*CHARTS, "monitor.json", "report.md"])
    for name in CHARTS:
        with Image.open(out / name) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 500
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(CHARTS) and all((out / x).is_file() for x in links)
    for heading in ("## 1. Window and sources", "## 2. Traffic and cost",
                    "## 3. Decision methods", "## 4. Margins over time (drift)",
                    "## 5. Quality per route against the reference",
                    "## 6. Money saved against one strong model"):
        assert heading in text
    assert json.loads((out / "monitor.json").read_text())["requests"] == data["requests"]

    (t,) = data["traces"]
    assert (t["lines"], t["requests"], t["bad"], t["kinds"]) == (12, 10, 1, {"feedback": 1})
    assert t["bad_examples"] == ["line 12: not JSON (truncated?)"]
    assert data["requests"] == 10 and data["sources"] == {"trace": 10}
    assert sum(r["failovers"] for r in data["by_route"]) == 1, "the first request failed over"
    assert {m["name"] for m in data["by_model"]} == {"cheap", "strong"}


def test_savings_are_the_traced_tokens_at_the_dearest_models_prices_minus_cost(
        traffic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(monitor(traffic, tmp_path / "r")) == 0
    s = json.loads(capsys.readouterr().out)["savings"]
    recs = traffic["records"]
    assert s["baseline"] == "strong" and s["baseline_reason"] == "the shadow reference model"
    assert s["priced"] == 10
    assert s["baseline_usd"] == pytest.approx(sum(
        (r["input_tokens"] * 5 + r["output_tokens"] * 25) / 1e6 for r in recs))
    assert s["actual_usd"] == pytest.approx(sum(r["cost_usd"] for r in recs))
    assert s["saved_usd"] > 0
    assert s["quality_held"] == {"code": 0.0}
    assert s["shadow_cost_usd"] == pytest.approx(25 * 0.002)


def test_a_route_losing_to_the_reference_is_flagged_with_its_evidence(
        traffic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(monitor(traffic, tmp_path / "r")) == 0
    q = json.loads(capsys.readouterr().out)["quality"]
    (flag,) = q["below_threshold"]
    assert (flag["kind"], flag["route"], flag["model"], flag["n"], flag["mean"]) == (
        "shadow", "code", "cheap", 25, 0.0)
    assert flag["flagged"] and flag["high"] < 0.5
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| **flagged** | shadow | code | cheap | 25 | 0.0000 |" in text
    assert main(monitor(traffic, tmp_path / "r2", "--min-n", "26")) == 0
    assert json.loads(capsys.readouterr().out)["quality"]["below_threshold"] == []


def test_the_window_keeps_only_its_requests(traffic: dict[str, Any], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(monitor(traffic, tmp_path / "r", "--since", "2026-11-24",
                        "--window", "1d")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["requests"] == 5 and data["traces"][0]["outside"] == 5
    assert data["since"] == "2026-11-24T00:00:00Z" and data["until"] == "2026-11-25T00:00:00Z"
    assert data["store"]["shadow"] == 25 and data["store"]["feedback"] == 0
    assert main(monitor(traffic, tmp_path / "r3", "--since", "2026-12-20")) == 2
    assert "nothing to report: no requests in the window" in capsys.readouterr().err


def test_an_absent_store_is_reported_and_never_created(
        traffic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.db"
    args = [*monitor(traffic, tmp_path / "r", store=False), "--store", str(missing)]
    assert main(args) == 0
    got = capsys.readouterr()
    assert f"no outcomes store at {missing}" in got.err and not missing.exists()
    data = json.loads(got.out)
    assert data["store"]["found"] is False and data["quality"]["shadow"] == []
    assert "**not found**" in (tmp_path / "r" / "report.md").read_text()


def test_a_store_alone_reports_its_journal_and_says_no_savings_without_tokens(
        traffic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*monitor(traffic, tmp_path / "r", trace=False), "--trace",
                 str(tmp_path / "gone.jsonl")]) == 0
    got = capsys.readouterr()
    assert "trace" in got.err and "not found" in got.err
    data = json.loads(got.out)
    assert data["sources"] == {"store": 10}
    assert data["savings"]["priced"] == 0 and data["savings"]["unpriced"] == 10


def test_no_input_at_all_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no traces/semroute.jsonl here
    assert main(["monitor", "--routes", str(tmp_path / "none"), "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nothing to read: no --trace FILE, no --store PATH" in err
    assert main(["monitor", "--routes", str(tmp_path / "none"), "--trace",
                 str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "r")]) == 2
    assert "no trace file and no outcomes store found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_existing_folder_is_replaced_whole_or_refused(
        traffic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert main(monitor(traffic, out)) == 0
    (out / "stale.png").write_bytes(b"old")
    assert main(monitor(traffic, out, "--since", "2026-11-24")) == 0
    assert not (out / "stale.png").exists(), "a new report replaces the old folder whole"
    assert json.loads((out / "monitor.json").read_text())["requests"] == 5
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(monitor(traffic, other)) == 2
    assert "exists and is not a monitor report folder" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp left"
