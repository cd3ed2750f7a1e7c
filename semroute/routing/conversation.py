"""Conversation-aware decisions: a follow-up ("yes, do that", "now in rust") is routed in the
context of the turns before it, a turn that stands on its own is routed on itself.

The rule, chosen by measurement on multi-turn data (see ARCHITECTURE.md): the latest user turn
is scored alone; when its own decision is confident, that is the decision. Otherwise the route
scores of earlier turns are added with decaying weights (`DECAY` per user turn back, assistant
turns at `ASSISTANT_WEIGHT` of the user turn after them), walking back at most
`LOOKBACK_USER_TURNS` user turns and stopping at the last turn that stood on its own (the
anchor: it set the conversation's route, unless it leaned only a little away from an earlier
confident turn's route: then it answered within that topic and the earlier turn is the
anchor). A turn that clearly points elsewhere (its own score
near the threshold and well ahead of both the context's pick and the anchor's route) keeps its
own route: that is a topic switch, not a follow-up. A short turn that opens like a reply ("yes,
do that", "why?", "thanks! and in rust?") or one that names the conversation ("your previous
response", "the above") is a follow-up even when the index is confident about it (it would
match small talk), unless it is confident and far ahead of the context ("thanks, now the
weather"). When the combined scores stay under the thresholds, the follow-up stays on the
anchor's route; with no anchor, it takes the combined best route when at least
`CONSENSUS_TURNS` earlier user turns point there too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from semroute.errors import QueryError
from semroute.index import Scored
from semroute.providers import Message, message_text
from semroute.routing.decision import Decision, TurnWeight
from semroute.routing.matcher import Matcher, prepare_query

DECAY = 0.85
ASSISTANT_WEIGHT = 0.5
LOOKBACK_USER_TURNS = 6
SWITCH_BELOW_THRESHOLD = 0.1  # own score within this of the threshold may claim a topic switch
SWITCH_GAP = 0.12  # ... when its own best route beats the context's pick by this much
SWITCH_GAP_ANCHOR = 0.18  # ... and the anchor's route by this much
ANCHOR_STAY_GAP = 0.2  # a confident turn this close to an earlier one's route answered in it
REPLY_SWITCH_GAP = 0.3  # a confident reply-form turn this far ahead of both is a switch too
CONSENSUS_TURNS = 2  # earlier user turns whose own best route must agree, without an anchor
REPLY_MAX_WORDS = 5
REPLY_OPENERS = (
    "yes", "yeah", "yep", "yup", "no", "nope", "nah", "ok", "okay", "sure", "thanks", "thank",
    "great", "perfect", "cool", "fine", "and", "also", "now", "then", "so", "but", "why",
    "how come", "what about", "how about", "what if", "same", "again", "do it", "do that",
    "go ahead", "please do", "sounds good", "that", "it", "this", "more", "shorter", "longer",
    "another",
)
_WORD = re.compile(r"[a-z']+")
_REFERS_BACK = re.compile(
    r"\b(your|the|my|that) (previous|earlier|last|above|original|first|second|third) "
    r"(\w+ )?(response|answer|question|example|reply|message|point|option|version|code|one)s?\b"
    r"|\byour (response|answer|reply)\b|\bprevious (question|answer|response)\b"
    r"|\bthe above\b|\b(do|repeat) the same\b|\bcontinue from\b|\bbuilding on\b",
    re.IGNORECASE)
CLASSIFIER_TURNS = 3  # user turns the classifier sees for a follow-up
CLASSIFIER_TURN_CHARS = 300


@dataclass(frozen=True)
class Turn:
    """A conversation turn with text: its index in the messages, role and text."""

    index: int
    role: str
    text: str


def conversation_turns(messages: Sequence[Message]) -> list[Turn]:
    """The user and assistant turns that carry text (string content or text parts), up to
    and including the latest user turn with text; raises `QueryError` when there is none."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise QueryError("a request must be a query string or a list of chat messages")
    turns: list[Turn] = []
    for i, m in enumerate(messages):
        if not hasattr(m, "get"):
            raise QueryError(f"message {i} is not a mapping with 'role' and 'content'")
        role = m.get("role")
        if role in ("user", "assistant"):
            text = message_text(m.get("content"))
            if text.strip():
                turns.append(Turn(i, str(role), text))
    while turns and turns[-1].role != "user":
        turns.pop()
    if not turns:
        raise QueryError("the messages contain no user turn with text to route on")
    return turns


def is_reply(text: str) -> bool:
    """A short turn that opens like a reply to what came before: a follow-up by its form."""
    words = _WORD.findall(text.lower())
    return 0 < len(words) <= REPLY_MAX_WORDS and " ".join(words).startswith(REPLY_OPENERS)


