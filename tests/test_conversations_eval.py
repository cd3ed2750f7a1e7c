"""`semroute eval --conversations`: loading conversation CSVs (and their errors, by file, line
and column), first-turn / follow-up metrics computed by hand on a tiny set through a scripted
router, and the real router and command on a tiny route set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from semroute.cli import main
from semroute.errors import DataError
from semroute.index import build_index
from semroute.quality import evaluate_conversations, load_conversations
from semroute.quality.conversations import previous_glued, user_turns
from semroute.routing import Candidate, Decision, Router
from tests.conftest import WriteRoutes

REPO = Path(__file__).resolve().parent.parent
HEADER = "conversation_id,turn,speaker,text,label,extra\n"
# two conversations, interleaved and out of order in the file; hand-scored below
HAND = HEADER + """\
c1,0,user,write a python function to sort a list,code,x
c2,2,assistant,Hi! What can I do?,,
c1,1,assistant,Here it is.,,
c1,2,user,and in java?,code,
c2,3,user,hello there,greet,
c1,4,user,thanks,greet,
c1,3,assistant,Done.,,
c2,5,user,what is the capital of peru,none,
c2,6,user,and of chile,oos,
c2,7,user,my cat is sick,pets,
"""


def write(tmp_path: Path, text: str, name: str = "conv.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def dec(route: str | None, method: str = "index") -> Decision:
    cands = (Candidate(route, 0.9, ()),) if route else ()
    return Decision(query="q", route=route, method=method,  # type: ignore[arg-type]
                    score=0.9, margin=0.2, threshold=0.5, margin_threshold=0.05, reason="",
                    candidates=cands, timings_ms={"encode": 1.0})


# what the scripted router answers: by the last message's text, and whether it saw context
IN_CONTEXT = {"and in java?": dec("code"), "thanks": dec("code"),
              "and of chile": dec("greet", "default")}
ALONE = {"write a python function to sort a list": dec("code"), "and in java?": dec(None,
                                                                                    "undecided"),
         "hello there": dec("greet"), "thanks": dec("greet"),
         "what is the capital of peru": dec("greet", "default"), "and of chile": dec("code"),
         "my cat is sick": dec(None, "undecided")}


class Scripted:
    """Answers `route_batch` from the tables above; records what it was asked."""

    def __init__(self) -> None:
        self.routes = SimpleNamespace(names=["code", "greet"])
        self.index = SimpleNamespace(manifest=SimpleNamespace(build_id="b1"))
        self.asked: list[Any] = []

    def route_batch(self, requests: list[Any], *, use_classifier: bool = True) -> list[Decision]:
        self.asked += requests
        out = []
        for r in requests:
            if isinstance(r, str):
                out.append(ALONE[r])
            else:
                last = r[-1]["content"]
                out.append(IN_CONTEXT.get(last, ALONE[last]) if len(r) > 1 else ALONE[last])
        return out


def test_load_orders_turns_and_marks_first_turns_and_followups(tmp_path: Path) -> None:
    convs = load_conversations(write(tmp_path, HAND))
    assert [c.id for c in convs] == ["c1", "c2"]
    assert [t.turn for t in convs[0].turns] == [0, 1, 2, 3, 4]
    assert convs[1].turns[2].label == "oos"  # 'none' is read as oos
    marks = [(convs[t.conversation].turns[t.position].text, t.first) for t in user_turns(convs)]
    assert marks == [("write a python function to sort a list", True), ("and in java?", False),
                     ("thanks", True), ("hello there", True),
                     ("what is the capital of peru", True), ("and of chile", False),
                     ("my cat is sick", True)]
    # the context of a turn: every turn up to it, assistant turns included
    assert convs[0].messages(2) == [
        {"role": "user", "content": "write a python function to sort a list"},
        {"role": "assistant", "content": "Here it is."},
        {"role": "user", "content": "and in java?"}]
    assert previous_glued(convs[0], 2) == "write a python function to sort a list and in java?"
    assert previous_glued(convs[0], 0) == "write a python function to sort a list"


def test_metrics_match_hand_computed_values(tmp_path: Path) -> None:
    convs = load_conversations(write(tmp_path, HAND))
    router = Scripted()
    res = evaluate_conversations(router, convs)  # type: ignore[arg-type]
    d = res.to_dict()
    # turns (first?): sort(F) code, java(f) code, thanks(F) greet, hello(F) greet,
    # peru(F) oos, chile(f) oos, cat(F) pets->oos
    # in context: code✓ code✓ code✗ greet✓ default->oos✓ default->oos✓ undecided->oos✓
    assert d["accuracy"] == pytest.approx(6 / 7)
    assert d["first_turn_accuracy"] == pytest.approx(4 / 5)
    assert d["followup_accuracy"] == pytest.approx(2 / 2)
    # alone: code✓ undecided✗ greet✓ greet✓ default->oos✓ code✗ undecided->oos✓
    last = d["last_turn_only"]
    assert last["accuracy"] == pytest.approx(5 / 7)
    assert last["first_turn_accuracy"] == pytest.approx(5 / 5)
    assert last["followup_accuracy"] == pytest.approx(0 / 2)
    assert {k: d[k] for k in ("conversations", "user_turns", "first_turns", "followup_turns",
                              "oos_turns", "unknown_label_turns")} == {
        "conversations": 2, "user_turns": 7, "first_turns": 5, "followup_turns": 2,
        "oos_turns": 3, "unknown_label_turns": 1}
    assert d["unknown_labels"] == {"pets": 1}
    # each user turn asked once per rule: as messages (with context), then as text
    assert len(router.asked) == 14
    assert router.asked[1][-1] == {"role": "user", "content": "and in java?"}
    assert len(router.asked[1]) == 3 and router.asked[7 + 1] == "and in java?"


BAD = [
    ("conversation_id,turn,speaker,text\n", "conv.csv:1: column 'label' is missing"),
    (HEADER + "c1,x,user,hi,greet,\n", "conv.csv:2: column 'turn': 'x' is not an integer"),
    (HEADER + "c1,0,bot,hi,greet,\n", "conv.csv:2: column 'speaker': 'bot' is not"),
    (HEADER + "c1,0,user,hi,,\n", "conv.csv:2: column 'label': a user turn with no label"),
    (HEADER + "c1,0,user,  ,greet,\n", "conv.csv:2: column 'text': a user turn with no text"),
    (HEADER + "c1,0,user,hi,greet,\nc2,0,user,yo,greet,\nc1,0,assistant,hey,,\n",
     "conv.csv:4: column 'turn': turn 0 of conversation 'c1' already on line 2"),
    (HEADER + ",0,user,hi,greet,\n", "conv.csv:2: column 'conversation_id': empty"),
    (HEADER + "c1,0,assistant,hi,,\n", "conv.csv: no user turns"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_files_name_file_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("?", r"\?")):
        load_conversations(write(tmp_path, text))


def test_speaker_in_any_case_extra_columns_and_blank_assistant_turns(tmp_path: Path) -> None:
    convs = load_conversations(write(tmp_path, HEADER + "c1,1,USER,hi,greet,1\n"
                                                         "c1,0,Assistant,,,\n"))
    assert [(t.speaker, t.text) for t in convs[0].turns] == [("assistant", ""), ("user", "hi")]
    assert convs[0].messages(1) == [{"role": "user", "content": "hi"}]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_conversations(tmp_path / "nope.csv")


# ---------------------------------------------------------------- the real router


@pytest.fixture
def tiny(write_routes: WriteRoutes, tmp_path: Path) -> tuple[Path, Path, Path]:
    routes = write_routes()
    index = tmp_path / "index"
    build_index(routes, index)
    return routes, index, write(tmp_path, HAND)


def test_real_router_last_turn_only_is_route_of_the_text(tiny: tuple[Path, Path, Path]) -> None:
    routes, index, data = tiny
    router = Router.load(routes, index, classifier=False)
    convs = load_conversations(data)
    res = evaluate_conversations(router, convs)
    texts = [convs[t.conversation].turns[t.position].text for t in user_turns(convs)]
    assert [d.route for d in res.decisions["last_turn_only"]] == \
        [router.route(t, use_classifier=False).route for t in texts]
    # exact utterances are routed right on their own
    assert res.decisions["last_turn_only"][0].route == "code"
    m = res.by_rule["last_turn_only"]
    assert 0.0 <= m["accuracy"] <= 1.0 and m["first_turn_accuracy"] is not None
    # in context: the same decisions as routing each turn's messages one at a time
    asked = [convs[t.conversation].messages(t.position) for t in user_turns(convs)]
    assert [d.route for d in res.decisions["conversation"]] == \
        [router.route(m, use_classifier=False).route for m in asked]
    # the first user turn has no context: the same decision as its text alone
    assert res.decisions["conversation"][0].route == res.decisions["last_turn_only"][0].route


def test_cli_json_and_table(tiny: tuple[Path, Path, Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    routes, index, data = tiny
    args = ["eval", "--conversations", "--data", str(data), "--routes", str(routes),
            "--index", str(index)]
    assert main([*args, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    keys = {"accuracy", "followup_accuracy", "first_turn_accuracy"}
    assert keys <= set(d) and set(d["last_turn_only"]) == keys
    assert d["user_turns"] == 7 and d["followup_turns"] == 2 and d["first_turns"] == 5
    assert main([*args, "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "follow-ups" in out and "last turn only" in out and "in context" in out
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["user_turns"] == 7 and "follow-ups" in (tmp_path / "rep" / "report.md").read_text()


def test_cli_bad_file_through_python_m(tiny: tuple[Path, Path, Path], tmp_path: Path) -> None:
    routes, index, _ = tiny
    bad = write(tmp_path, HEADER + "c1,0,user,hi,greet,\nc1,1,robot,hey,,\n", "bad.csv")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "semroute.cli", "eval", "--conversations",
                           "--data", str(bad), "--routes", str(routes), "--index", str(index),
                           "--json"], capture_output=True, text=True, env=env, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "bad.csv:3: column 'speaker': 'robot' is not 'user' or 'assistant'" in proc.stderr
