"""The learning loop as one product, real parts only (README "The learning loop"):

dispatch (journal on, query text kept, every request shadowed against a reference judged
pairwise) → some requests the index cannot decide, so the classifier does → feedback (a route
correction, a thumbs-down) → `semroute suggest` proposes the classifier-decided and corrected
queries as utterances, never the one holding an e-mail address → `--write` → `semroute build`
→ the rebuilt router decides those queries by the index → `semroute monitor` reports the
journal, the shadow verdicts and the feedback → `semroute fit --outcomes` refuses clearly for
too few rows.

Loopback scripted models (tests/support/scripted_model.py) answer, classify and judge; the
encoder, FAISS index, SQLite store, trace and CLI are the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import semroute
from semroute.cli import main
from semroute.dispatching.api import dispatcher_for
from semroute.index import build_index
from semroute.outcomes import OutcomeStore
from semroute.routing import Router
from semroute.telemetry import read_trace
from tests.conftest import REPO
from tests.support.scripted_model import ScriptedModel, prefers

ROUTES: dict[str, dict[str, Any]] = {
    "billing": {"name": "billing", "description": "Payments, refunds, invoices, subscriptions.",
                "model": "fast",
                "utterances": ["I want a refund for my last payment",
                               "where can I download my invoice",
                               "update the credit card on my account",
                               "how much does the premium plan cost per month",
                               "cancel my subscription"]},
    "greet": {"name": "greet", "description": "Greetings and small talk.", "model": "fast",
              "utterances": ["hi there", "hello, how are you", "good morning friend",
                             "hey what's up", "nice to meet you"]},
    "code": {"name": "code", "description": "Writing and fixing code.", "model": "powerful",
             "utterances": ["write a python function to sort a list",
                            "implement binary search in java", "reverse a linked list in C",
                            "write a SQL query joining two tables",
                            "create a REST endpoint in flask"]},
}

# Queries the index leaves undecided; the scripted classifier labels them.
CLASSIFIED = {
    "could you review the naming in my pull request": "code",
    "the app throws a null pointer exception on startup": "code",
    "please ask jane.doe@example.com to fix the failing build": "code",  # personal data: kept out
}
# The index sends this one to billing; feedback corrects it to code.
CORRECTED = ("hello, my payment page crashes with a stack trace", "code")
EMAIL = "please ask jane.doe@example.com to fix the failing build"
LEARNED = [(q, r) for q, r in CLASSIFIED.items() if q != EMAIL] + [CORRECTED]
COVERED = ["write a python function to sort a list", "hi there"]


def classify(prompt: str) -> str:
    """The scripted classifier: the label of the query it is shown."""
    return next((route for q, route in CLASSIFIED.items() if q in prompt), "none")


@pytest.fixture
def models() -> Iterator[dict[str, ScriptedModel]]:
    started = {"fast": ScriptedModel(answer="a short answer").start(),  # 2/8 USD per 1M
               "powerful": ScriptedModel(answer="the reference answer, complete",
                                         judge=prefers("reference")).start(),
               "clf": ScriptedModel(judge=classify).start()}
    yield started
    for m in started.values():
        m.stop()


@pytest.fixture
def folder(tmp_path: Path, models: dict[str, ScriptedModel]) -> Path:
    d = tmp_path / "routes"
    d.mkdir()
    for name, spec in ROUTES.items():
        (d / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    catalogue = {
        "profile": "test",
        "profiles": {"test": {k: m.entry() for k, m in models.items()}
                              | {"powerful": models["powerful"].entry(input_price=5.0,
                                                                      output_price=25.0)}},
        "steps": {"summarise": "fast"},
        "router": {"default_route": "greet",
                   "classifier_model": "clf", "backoff_seconds": 0.01,
                   "trace_path": str(tmp_path / "trace.jsonl"), "trace_include_query": True,
                   "outcomes": {"log_requests": True, "keep_text": True},
                   "shadow": {"rate": 1.0, "reference": "powerful"}}}
    (d / "models.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))
    return d


def load(folder: Path, index: Path) -> Router:
    return Router.load(folder, index)


def test_dispatch_feedback_suggest_build_monitor_fit(folder: Path, tmp_path: Path,
                                                     models: dict[str, ScriptedModel],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    build_index(folder, index)
    router = load(folder, index)

    # 1. Real dispatch calls: some the index decides, some only the classifier can.
    served = {q: semroute.dispatch(q, router=router, max_tokens=16)
              for q in [*COVERED, *CLASSIFIED, CORRECTED[0]]}
    assert {q: served[q].decision.method for q in CLASSIFIED} == dict.fromkeys(
        CLASSIFIED, "classifier")
    assert {q: served[q].route for q in CLASSIFIED} == CLASSIFIED
    assert (served[CORRECTED[0]].decision.method, served[CORRECTED[0]].route) == (
        "index", "billing")
    step = semroute.dispatch("summarise this thread", router=router, step="summarise",
                             max_tokens=16)
    explicit = semroute.dispatch("say hi", router=router, model="fast", max_tokens=16)

    # 2. Feedback: a route correction, a thumbs-down, a task's success.
    semroute.feedback(served[CORRECTED[0]].request_id, label=CORRECTED[1],
                      note="it is a bug report", router=router)
    semroute.feedback(served["hi there"].request_id, score=False, router=router)
    semroute.feedback(step.request_id, score=1.0, router=router)

    dispatcher = dispatcher_for(router)
    dispatcher.shadow.worker.join()
    assert dispatcher.recorder is not None
    dispatcher.recorder.join()
    store_path = folder / "outcomes.db"
    with OutcomeStore(store_path) as store:
        journal = {r.request_id: r for r in store.requests()}
        verdicts = store.shadow()
    assert len(journal) == len(served) + 2
    assert journal[served["hi there"].request_id].text == "hi there"
    assert [(journal[r.request_id].method, journal[r.request_id].route)
            for r in (step, explicit)] == [("step", "step:summarise"), ("explicit", "model:fast")]
    # every request the cheap model answered was shadowed, and lost to the reference
    cheap = [r for r in [*served.values(), step, explicit] if r.model_key == "fast"]
    assert sorted(v.request_id for v in verdicts) == sorted(r.request_id for r in cheap)
    assert {v.score for v in verdicts} == {0.0}

    # 3. suggest: the classifier-decided and corrected queries, never the e-mail one.
    capsys.readouterr()
    assert main(["suggest", "--routes", str(folder), "--index", str(index)]) == 0
    out = capsys.readouterr().out
    for q, _ in LEARNED:
        assert any(line.startswith("+") and line.endswith(q) for line in out.splitlines()), out
    assert "jane.doe" not in out and "personal data" in out
    assert main(["suggest", "--routes", str(folder), "--index", str(index), "--write"]) == 0
    assert main(["build", "--routes", str(folder), "--out", str(index)]) == 0

    # 4. The rebuilt router decides those queries by the index, on the right routes.
    rebuilt = load(folder, index)
    for q, route in LEARNED:
        d = rebuilt.route(q)
        assert (d.method, d.route) == ("index", route), (q, d.reason)
    assert "jane.doe" not in "".join(p.read_text() for p in folder.glob("*.yaml"))
    # ... so the same journal proposes nothing more
    capsys.readouterr()
    assert main(["suggest", "--routes", str(folder), "--index", str(index)]) == 0
    assert "nothing to change" in capsys.readouterr().out

    # 5. monitor over the trace and the store shows the journal, shadow and feedback figures.
    capsys.readouterr()
    report = tmp_path / "report"
    assert main(["monitor", "--routes", str(folder),  # the trace: router.trace_path
                 "--out", str(report), "--window", "1d", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["store"] | {"path": None} == {
        "path": None, "found": True, "requests": len(journal), "feedback": 3,
        "shadow": len(verdicts), "gate_records": 0}
    assert figures["requests"] == len(journal)
    assert figures["methods"]["classifier"] == pytest.approx(len(CLASSIFIED) / len(journal))
    shadow = {(q["route"], q["model"]): q for q in figures["quality"]["shadow"]}
    assert shadow["greet", "fast"]["losses"] == 1 and shadow["step:summarise", "fast"]["n"] == 1
    feedback = {(q["route"], q["model"]): q for q in figures["quality"]["feedback"]}
    assert feedback["billing", "fast"]["corrections"] == 1
    assert feedback["greet", "fast"]["mean"] == 0.0
    assert feedback["step:summarise", "fast"]["mean"] == 1.0
    # savings are priced at the shadow reference, the model routing avoided
    assert figures["savings"]["baseline"] == "powerful"
    assert figures["savings"]["saved_usd"] > 0
    assert figures["savings"]["shadow_cost_usd"] > 0
    text = (report / "report.md").read_text()
    assert "shadow" in text and "feedback" in text
    kinds = [rec.get("kind", "request") for rec in read_trace(tmp_path / "trace.jsonl")]
    assert kinds.count("feedback") == 3 and kinds.count("shadow") == len(verdicts)

    # 6. fit --outcomes: too few labelled rows is a clear refusal, not a bad fit.
    capsys.readouterr()
    assert main(["fit", "--outcomes", "--routes", str(folder), "--index", str(index),
                 "--dry-run"]) != 0
    err = capsys.readouterr().err
    assert "4 rows (classifier 3, feedback 1)" in err and "50 needed" in err, err
    assert "--min-rows" in err and "not routed (agent step or named model)" in err, err


def test_the_example_route_set_journals_without_text_and_the_gateway_benchmark_keeps_it(
        tmp_path: Path) -> None:
    """`semroute.feedback` works out of the box on routes/; the gateway benchmark measures that
    production setting, not a lighter one."""
    from benchmarks.gateway_targets import bench_routes
    from semroute.config import load_routes

    for folder in (REPO / "routes", bench_routes(tmp_path, "http://127.0.0.1:9/v1")):
        outcomes = load_routes(folder).settings.outcomes
        assert (outcomes.log_requests, outcomes.keep_text) == (True, False), folder
