"""`semroute monitor`'s figures on hand-made rows with known answers: traffic shares and
latency quantiles, method shares per bucket, margin quantiles, the drift rule (flags a shifted
sample, not an unshifted one, never a tiny one), quality intervals and threshold flags, and
the savings arithmetic against the baseline model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from semroute.errors import DataError
from semroute.outcomes import FeedbackEntry, OutcomeRecord, ShadowVerdict, text_hash
from semroute.quality.monitor_quality import (
    below,
    feedback_quality,
    gate_quality,
    shadow_quality,
    wilson,
)
from semroute.quality.monitor_report import MonitorSettings, choose_baseline
from semroute.quality.monitor_sources import (
    Window,
    make_window,
    parse_duration,
    parse_time,
    read_trace,
)
from semroute.quality.monitoring import (
    RequestRow,
    bands,
    bucket_edges,
    bucket_index,
    drift,
    ks_statistic,
    method_shares,
    methods_by_bucket,
    most_expensive,
    psi,
    savings,
    traffic_by,
)

DAY = 86400.0


def row(i: int, route: str = "code", method: str = "index", **kw: object) -> RequestRow:
    return RequestRow(ts=float(kw.pop("ts", i)), request_id=f"r{i}", route=route,
                      method=method, **kw)  # type: ignore[arg-type]


def test_traffic_by_route_counts_shares_tokens_cost_and_latency_quantiles() -> None:
    rows = [row(i, "code", model="strong", input_tokens=100, output_tokens=10, cost_usd=0.5,
                latency_ms=float(10 * (i + 1)), error=i == 0, failover=i == 1)
            for i in range(4)]
    rows.append(row(9, "greet", model="cheap", input_tokens=5, output_tokens=5, cost_usd=0.01,
                    latency_ms=7.0))
    code, greet = traffic_by(rows, lambda r: r.route)
    assert (code.name, code.requests, code.share) == ("code", 4, 0.8)
    assert (code.input_tokens, code.output_tokens, code.cost_usd) == (400, 40, 2.0)
    assert code.mean_latency_ms == 25.0
    assert code.p95_latency_ms == pytest.approx(38.5), "linear: 30 + 0.85 * 10"
    assert (code.errors, code.failovers) == (1, 1)
    assert (greet.requests, greet.share, greet.p95_latency_ms) == (1, 0.2, 7.0)
    by_model = traffic_by(rows, lambda r: r.model)
    assert [m.name for m in by_model] == ["strong", "cheap"]


def test_method_shares_overall_and_per_bucket() -> None:
    rows = ([row(i, method="index", ts=10 + i) for i in range(6)]
            + [row(10 + i, method="classifier", ts=60 + i) for i in range(3)]
            + [row(20, method="default", ts=100)])
    assert method_shares(rows) == {"index": 0.6, "classifier": 0.3, "default": 0.1}
    edges = bucket_edges(0, 100, count=2)
    assert edges == [0, 50, 100]
    first, last = methods_by_bucket(rows, edges)
    assert dict(first) == {"index": 6}
    assert dict(last) == {"classifier": 3, "default": 1}, "the window's end is in the last bucket"


def test_bucket_edges_by_width_cover_the_window_and_outside_is_no_bucket() -> None:
    edges = bucket_edges(0, 10 * 3600, width=4 * 3600)
    assert edges == [0, 4 * 3600, 8 * 3600, 12 * 3600]
    assert bucket_index(4 * 3600, edges) == 1 and bucket_index(-1, edges) is None
    assert bucket_index(13 * 3600, edges) is None


def test_margin_bands_are_quantiles_of_index_scored_rows_only() -> None:
    rows = [row(i, margin=i / 10, score=0.5, ts=1) for i in range(11)]  # 0.0 .. 1.0
    rows.append(row(99, method="rule", margin=1.0, score=1.0, ts=1))  # no index margin
    (b,) = bands(rows, [0, 2])
    assert b.n == 11
    assert b.margin == pytest.approx((0.1, 0.5, 0.9))
    assert b.score == pytest.approx((0.5, 0.5, 0.5))


def test_ks_statistic_and_psi_known_values() -> None:
    assert ks_statistic([1, 2, 3], [4, 5, 6]) == 1.0
    assert ks_statistic([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5
    same = [i / 100 for i in range(100)]
    assert psi(same, same) == pytest.approx(0.0)


def margins_over_week(shift: float, n: int, seed: int) -> list[RequestRow]:
    """`n` index decisions spread over 3 days; margins ~ N(0.15, 0.05), the last day's
    lowered by `shift`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ts = 3 * DAY * i / n
        m = rng.gauss(0.15, 0.05) - (shift if ts >= 2 * DAY else 0.0)
        rows.append(row(i, margin=m, score=0.6, ts=ts))
    return rows


