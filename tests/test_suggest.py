"""`semroute suggest`: new utterances from classifier decisions and feedback corrections
(personal data, duplicates and queries the index already routes right left out, conflicts
reported), tier moves from outcome evidence, and a patch that `--write` applies to the route
files keeping their comments. Real encoder, real FAISS, real SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from semroute.cli import main
from semroute.config import load_routes
from semroute.errors import ConfigError
from semroute.index import build_index
from semroute.outcomes import OutcomeStore
from semroute.quality.route_patch import RouteEdit, apply_patch, make_patch
from semroute.quality.suggesting import parse_time
from semroute.quality.suggestions import suggest
from semroute.routing import Router
from tests.suggest_support import log, outcomes, write_route_set

CHARGED = "I was charged twice for my subscription this month"
ROWS = [
    # (request id, text, route served, method)
    ("r1", CHARGED, "billing", "classifier"),
    ("r2", "I got charged twice for my subscription this month", "billing", "classifier"),
    ("r3", "can I get a copy of the receipt for March", "billing", "classifier"),
    ("r4", "hey, can you tell me the price of the family plan", "billing", "classifier"),
    ("r5", "refund the charge on card 4111 1111 1111 1111", "billing", "classifier"),
    ("r6", "email my invoice to jo@example.com", "billing", "classifier"),
    ("r7", "I want a refund for my last payment please", "billing", "classifier"),
    ("r8", "where can I download my invoice", "billing", "classifier"),
    ("r9", "write a SQL query joining two tables please", "billing", "classifier"),
    ("r10", "the checkout page of my shop crashes with a null pointer", "billing", "index"),
    ("r11", "hello there", "greet", "classifier"),
    ("r12", "good evening, lovely to chat", "billing", "classifier"),
    ("r13", "what is the weather like in Paris", "greet", "index"),
]
FEEDBACK = {"r10": "code", "r12": "greet"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suggest")
    write_route_set(root / "routes")
    build_index(root / "routes", root / "index")
    with OutcomeStore(root / "routes" / "outcomes.db") as store:
        log(store, ROWS, feedback=FEEDBACK)
    return root


@pytest.fixture
def router(folder: Path) -> Router:
    return Router.load(folder / "routes", folder / "index", classifier=False)


@pytest.fixture
def store(folder: Path) -> Iterator[OutcomeStore]:
    with OutcomeStore(folder / "routes" / "outcomes.db") as s:
        yield s


def test_utterances_come_from_classifier_decisions_and_feedback_corrections(
        router: Router, store: OutcomeStore) -> None:
    found = suggest(router, store=store, per_route=10).utterances
    texts = {r: [p.text for p in ps] for r, ps in found.proposals.items()}
    charged = {CHARGED, ROWS[1][1]}  # r1 and r2 say the same (cosine 0.98): one is kept
    assert len(set(texts["billing"]) & charged) == 1
    assert set(texts["billing"]) - charged == {"can I get a copy of the receipt for March",
                                               "hey, can you tell me the price of the family plan"}
    assert texts["code"] == ["the checkout page of my shop crashes with a null pointer"], \
        "a feedback label turns an index decision into a labelled example"
    assert set(texts["greet"]) == {"hello there", "good evening, lovely to chat"}, \
        "a feedback label overrides the classifier's route"
    (sources,) = {p.source for p in found.proposals["code"]}
    assert sources == "feedback"
    assert found.dropped["personal_data"] == 2 and set(found.personal_kinds) == {
        "card_number", "email"}
    assert found.dropped["duplicate"] == 1, "r8 is an existing utterance"
    assert found.dropped["routed_right"] == 1, "r7: the index already sends it to billing"
    assert found.dropped["near_duplicate"] == 1, "r2 says what r1 says (cosine 0.98)"
    (conflict,) = found.conflicts
    assert (conflict.text, conflict.route, conflict.other_route) == (
        "write a SQL query joining two tables please", "billing", "code")
    assert conflict.other_utterance == "write a SQL query joining two tables"
    every = [p.text for ps in found.proposals.values() for p in ps]
    assert not any("4111" in t or "@" in t for t in every), "personal data is never copied"


def test_the_per_route_limit_keeps_the_most_diverse(router: Router, store: OutcomeStore) -> None:
    found = suggest(router, store=store, per_route=1).utterances
    assert len(found.proposals["billing"]) == 1
    assert found.dropped["limit"] >= 2


def test_write_applies_the_patch_keeping_comments_and_the_routes_load(
        folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    work = tmp_path / "routes"
    shutil.copytree(folder / "routes", work)
    index = tmp_path / "index"
    build_index(work, index)
    before = (work / "billing.yaml").read_text()
    assert main(["suggest", "--routes", str(work), "--index", str(index),
                 "--out", str(tmp_path / "p.diff")]) == 0
    out = capsys.readouterr().out
    assert "+  - can I get a copy" not in out, "with --out the patch goes to the file"
    diff = (tmp_path / "p.diff").read_text()
    assert "+  - can I get a copy of the receipt for March\n" in diff
    assert (work / "billing.yaml").read_text() == before, "without --write nothing changes"
    assert main(["suggest", "--routes", str(work), "--index", str(index), "--write",
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).name for p in payload["written"]) == ["billing.yaml", "code.yaml",
                                                                "greet.yaml"]
    after = (work / "billing.yaml").read_text()
    assert after.startswith(before), "lines are appended; comments and layout survive"
    assert "# cheap is enough" in after
    routes = load_routes(work)
    billing = next(r for r in routes.routes if r.name == "billing")
    added = "can I get a copy of the receipt for March"
    assert added in billing.utterances and len(billing.utterances) == 8
    build_index(work, index)  # the next step the CLI names
    fresh = Router.load(work, index, classifier=False)
    assert fresh.route(added, use_classifier=False).route == "billing"


def test_a_patch_that_would_break_the_route_set_writes_nothing(folder: Path,
                                                              tmp_path: Path) -> None:
    import shutil

    work = tmp_path / "routes"
    shutil.copytree(folder / "routes", work)
    before = {p.name: p.read_text() for p in work.glob("*.yaml")}
    # the same utterance in two routes is an error of the route set, not of one file
    patch = make_patch(work, [RouteEdit("greet", work / "greet.yaml", ("hello there",)),
                              RouteEdit("billing", work / "billing.yaml", ("hello there",))])
    with pytest.raises(ConfigError, match="nothing was written"):
        apply_patch(patch)
    assert {p.name: p.read_text() for p in work.glob("*.yaml")} == before


def test_edits_keep_the_example_route_files_layout(tmp_path: Path) -> None:
    import shutil

    repo = Path(__file__).resolve().parent.parent / "routes"
    work = tmp_path / "routes"
    shutil.copytree(repo, work)
    edits = [RouteEdit(p.stem, p, (f"a brand new {p.stem}: with a colon", f"it's {p.stem}"),
                       ("balanced", "balanced_backup"), "balanced")
             for p in sorted(work.glob("*.yaml")) if p.name != "models.yaml"]
    patch = make_patch(work, edits)
    assert not patch.problems
    for path, (old, new) in patch.files.items():
        changed = [ln for ln in new.splitlines() if ln not in old.splitlines()]
        assert len(new.splitlines()) == len(old.splitlines()) + 2, path
        assert any(f"- 'a brand new {path.stem}: with a colon'" in ln for ln in changed)
        data = yaml.safe_load(new)
        assert data["model"] == ["balanced", "balanced_backup"]
        assert data["metadata"]["tier"] == "balanced"
    apply_patch(patch)
    assert all(f"it's {r.file.stem}" in r.utterances for r in load_routes(work).routes)


def test_tier_moves_up_down_and_none_for_tiny_evidence(folder: Path, tmp_path: Path) -> None:
    import shutil

    work = tmp_path / "routes"
    shutil.copytree(folder / "routes", work)
    (work / "outcomes.db").unlink()
    with OutcomeStore(work / "outcomes.db") as store:
        outcomes(store, "billing", "fast", good=30, bad=20)  # fails 40% on fast: upgrade
        outcomes(store, "code", "fast", good=40, bad=0, source="judge")  # fast always does it
        outcomes(store, "code", "powerful", good=10, bad=0)
        outcomes(store, "greet", "fast", good=1, bad=4)  # bad, but only 5 outcomes
        router = Router.load(work, folder / "index", classifier=False)
        found = suggest(router, store=store)
    moves = {m.route: m for m in found.moves}
    assert set(moves) == {"billing", "code"}
    up, down = moves["billing"], moves["code"]
    assert (up.direction, up.to_tier, up.to_models) == ("up", "powerful", ("powerful",))
    assert "mean quality 0.60 over 50 outcomes" in up.why
    assert (down.direction, down.to_tier, down.to_models) == ("down", "fast", ("fast",))
    assert "'fast' on 'code'" in down.why and "judge 40" in down.why
    assert any(n.startswith("greet: stays: only 5 outcomes") for n in found.notes)
    apply_patch(found.patch)
    billing = (work / "billing.yaml").read_text()
    assert "model: powerful   # cheap is enough\n" in billing, "changed in place, comment kept"
    assert "metadata: {tier: powerful}" in billing
    code = yaml.safe_load((work / "code.yaml").read_text())
    assert code["model"] == ["fast"] and code["metadata"] == {"tier": "fast"}
    load_routes(work)


def test_trace_queries_are_a_source_too(router: Router, tmp_path: Path) -> None:
    """With `router.trace_include_query`, a trace line carries the query: no store needed."""
    trace = tmp_path / "trace.jsonl"
    lines = [{"ts": "2026-11-30T10:00:00.000+00:00", "request_id": "t1", "route": "greet",
              "method": "classifier", "query": "good afternoon, how have you been"},
             {"ts": "2026-11-30T10:00:01.000+00:00", "request_id": "t2", "route": "greet",
              "method": "classifier"},  # no query: text unknown
             {"ts": "2026-11-30T10:00:02.000+00:00", "request_id": "t3", "route": "code",
              "method": "index", "query": "write a rust cli"}]
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    found = suggest(router, traces=[trace])
    assert [p.text for p in found.utterances.proposals["greet"]] == [
        "good afternoon, how have you been"]
    assert found.to_dict()["utterances"]["dropped"]["no_text"] == 1
    assert set(found.utterances.proposals) == {"greet"}, "index decisions teach nothing"
    later = suggest(router, traces=[trace], since=parse_time("2026-11-30T11:00:00+00:00"))
    assert later.utterances.candidates == 0


def test_shadow_verdicts_and_feedback_scores_are_evidence_too(tmp_path: Path) -> None:
    from semroute.outcomes import FeedbackEntry, LoggedRequest, OutcomeRecord, ShadowVerdict
    from semroute.outcomes import text_hash as th
    from semroute.quality.tier_moves import collect_evidence

    with OutcomeStore(tmp_path / "o.db") as store:
        with store.transaction() as tx:
            tx.log_requests([LoggedRequest(request_id=f"q{i}", route="billing", method="index",
                                           model="fast", text_hash=th(f"q{i}"))
                             for i in range(4)])
            tx.add_feedback(FeedbackEntry(request_id="q0", score=0.0))
            tx.add_feedback(FeedbackEntry(request_id="q1", score=1.0, label="billing"))
            tx.add_feedback(FeedbackEntry(request_id="q2", label="code"))  # no score
            tx.add_feedback(FeedbackEntry(request_id="q3", score=0.0))  # also a record:
            tx.add_many([OutcomeRecord(text_hash=th("q3"), model="fast", score=0.0,
                                       source="feedback", route="billing", request_id="q3")])
            for i, score in enumerate((1.0, 0.5, 0.0)):  # better, tie, worse
                tx.add_shadow(ShadowVerdict(request_id=f"q{i}", route="billing", model="fast",
                                            reference="powerful", judge="powerful",
                                            score=score, verdicts=("A", "B")))
        ev = collect_evidence(store)
    e = ev[("billing", "fast")]
    assert sorted(e.values) == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert dict(e.sources) == {"feedback score": 2, "feedback": 1, "shadow": 3}, \
        "q3's score counts once (its record), a tie is as good as the reference"


def test_feedback_and_shadow_trace_lines_do_not_hide_the_request_they_name(
        router: Router, tmp_path: Path) -> None:
    """A `"kind": "feedback"` or `"shadow"` line carries the request's id but no query: the
    request's own line still supplies the text."""
    trace = tmp_path / "trace.jsonl"
    lines = [{"ts": "2026-11-30T10:00:00.000+00:00", "request_id": "t1", "route": "greet",
              "method": "classifier", "query": "good afternoon, how have you been"},
             {"ts": "2026-11-30T10:00:05.000+00:00", "kind": "feedback", "request_id": "t1",
              "score": 1.0},
             {"ts": "2026-11-30T10:00:09.000+00:00", "kind": "shadow", "request_id": "t1",
              "score": 0.5}]
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    found = suggest(router, traces=[trace])
    assert [p.text for p in found.utterances.proposals["greet"]] == [
        "good afternoon, how have you been"]
