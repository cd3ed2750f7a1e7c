"""Conversation-aware decisions: a follow-up is routed in the context of the turns before it,
a turn that stands on its own is routed on itself, and the Decision says which turns counted.
Real encoder, real FAISS, the example route set."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from semroute.errors import QueryError
from semroute.index import build_index
from semroute.routing import Decision, Router
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import load, write_set

OPENING = "write a python function that parses a CSV file"
ANSWER = ("Here is one using the csv module:\n\nimport csv\n\ndef parse(path):\n"
          "    with open(path, newline='') as f:\n        return list(csv.DictReader(f))")
FOLLOW_UPS = ["now make it faster", "can you add tests too?", "thanks! and in rust?",
              "yes, do that", "why?"]


def chat(*turns: str) -> list[dict[str, Any]]:
    """Alternating user / assistant messages, starting with the user."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(turns)]


@pytest.mark.parametrize("follow_up", FOLLOW_UPS)
def test_coding_follow_ups_stay_on_code_generation(router: Router, follow_up: str) -> None:
    d = router.route(chat(OPENING, ANSWER, follow_up), use_classifier=False)
    assert d.route == "code_generation", d.reason
    assert d.method == "index"
    assert "in context" in d.reason


def test_follow_ups_alone_would_go_elsewhere(router: Router) -> None:
    """Why the context matters: most of these turns, alone, are not routed to code."""
    alone = [router.route(q, use_classifier=False).route for q in FOLLOW_UPS]
    assert sum(r == "code_generation" for r in alone) <= 1, alone


def test_a_long_coding_session_stays_on_code_generation(router: Router) -> None:
    msgs = chat(OPENING, ANSWER)
    for q in FOLLOW_UPS:
        msgs.append({"role": "user", "content": q})
        d = router.route(msgs, use_classifier=False)
        assert d.route == "code_generation", (q, d.reason)
        msgs.append({"role": "assistant", "content": "Done, here is the updated function:\n\n"
                     "def parse(path):\n    with open(path) as f:\n        return f.read()"})


def test_a_topic_switch_goes_to_the_new_route(router: Router) -> None:
    before = chat(OPENING, ANSWER, "now make it faster", "Here it is, faster.")
    d = router.route([*before, {"role": "user", "content":
                                "translate this sentence into Spanish: I love cheese"}],
                     use_classifier=False)
    assert d.route == "translation_rewriting", d.reason
    assert d.context == ()
    # a switch the index is unsure of is not pulled back to the old topic either
    unsure = router.route([*before, {"role": "user", "content":
                                     "translate 'good morning, how are you?' into French"}],
                          use_classifier=False)
    assert unsure.candidates[0].route == "translation_rewriting", unsure.reason


def test_a_standalone_turn_is_unaffected_by_context(router: Router) -> None:
    q = "what is the capital of France?"
    alone = router.route(q, use_classifier=False)
    in_chat = router.route(chat(OPENING, ANSWER, q), use_classifier=False)
    assert alone.method == "index"
    assert (in_chat.route, in_chat.score, in_chat.margin, in_chat.reason) == \
        (alone.route, alone.score, alone.margin, alone.reason)
    assert in_chat.context == ()


def test_the_decision_explains_the_turns_used(router: Router) -> None:
    msgs = [{"role": "system", "content": "You are helpful."}, *chat(OPENING, ANSWER, "why?")]
    d = router.route(msgs, use_classifier=False)
    assert [(c.turn, c.role) for c in d.context] == [(1, "user"), (2, "assistant"), (3, "user")]
    assert sum(c.weight for c in d.context) == pytest.approx(1.0, abs=1e-3)
    assert d.context[0].route == "code_generation"
    latest = d.context[-1]
    assert latest.weight == max(c.weight for c in d.context)  # the newest turn counts most
    assert d.query == "why?"
    assert d.to_dict()["context"][0] == {"turn": 1, "role": "user",
                                         "weight": d.context[0].weight,
                                         "route": "code_generation"}
    assert "1 earlier user turn(s) and 1 assistant turn(s)" in d.reason


def test_string_queries_and_one_turn_conversations_decide_alike(router: Router) -> None:
    for q in [OPENING, "tell me a joke", "why?"]:
        a, b = router.route(q, use_classifier=False), router.route(chat(q), use_classifier=False)
        assert (a.route, a.method, a.score, a.margin, a.reason, a.context) == \
            (b.route, b.method, b.score, b.margin, b.reason, b.context)