def refers_back(text: str) -> bool:
    """A turn that names the conversation itself ("your previous response", "the above",
    "do the same"): a follow-up whatever else it says."""
    return _REFERS_BACK.search(text) is not None


def window(turns: Sequence[Turn]) -> list[Turn]:
    """The latest user turn and the turns before it that may count: a bounded look-back."""
    out: list[Turn] = []
    users = 0
    for t in reversed(turns):
        if t.role == "user":
            users += 1
            if users > LOOKBACK_USER_TURNS + 1:
                break
        out.append(t)
    return out[::-1]


def recent_user_turns(turns: Sequence[Turn]) -> list[str]:
    """The last few user turns, trimmed, oldest first: what the classifier judges in context."""
    users = [t.text.strip() for t in turns if t.role == "user"][-CLASSIFIER_TURNS:]
    return [u if len(u) <= CLASSIFIER_TURN_CHARS else u[:CLASSIFIER_TURN_CHARS] + "…"
            for u in users]


def match_conversation(matcher: Matcher,
                       messages: Sequence[Message]) -> tuple[Decision, list[str]]:
    """The index's decision for the latest user turn, in the context of the turns before it
    when it does not stand on its own, and the recent user turns a classifier should see.
    Earlier turns' scores come from the matcher's LRU, so only a new turn is encoded."""
    every = conversation_turns(messages)
    recent = recent_user_turns(every)
    turns = window(every)
    t0 = time.perf_counter()
    prepared = [prepare_query(t.text, matcher.max_chars) for t in turns]
    timings = {"normalise": (time.perf_counter() - t0) * 1e3}
    (own_row,), stage = matcher.score_turns([prepared[-1][0]])  # the newest turn first
    timings.update(encode=stage["encode"], search=stage["search"])
    t3 = time.perf_counter() - stage["score"] / 1e3  # the scoring counts in "score"
    idx, th = matcher.index, matcher.thresholds
    own, last = own_row[0], len(turns) - 1
    text, truncated = prepared[-1]

    def alone() -> tuple[Decision, list[str]]:
        return (matcher.decide_scored(text, truncated, timings, own, [own_row[1:]], t3),
                recent if len(recent) > 1 else [])

    rejected = matcher.rejects(own)
    reply = is_reply(text)
    form = "a short reply" if reply else "it refers to earlier turns" if refers_back(text) \
        else rejected
    reply = reply or refers_back(text)
    if len(turns) == 1 or (rejected is None and not reply):
        return alone()  # a standalone turn: earlier turns are not even looked at
    earlier, more = matcher.score_turns([q for q, _ in prepared[:-1]])
    timings.update(encode=timings["encode"] + more["encode"],
                   search=timings["search"] + more["search"])
    t3 = time.perf_counter() - (stage["score"] + more["score"]) / 1e3
    rows = [*earlier, own_row]
    scored = [r[0] for r in rows]
    weights = _weights(turns, prepared, scored, matcher)
    if not weights:
        return alone()
    total = sum(weights.values())
    combined = own.scores.astype(np.float64)
    has = own.has_neighbour.copy()
    for j, w in weights.items():
        combined += w * scored[j].scores
        has |= scored[j].has_neighbour
    combined /= 1.0 + total
    best = int(np.argmax(np.where(has, combined, -np.inf)))
    own_best = int(own.order[0])
    if best == own_best and rejected is None:
        return alone()  # the context agrees with a confident turn
    anchor, leaned = _anchor(turns, weights, scored, matcher)
    held = int(scored[anchor].order[0]) if anchor is not None else None
    ahead = own.scores[own_best] - own.scores[best]
    ahead_of_anchor = own.scores[own_best] - own.scores[held] if held is not None else np.inf
    if reply and rejected is None and not refers_back(text) and \
            min(ahead, ahead_of_anchor) > REPLY_SWITCH_GAP:
        return alone()  # "thanks, now the weather": a confident switch in a reply's words
    if (not reply and own.confidence >= th.score - SWITCH_BELOW_THRESHOLD
            and ahead > SWITCH_GAP and ahead_of_anchor > SWITCH_GAP_ANCHOR):
        return alone()  # the turn points clearly elsewhere: a topic switch
    others = np.argsort(-combined, kind="stable")
    order = np.concatenate(([best], others[others != best]))
    runner_up = float(combined[order[1]]) if len(order) > 1 else 0.0
    mixed = Scored(order, combined.astype(np.float32), has,
                   float(combined[best] - idx.stats.offsets[best]),
                   max(float(combined[best]) - runner_up, 0.0))
    used = [last, *sorted(weights, reverse=True)]
    decision = matcher.decide_scored(text, truncated, timings, mixed,
                                     [rows[j][1:] for j in used], t3)
    names = idx.route_names
    context = tuple(TurnWeight(turns[j].index, turns[j].role,
                               round((1.0 if j == last else weights[j]) / (1.0 + total), 4),
                               names[int(scored[j].order[0])] if scored[j].has_neighbour.any()
                               else None)
                    for j in sorted(used))
    n_user = sum(1 for j in weights if turns[j].role == "user")
    n_asst = len(weights) - n_user
    why = (f"a follow-up ({form}), routed in context: the latest turn with "
           f"{n_user} earlier user turn(s) and {n_asst} assistant turn(s), decayed; ")
    if decision.method == "undecided" and anchor is not None and held is not None:
        # The conversation's topic was settled by a confident earlier turn and this turn
        # does not clearly leave it: a follow-up's own words are weak evidence, so its
        # combined score rarely clears the thresholds by itself; it stays on the topic.
        why += (f"it stays on the conversation's route '{names[held]}', which turn "
                f"{turns[anchor].index} decided with confidence"
                + ("" if leaned is None else f" (turn {turns[leaned].index} leaned only a "
                   "little away from it: an answer within that topic)")
                + ("" if held == best else f" (the combined scores lean to '{names[best]}' "
                   "but are not confident)") + "; ")
        return replace(decision, route=names[held], method="index", context=context,
                       reason=why + decision.reason), recent
    agree = [j for j in weights if turns[j].role == "user"
             and scored[j].has_neighbour.any() and int(scored[j].order[0]) == best]
    if decision.method == "undecided" and anchor is None and len(agree) >= CONSENSUS_TURNS:
        # No turn was confident, but several earlier user turns point where the combined
        # scores do: agreement of separate turns is evidence one turn's threshold ignores.
        why += (f"{len(agree)} earlier user turns (" + ", ".join(
            str(turns[j].index) for j in sorted(agree)) + f") point to '{names[best]}' as "
            "the combined scores do, so it goes there; ")
        return replace(decision, route=names[best], method="index", context=context,
                       reason=why + decision.reason), recent
    return replace(decision, context=context, reason=why + decision.reason), recent


