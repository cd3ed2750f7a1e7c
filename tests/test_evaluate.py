"""Evaluation metrics on a hand-made labelled set whose right answers are known, the loader,
and one end-to-end run through the real router and the `semroute eval` command."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.cli import main
from semroute.index import build_index
from semroute.quality.evaluation import (
    OOS,
    DataError,
    LabelledQuery,
    evaluate,
    load_labelled,
    margin_sweep,
    score_decisions,
)
from semroute.routing import Candidate, Decision, Method, Router
from tests.conftest import CATALOGUE

ROUTES = ["a", "b", "c"]


def dec(top: str | None, method: Method, route: str | None, *, score: float = 0.9,
        margin: float = 0.2, ms: float = 1.0, runner: str = "c") -> Decision:
    """A decision whose index ranked `top` first (score, margin), decided by `method`."""
    cands = () if top is None else (Candidate(top, score, ()),
                                    Candidate(runner, round(score - margin, 6), ()))
    return Decision(query="q", route=route, method=method, score=score, margin=margin,
                    threshold=0.5, margin_threshold=0.05, reason="", candidates=cands,
                    timings_ms={"encode": ms})


# label, group, decision; "a" is also the default route. Hand-scored in the test below.
HAND = [
    ("a", "in_scope", dec("a", "index", "a")),                  # 1 right
    ("a", "in_scope", dec("a", "index", "a")),                  # 2 right
    ("a", "in_scope", dec("b", "index", "b")),                  # 3 misroute (index)
    ("b", "in_scope", dec("b", "index", "b")),                  # 4 right
    ("b", "in_scope", dec("b", "undecided", None, margin=0.01)),  # 5 missed -> oos
    ("c", "in_scope", dec("b", "classifier", "c")),             # 6 right (classifier)
    (OOS, "id_oos", dec("a", "undecided", None, score=0.3)),    # 7 right: no route
    (OOS, "id_oos", dec("a", "index", "a")),                    # 8 misroute (index)
    (OOS, "ood_oos", dec("a", "default", "a", score=0.2)),      # 9 right: default, oos
    ("zzz", "ood_oos", dec("c", "undecided", None, score=0.1)),  # 10 unknown label -> oos
]


def hand_set() -> tuple[list[Decision], list[LabelledQuery]]:
    decisions = [replace(d, timings_ms={"encode": i + 1.0}) for i, (_, _, d) in enumerate(HAND)]
    data = [LabelledQuery(f"query {i + 1}", label, group) for i, (label, group, _) in
            enumerate(HAND)]
    return decisions, data


def test_headline_metrics_match_hand_computed_values() -> None:
    decisions, data = hand_set()
    m = score_decisions(decisions, data, ROUTES).metrics
    # in scope: rows 1-6, right 1, 2, 4, 6
    assert m["in_scope_accuracy"] == pytest.approx(4 / 6)
    # gold  a a a b b   c oos oos oos oos ; pred a a b b oos c oos a oos oos
    assert m["overall_accuracy"] == pytest.approx(7 / 10)
    # predicted oos: 5, 7, 9, 10 (3 truly oos); gold oos: 7, 8, 9, 10 (3 predicted oos)
    assert m["oos_precision"] == pytest.approx(3 / 4)
    assert m["oos_recall"] == pytest.approx(3 / 4)
    # F1: a = 2/3 (P 2/3, R 2/3), b = 1/2, c = 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # misroutes: 3 (a sent to b), 8 (oos sent to a); 9 (oos to the default route) is not one
    assert m["misroute_rate"] == pytest.approx(2 / 10)
    assert m["index_rate"] == pytest.approx(0.5)
    assert m["classifier_rate"] == pytest.approx(0.1)
    assert m["default_rate"] == pytest.approx(0.1)
    assert m["undecided_rate"] == pytest.approx(0.3)
    assert m["fallback_rate"] == pytest.approx(0.5)
    assert m["misroute_rate_index"] == pytest.approx(2 / 5)
    assert m["misroute_rate_classifier"] == 0.0
    assert m["misroute_rate_default"] == 0.0
    assert m["p50_ms"] == pytest.approx(5.5)
    assert m["p95_ms"] == pytest.approx(9.55)
    assert (m["rows"], m["in_scope_rows"], m["oos_rows"], m["unknown_label_rows"]) == \
        (10, 6, 4, 1)


def test_per_route_confusions_groups_and_unknown_labels() -> None:
    decisions, data = hand_set()
    r = score_decisions(decisions, data, ROUTES)
    assert r.per_route["a"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                "f1": pytest.approx(2 / 3), "support": 3, "predicted": 3}
    assert r.per_route["b"]["precision"] == 0.5 and r.per_route["b"]["recall"] == 0.5
    assert r.per_route["c"]["f1"] == 1.0
    pairs = {(c.gold, c.predicted): (c.count, c.examples) for c in r.confusions}
    assert pairs == {("a", "b"): (1, ("query 3",)), ("b", OOS): (1, ("query 5",)),
                     (OOS, "a"): (1, ("query 8",))}
    assert r.unknown_labels == {"zzz": 1}
    assert r.by_group["id_oos"]["accuracy"] == 0.5
    assert r.by_group["ood_oos"]["accuracy"] == 1.0
    assert r.by_group["in_scope"]["accuracy"] == pytest.approx(4 / 6)
    assert r.metrics["group_id_oos_accuracy"] == 0.5
    json.dumps(r.to_dict())


def test_default_route_counts_as_no_route_and_misroutes_in_scope_queries() -> None:
    decisions = [dec("b", "default", "a"), dec("b", "default", "a"), dec("b", "default", "a")]
    data = [LabelledQuery("x", "b"), LabelledQuery("y", "a"), LabelledQuery("z", OOS)]
    m = score_decisions(decisions, data, ROUTES).metrics
    assert m["misroute_rate_default"] == pytest.approx(1 / 3)   # only "b" sent to "a"
    assert m["in_scope_accuracy"] == 0.0                        # default is not recognition
    assert m["oos_recall"] == 1.0 and m["oos_precision"] == pytest.approx(1 / 3)


def test_undefined_ratios_are_none() -> None:
    m = score_decisions([dec("a", "index", "a")], [LabelledQuery("x", "a")], ROUTES).metrics
    assert m["oos_recall"] is None and m["oos_precision"] is None
    assert m["misroute_rate_classifier"] is None


def test_margin_sweep_re_decides_through_the_thresholds() -> None:
    decisions = [dec("a", "index", "a", margin=0.0), dec("a", "index", "a", margin=0.1),
                 dec("b", "index", "b", margin=0.2), dec("c", "index", "c", margin=0.3),
                 dec("c", "undecided", None, score=0.4, margin=0.3)]  # below score 0.5
    golds = ["b", "a", "b", "c", "c"]
    sweep = {p["margin"]: p for p in margin_sweep(decisions, golds)}
    assert sweep[0.0]["coverage"] == pytest.approx(4 / 5)
    assert sweep[0.0]["misroute_rate"] == pytest.approx(1 / 4)
    assert sweep[0.1]["coverage"] == pytest.approx(3 / 5)
    assert sweep[0.1]["misroute_rate"] == 0.0
    assert sweep[0.3]["coverage"] == pytest.approx(1 / 5)


def test_scoring_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 decisions for 1 rows"):
        score_decisions([dec("a", "index", "a")] * 2, [LabelledQuery("x", "a")], ROUTES)


# ---------------------------------------------------------------- loading


def test_load_csv_keeps_group_and_ignores_extra_columns(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_text('text,label,oos_type,original_label\n"hi, there",greet,in_scope,greet\n'
                 "what is life,oos,ood_oos,oos\n")
    rows = load_labelled(f)
    assert rows == [LabelledQuery("hi, there", "greet", "in_scope"),
                    LabelledQuery("what is life", OOS, "ood_oos")]


def test_load_jsonl_and_custom_columns(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"q": "hello", "y": "greet"}\n\n{"q": "sort a list", "y": "code"}\n')
    assert load_labelled(f, text_col="q", label_col="y") == [
        LabelledQuery("hello", "greet"), LabelledQuery("sort a list", "code")]


@pytest.mark.parametrize(("name", "text", "match"), [
    ("d.csv", "query,label\nhi,greet\n", r"d\.csv:1: column 'text' is missing"),
    ("d.csv", "text,label\nhi,greet\n  ,code\n", r"d\.csv:3: the text \('text'\) is empty"),
    ("d.csv", "text,label\nhi,\n", r"d\.csv:2: the label"),
    ("d.jsonl", '{"text": "hi", "label": "a"}\n{"label": "a"}\n', r"d\.jsonl:2: column 'text'"),
    ("d.jsonl", "{oops\n", r"d\.jsonl:1: invalid JSON"),
    ("d.csv", "text,label\n", r"d\.csv: no rows"),
])
def test_load_errors_name_file_and_line(tmp_path: Path, name: str, text: str,
                                        match: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=match):
        load_labelled(tmp_path / name)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_labelled(tmp_path / "nope.csv")


# ---------------------------------------------------------------- end to end

E2E_ROUTES: dict[str, dict[str, Any]] = {
    "greet": {"name": "greet", "description": "Greetings and small talk with the user.",
              "model": "fast",
              "utterances": ["hi there", "hello, how are you", "good morning friend",
                             "hey what's up", "nice to meet you", "good evening"]},
    "code": {"name": "code", "description": "Writing and explaining program code.",
             "model": "fast",
             "utterances": ["write a python function to sort a list",
                            "implement binary search in java", "reverse a linked list in C",
                            "write a SQL query joining two tables",
                            "create a REST endpoint in flask"]},
    "weather": {"name": "weather", "description": "Weather forecasts and conditions.",
                "model": "fast",
                "utterances": ["what's the weather tomorrow", "will it rain today",
                               "how hot will it be this weekend", "is it snowing in denver",
                               "weather forecast for paris"]},
}
E2E_DATA = [("hello, good morning", "greet"), ("hey there, how's it going", "greet"),
            ("write a function that sorts numbers in python", "code"),
            ("implement quicksort in java", "code"),
            ("will it rain tomorrow in london", "weather"),
            ("what is the forecast for this weekend", "weather"),
            ("zxqv blorp frobnicate", OOS), ("my cat's vet appointment", "pets")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A three-route set (torch encoder), its index, and a labelled CSV."""
    root = tmp_path_factory.mktemp("eval")
    routes = root / "routes"
    routes.mkdir()
    for stem, spec in E2E_ROUTES.items():
        (routes / f"{stem}.yaml").write_text(yaml.safe_dump(spec))
    cat = copy.deepcopy(CATALOGUE)
    cat["router"]["backend"] = "torch"
    (routes / "models.yaml").write_text(yaml.safe_dump(cat))
    build_index(routes, root / "index")
    data = root / "data.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{lbl}\n' for t, lbl in E2E_DATA))
    return routes, root / "index", data