def test_drift_is_flagged_on_a_shifted_sample() -> None:
    d = drift(margins_over_week(0.04, 600, seed=1), 0, 3 * DAY)
    assert d.flagged and d.ks is not None and d.critical is not None
    assert d.ks > d.critical and d.ks >= 0.1
    assert d.median_last is not None and d.median_first is not None
    assert d.median_last < d.median_first
    assert d.verdict.startswith("DRIFT") and "lower median" in d.verdict


def test_drift_is_not_flagged_on_an_unshifted_sample() -> None:
    for seed in range(5):
        d = drift(margins_over_week(0.0, 600, seed=seed), 0, 3 * DAY)
        assert not d.flagged, d.verdict
        assert d.ks is not None and d.ks < 0.15


def test_drift_is_not_tested_on_a_tiny_sample() -> None:
    d = drift(margins_over_week(0.2, 60, seed=1), 0, 3 * DAY)  # 20 per part
    assert not d.flagged and d.ks is None and "not tested" in d.verdict


def test_savings_price_each_request_at_the_baseline_minus_its_cost() -> None:
    prices = {"cheap": (1.0, 5.0), "strong": (5.0, 25.0)}
    rows = [row(1, "greet", model="cheap", input_tokens=1000, output_tokens=500,
                cost_usd=(1000 * 1 + 500 * 5) / 1e6),
            row(2, "code", model="strong", input_tokens=2000, output_tokens=100,
                cost_usd=(2000 * 5 + 100 * 25) / 1e6),
            row(3, "greet", model="cheap", cost_usd=0.3),  # store-only: no tokens
            row(4, "greet", model="gone", input_tokens=1, output_tokens=1, cost_usd=0.1)]
    s = savings(rows, prices, "strong")
    assert (s.priced, s.unpriced) == (2, 2)
    assert s.actual_usd == pytest.approx(0.0035 + 0.0125)
    assert s.baseline_usd == pytest.approx(0.0175 + 0.0125)
    assert s.saved_usd == pytest.approx(0.014)
    assert s.saved_share == pytest.approx(0.014 / 0.03)
    greet = next(r for r in s.by_route if r[0] == "greet")
    assert greet[1:] == (1, pytest.approx(0.0035), pytest.approx(0.0175))
    code = next(r for r in s.by_route if r[0] == "code")
    assert code[3] - code[2] == pytest.approx(0.0), "the baseline itself saves nothing"


def test_the_default_baseline_is_the_dearest_by_output_price_or_the_shadow_reference() -> None:
    prices = {"cheap": (1.0, 5.0), "mid": (9.0, 15.0), "strong": (5.0, 25.0)}
    assert most_expensive(prices) == "strong"
    assert choose_baseline(prices, MonitorSettings(), []) == (
        "strong", "the catalogue's most expensive model by output price")
    assert choose_baseline(prices, MonitorSettings(), ["mid", "mid", "strong"])[0] == "mid"
    assert choose_baseline(prices, MonitorSettings(reference="cheap"), ["mid"])[0] == "cheap"
    assert choose_baseline(prices, MonitorSettings(baseline="mid"), [])[0] == "mid"
    with pytest.raises(DataError, match=r"--baseline 'gpt-9' is not a key of the model "
                                        r"catalogue.*known keys: cheap, mid, strong"):
        choose_baseline(prices, MonitorSettings(baseline="gpt-9"), [])