def _anchor(turns: Sequence[Turn], weights: dict[int, float], scored: Sequence[Scored],
            matcher: Matcher) -> tuple[int | None, int | None]:
    """The earlier user turn that set the conversation's route (the anchor) and, when the
    confident turn where the weights stop only answered within an earlier confident turn's
    topic, that turn (it leaned less than `ANCHOR_STAY_GAP` away from the earlier route,
    like "on March 3rd" matching a calendar route after a flight search)."""
    stop = next((j for j in sorted(weights, reverse=True)
                 if turns[j].role == "user" and _confident(scored[j], matcher)), None)
    if stop is None:
        return None, None
    before = next((i for i in range(stop - 1, -1, -1)
                   if turns[i].role == "user" and not is_reply(turns[i].text)
                   and _confident(scored[i], matcher)), None)
    if before is not None:
        s, route = scored[stop], int(scored[before].order[0])
        top = int(s.order[0])
        if top != route and s.scores[top] - s.scores[route] < ANCHOR_STAY_GAP:
            return before, stop
    return stop, None


def _confident(s: Scored, matcher: Matcher) -> bool:
    """Whether the index decides on these scores alone (best route over the thresholds)."""
    names = matcher.index.route_names
    return matcher.thresholds.check(names[int(s.order[0])], s.confidence, s.margin) is None


def _weights(turns: Sequence[Turn], prepared: Sequence[tuple[str, bool]],
             scored: Sequence[Scored], matcher: Matcher) -> dict[int, float]:
    """Weights of the earlier turns (by position in `turns`): DECAY per user turn back, an
    assistant turn at ASSISTANT_WEIGHT of the user turn after it; stop after the last turn
    that stood on its own."""
    th = matcher.thresholds
    names = matcher.index.route_names
    out: dict[int, float] = {}
    back = 0
    for j in range(len(turns) - 2, -1, -1):
        s = scored[j]
        if turns[j].role == "assistant":
            if back + 1 > LOOKBACK_USER_TURNS:
                break
            out[j] = ASSISTANT_WEIGHT * DECAY ** (back + 1)
            continue
        back += 1
        if is_reply(prepared[j][0]):
            continue  # an earlier reply ("yes", "why?") says nothing of the topic by itself
        out[j] = DECAY ** back
        route = names[int(s.order[0])]
        if th.check(route, s.confidence, s.margin) is None:
            break
    return out