def test_evaluate_runs_the_real_router(tiny: tuple[Path, Path, Path]) -> None:
    routes, index, data_file = tiny
    router = Router.load(routes, index)
    data = load_labelled(data_file)
    result = evaluate(router, data, latency_sample=3)
    direct = router.route_batch([q.text for q in data], use_classifier=False)
    assert [d.route for d in result.decisions] == [d.route for d in direct]
    rescored = score_decisions(result.decisions, data, router.routes.names).metrics
    assert {k: v for k, v in rescored.items() if not k.endswith("_ms")} == \
        {k: v for k, v in result.metrics.items() if not k.endswith("_ms")}
    m = result.metrics
    assert m["in_scope_accuracy"] is not None and m["in_scope_accuracy"] >= 0.5
    assert m["classifier_rate"] == 0.0 and m["default_rate"] == 0.0
    assert result.unknown_labels == {"pets": 1}
    assert result.info["latency"] == "single query, 3 rows"
    assert m["p50_ms"] is not None and m["p50_ms"] > 0


def test_evaluate_with_fallback_sends_undecided_to_the_default_route(
        tiny: tuple[Path, Path, Path]) -> None:
    routes, index, data_file = tiny
    router = Router.load(routes, index)
    result = evaluate(router, load_labelled(data_file), with_classifier=True, latency_sample=0)
    off_topic = result.decisions[6]
    assert off_topic.method == "default" and off_topic.route == "greet"
    assert result.metrics["undecided_rate"] == 0.0
    assert result.metrics["oos_recall"] is not None and result.metrics["oos_recall"] > 0