def test_route_batch_mixes_strings_and_conversations(router: Router) -> None:
    ds = router.route_batch([OPENING, chat(OPENING, ANSWER, "why?"), "tell me a joke"],
                            use_classifier=False)
    assert [d.route for d in ds][:2] == ["code_generation", "code_generation"]
    alone = router.route(OPENING, use_classifier=False)
    assert (ds[0].score, ds[0].margin, ds[0].reason) == (alone.score, alone.margin, alone.reason)
    assert ds[1].context and not ds[0].context and not ds[2].context


def test_content_parts_are_read_and_images_skipped(router: Router) -> None:
    msgs = [{"role": "user", "content": [{"type": "text", "text": OPENING}]},
            {"role": "assistant", "content": ANSWER},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}},
                                         {"type": "text", "text": "yes, do that"}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "y"}}]}]
    d = router.route(msgs, use_classifier=False)
    assert d.route == "code_generation" and d.query == "yes, do that"
    assert [c.turn for c in d.context] == [0, 1, 2]


def test_messages_without_a_user_turn_are_refused(router: Router) -> None:
    with pytest.raises(QueryError, match="no user turn"):
        router.route([{"role": "system", "content": "hi"},
                      {"role": "assistant", "content": "hello"}])


def test_async_twin_decides_the_same(router: Router) -> None:
    msgs = chat(OPENING, ANSWER, "thanks! and in rust?")

    async def both() -> list[Decision]:
        return list(await asyncio.gather(router.aroute(msgs, use_classifier=False),
                                         router.aroute("tell me a joke",
                                                       use_classifier=False)))

    a, b = asyncio.run(both())
    sync = router.route(msgs, use_classifier=False)
    assert (a.route, a.score, a.context) == (sync.route, sync.score, sync.context)
    assert a.route == "code_generation" and b.route == router.route("tell me a joke").route


def test_the_classifier_judges_a_follow_up_with_the_recent_turns(
        tmp_path: Path, fault_server: MakeFaultServer) -> None:
    server = fault_server([200])
    models = {"clf": {"provider": "openai", "model": "c", "base_url": server.openai_base_url},
              "m": {"provider": "openai", "model": "x"}}
    routes = write_set(tmp_path / "routes", models, ["m"], classifier_model="clf",
                       margin_threshold=1.5)  # the index decides nothing: the classifier runs
    build_index(routes, tmp_path / "index")
    clf_router = load(routes, tmp_path / "index")
    d = clf_router.route(chat("write a python function to sort a list", "Done.",
                              "and now in rust", "Here.", "why?"))
    assert d.classifier is not None
    sent = server.bodies[0]["messages"][-1]["content"]
    assert "write a python function to sort a list" in sent and "and now in rust" in sent
    assert sent.rstrip().endswith("why?")


def test_a_turn_that_names_the_conversation_is_a_follow_up(router: Router) -> None:
    q = "Explain your previous answer line by line"
    assert router.route(q, use_classifier=False).route != "code_generation"
    d = router.route(chat(OPENING, ANSWER, q), use_classifier=False)
    assert d.route == "code_generation" and "refers to earlier turns" in d.reason


def test_a_dispatched_follow_up_traces_the_turns_that_counted(
        tmp_path: Path, fault_server: MakeFaultServer) -> None:
    from semroute.dispatching import Dispatcher
    from semroute.telemetry import read_trace

    server = fault_server([200])
    routes = write_set(tmp_path / "routes", {"m": {"provider": "openai", "model": "m",
                                                   "base_url": server.openai_base_url}}, ["m"])
    build_index(routes, tmp_path / "index")
    d = Dispatcher(load(routes, tmp_path / "index", classifier=False),
                   trace=tmp_path / "trace.jsonl")
    r = d.dispatch(chat("write a python function to sort a list", "def f(xs): ...",
                        "now make it faster"), max_tokens=8)
    [record] = read_trace(tmp_path / "trace.jsonl")
    assert r.decision.context, r.decision.reason
    assert record["context"] == [{"turn": w.turn, "role": w.role, "weight": w.weight,
                                  "route": w.route} for w in r.decision.context]
    assert "now make it faster" not in str(record)  # turn positions, never their text