def test_wilson_interval_known_values() -> None:
    low, high = wilson(0.5, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    low, high = wilson(0.0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    assert wilson(1.0, 5)[1] == 1.0 and wilson(0.3, 0) == (0.0, 1.0)


def verdict(i: int, route: str, model: str, score: float) -> ShadowVerdict:
    return ShadowVerdict(request_id=f"r{i}", route=route, model=model, reference="strong",
                         judge="strong", score=score, verdicts=())


def test_shadow_quality_counts_wins_ties_losses_per_route_and_model() -> None:
    vs = [verdict(1, "code", "cheap", 1.0), verdict(2, "code", "cheap", 0.5),
          verdict(3, "code", "cheap", 0.25), verdict(4, "code", "mid", 0.0)]
    stats = {(q.route, q.model): q for q in shadow_quality(vs)}
    cheap, overall = stats[("code", "cheap")], stats[("code", "*")]
    assert (cheap.n, cheap.wins, cheap.ties, cheap.losses) == (3, 1, 1, 1)
    assert cheap.mean == pytest.approx(1.75 / 3) and cheap.held == pytest.approx(2 / 3)
    assert (overall.n, overall.losses, overall.mean) == (4, 2, pytest.approx(1.75 / 4))


def test_feedback_is_joined_to_its_request_and_corrections_counted() -> None:
    served = {"r1": ("code", "cheap"), "r2": ("code", "cheap"), "r3": ("greet", None)}
    entries = [FeedbackEntry(request_id="r1", score=1.0),
               FeedbackEntry(request_id="r2", score=0.0, label="greet"),
               FeedbackEntry(request_id="r3", label="greet"),  # not a correction
               FeedbackEntry(request_id="r9", score=1.0)]
    stats, orphans = feedback_quality(entries, served)
    got = {(q.route, q.model): q for q in stats}
    assert orphans == 1
    assert (got[("code", "cheap")].n, got[("code", "cheap")].mean) == (2, 0.5)
    assert got[("code", "cheap")].corrections == 1 and got[("code", "*")].corrections == 1
    assert got[("greet", "(none)")].n == 0 and got[("greet", "(none)")].corrections == 0


def test_a_route_is_flagged_below_the_threshold_only_on_enough_evidence() -> None:
    bad = shadow_quality([verdict(i, "code", "cheap", 0.0 if i % 4 else 0.5)
                          for i in range(20)])  # mean 0.125 on 20
    tiny = shadow_quality([verdict(i, "greet", "cheap", 0.0) for i in range(19)])
    fine = shadow_quality([verdict(i, "chat", "cheap", 0.5) for i in range(40)])
    borderline = shadow_quality([verdict(i, "math", "cheap", 0.5 if i % 5 else 0.0)
                                 for i in range(20)])  # mean 0.4, interval reaches 0.5
    stats = [q for q in (*bad, *tiny, *fine, *borderline) if q.model != "*"]
    flags = below(stats, 0.5, min_n=20)
    assert [(f.stat.route, f.confirmed) for f in flags] == [("code", True), ("math", False)]
    assert below(stats, 0.5, min_n=21) == []


def test_times_windows_and_durations_parse_or_say_what_to_write() -> None:
    assert parse_duration("7d") == 7 * DAY and parse_duration("90m") == 5400
    assert parse_time("2026-11-23") == 1795392000.0
    assert parse_time("2026-11-23T01:00:00+01:00") == 1795392000.0
    assert parse_time("1795392000") == 1795392000.0
    assert parse_time("1d", now=2 * DAY) == DAY
    w = make_window("2026-11-23", None, "1d")
    assert (w.since, w.until) == (1795392000.0, 1795392000.0 + DAY)
    assert make_window(None, None, "2d", now=10 * DAY) == Window(8 * DAY, 10 * DAY)
    with pytest.raises(DataError, match="cannot read the duration 'a week'"):
        parse_duration("a week")
    with pytest.raises(DataError, match="cannot read the time 'yesterday'"):
        parse_time("yesterday")
    with pytest.raises(DataError, match="the window is empty"):
        make_window("2026-11-23", "2026-11-22", None)


def test_a_trace_file_counts_bad_lines_and_other_kinds_and_filters_the_window(
        tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join([
        '{"ts": "2026-11-23T00:00:00+00:00", "request_id": "a", "route": "code", '
        '"method": "index", "margin": 0.2, "model_key": "cheap", "input_tokens": 3, '
        '"output_tokens": 4, "cost_usd": 0.1, "latency_ms": {"total": 12.5}, "error": null, '
        '"attempts": [{"model_key": "cheap", "ok": false}, {"model_key": "strong", "ok": true}]}',
        '{"ts": 1795478400, "request_id": "b", "route": null, "method": "undecided"}',
        '{"kind": "feedback", "request_id": "a", "score": 1}',
        '{"kind": "shadow", "request_id": "a", "score": 0.5}',
        '[1, 2]',
        '{"request_id": "c", "route": "code", "method": "index"}',
        '{"ts": "2026-11-23T00:00:01+00:00", "request_id": "d", "ro',
    ]))
    rows, info = read_trace(trace, Window())
    assert (info.lines, info.requests, info.bad, dict(info.kinds)) == (
        7, 2, 3, {"feedback": 1, "shadow": 1})
    assert info.bad_examples == ["line 5: not a JSON object", "line 6: no 'ts'",
                                 "line 7: not JSON (truncated?)"]
    a, b = rows
    assert (a.route, a.model, a.input_tokens, a.latency_ms, a.failover) == (
        "code", "cheap", 3, 12.5, True)
    assert (b.route, b.method, b.cost_usd) == ("(none)", "undecided", 0.0)
    rows, info = read_trace(trace, Window(since=1795392000.0 + 3600))
    assert [r.request_id for r in rows] == ["b"] and info.outside == 1
    rows, info = read_trace(tmp_path / "missing.jsonl", Window())
    assert rows == [] and not info.found


def test_live_gate_and_judge_records_count_imported_ones_do_not() -> None:
    h = text_hash("q")
    recs = [OutcomeRecord(text_hash=h, model="cheap", score=1.0, source="gate", route="qa"),
            OutcomeRecord(text_hash=h, model="cheap", score=0.0, source="gate", route="qa"),
            OutcomeRecord(text_hash=h, model="cheap", score=0.7, source="judge", route="qa"),
            OutcomeRecord(text_hash=h, model="cheap", score=0.0, source="imported")]
    (overall, cheap) = gate_quality(recs)
    assert (cheap.route, cheap.model, cheap.n) == ("qa", "cheap", 3)
    assert cheap.mean == pytest.approx(1.7 / 3) and overall.model == "*"