def test_cli_eval_json_and_report(tiny: tuple[Path, Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    routes, index, data_file = tiny
    out = tmp_path / "rep"
    rc = main(["eval", "--data", str(data_file), "--routes", str(routes), "--index",
               str(index), "--json", "--report", str(out), "--latency-sample", "2"])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"in_scope_accuracy", "macro_f1", "oos_recall", "oos_precision", "overall_accuracy",
            "misroute_rate", "fallback_rate", "index_rate", "classifier_rate", "default_rate",
            "misroute_rate_index", "p50_ms", "p95_ms", "unknown_labels"} <= set(metrics)
    assert metrics["unknown_labels"] == {"pets": 1}
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "report.md", "coverage.png",
                                               "confusion.png"}
    report = (out / "report.md").read_text()
    assert "## Per route" in report and "pets" in report


def test_cli_eval_table_and_bad_data(tiny: tuple[Path, Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    routes, index, data_file = tiny
    assert main(["eval", "--data", str(data_file), "--routes", str(routes), "--index",
                 str(index), "--report", str(tmp_path / "r"), "--latency-sample", "0"]) == 0
    out = capsys.readouterr().out
    assert "in_scope_accuracy" in out and "misroute" in out and "report:" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nhello\n")
    assert main(["eval", "--data", str(bad), "--routes", str(routes), "--index",
                 str(index)]) == 2
    assert "bad.csv:1: column 'label' is missing" in capsys.readouterr().err


def test_load_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    f = tmp_path / "excel.csv"
    f.write_bytes("text,label\nhello,greet\n".encode("utf-8-sig"))
    assert load_labelled(f) == [LabelledQuery("hello", "greet")]