def test_a_weak_follow_up_stays_on_the_route_a_confident_turn_set(router: Router) -> None:
    """'and the header row?' is too vague to clear the margin threshold even in context
    (combined margin ~0.04 < 0.05); the opening turn settled the topic with confidence and the
    combined scores still point to it, so the follow-up stays there instead of going to the
    classifier without need."""
    q = "and the header row?"
    d = router.route(chat(OPENING, ANSWER, q), use_classifier=False)
    assert (d.route, d.method) == ("code_generation", "index"), d.reason
    assert "stays on the conversation's route 'code_generation'" in d.reason
    assert d.margin < d.margin_threshold  # accepted for the conversation, not on its own
    assert router.route(q, use_classifier=False).route != "code_generation"


def test_without_a_confident_earlier_turn_a_weak_follow_up_stays_undecided(
        router: Router) -> None:
    vague = "can you help me with something?"
    assert router.route(vague, use_classifier=False).method == "undecided"
    d = router.route(chat(vague, "Sure, what do you need?", "and the header row?"),
                     use_classifier=False)
    assert "stays on the conversation's route" not in d.reason


def test_a_weak_follow_up_stays_on_the_anchor_even_when_the_context_leans_elsewhere(
        router: Router) -> None:
    """'what about the header row?' after a debugging question: the combined scores lean to
    code_generation without clearing the thresholds; the confident opening set the topic and
    the turn does not clearly leave it, so it stays on debugging (and says where it leaned)."""
    opening = "my python script throws a KeyError when I read the config"
    assert router.route(opening, use_classifier=False).route == "debugging"
    d = router.route(chat(opening, "Sure, here you go.", "what about the header row?"),
                     use_classifier=False)
    assert (d.route, d.method) == ("debugging", "index"), d.reason
    assert d.candidates[0].route == "code_generation"
    assert "stays on the conversation's route 'debugging'" in d.reason
    assert "lean to 'code_generation'" in d.reason


def test_several_weak_turns_that_agree_decide_a_follow_up(router: Router) -> None:
    """No turn is confident alone, but two earlier user turns point where the combined
    scores do: their agreement decides the follow-up, and the reason names them."""
    turns = ["hmm, big numbers?", "hmm, the units?", "what about the units?"]
    for t in turns:
        alone = router.route(t, use_classifier=False)
        assert alone.method == "undecided" and alone.candidates[0].route == "simple_lookup"
    d = router.route(chat(turns[0], "Go on.", turns[1], "Go on.", turns[2]),
                     use_classifier=False)
    assert (d.route, d.method) == ("simple_lookup", "index"), d.reason
    assert "2 earlier user turns (0, 2) point to 'simple_lookup'" in d.reason
    one = router.route(chat(turns[1], "Go on.", turns[2]), use_classifier=False)
    assert one.method == "undecided"  # a single earlier turn is not enough


def test_a_turn_that_answers_within_the_topic_does_not_become_the_anchor(
        router: Router) -> None:
    """'the total?' is confident alone (elsewhere) but leans only a little away from the
    summary the conversation is about: the vague turn after it stays on summarisation."""
    opening = "summarise this article about climate policy in three bullet points"
    assert router.route(opening, use_classifier=False).route == "summarisation"
    assert router.route("the total?", use_classifier=False).method == "index"
    d = router.route(chat(opening, "Sure.", "the total?", "Done.", "and the other file?"),
                     use_classifier=False)
    assert (d.route, d.method) == ("summarisation", "index"), d.reason
    assert "turn 2 leaned only a little away from it" in d.reason


def test_a_confident_switch_in_a_replys_words_takes_its_own_route(router: Router) -> None:
    """"ok, what's 17 times 23?" opens like a reply, but it is confident alone and far ahead
    of the design conversation in its own scores: a topic switch, routed on itself."""
    opening = "design a microservice architecture for an online shop"
    q = "ok, what's 17 times 23?"
    assert router.route(q, use_classifier=False).route == "math_reasoning"
    d = router.route(chat(opening, "Sure, here you go.", q), use_classifier=False)
    assert (d.route, d.method) == ("math_reasoning", "index"), d.reason
    assert d.context == ()
    short = router.route(chat(OPENING, ANSWER, "yes, do that"), use_classifier=False)
    assert short.route == "code_generation"  # a reply that names nothing stays a follow-up
