"""Routing quality on labelled conversations: every user turn is decided in the context of the
turns before it (`Router.route_batch` with chat messages) and, side by side, on its own text
(last-turn-only, what a router without conversation support does).

The data is a CSV with the columns `conversation_id,turn,speaker,text,label` (others are
ignored): one row per turn, `speaker` `user` or `assistant` (any case), `turn` an integer
that orders the turns of a conversation (conversations may interleave in the file), `label`
the route of a user turn (`oos` or `none`: no route should match; empty on assistant turns).

Which turns count where:

- a **first turn** opens a topic: the conversation's first user turn, or a user turn whose
  label differs from the previous user turn's;
- a **follow-up** is a user turn whose label equals the previous user turn's.

A user turn is **correct** when the predicted label equals the gold label, read as
`semroute.quality.evaluation` reads every decision (`predicted_label`, `gold_label`): a label
that names no route, `oos` and `none` are all `oos`, right when no route is decided
(undecided, or only reached through the default route).
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from semroute.config import normalise_text
from semroute.errors import DataError
from semroute.quality.evaluation import OOS, gold_label, predicted_label
from semroute.routing import Decision

if TYPE_CHECKING:
    from semroute.routing import Router

COLUMNS = ("conversation_id", "turn", "speaker", "text", "label")
SPEAKERS = ("user", "assistant")
NO_ROUTE_LABELS = frozenset({"oos", "none"})
Speaker = Literal["user", "assistant"]
Message = dict[str, str]
Request = str | list[Message]
Rule = Callable[["Conversation", int], Request]
METRIC_KEYS = ("accuracy", "first_turn_accuracy", "followup_accuracy")


@dataclass(frozen=True)
class Turn:
    """One row of the file: who spoke, what, and (user turns) the expected route."""

    turn: int
    speaker: Speaker
    text: str
    label: str | None
    line: int


@dataclass(frozen=True)
class Conversation:
    """The turns of one conversation, ordered by `turn`."""

    id: str
    turns: tuple[Turn, ...]

    def user_turns(self) -> list[int]:
        """Positions (in `turns`) of the user turns."""
        return [i for i, t in enumerate(self.turns) if t.speaker == "user"]

    def messages(self, upto: int) -> list[Message]:
        """OpenAI-style messages of the turns up to and including position `upto` (assistant
        turns with empty text are left out)."""
        return [{"role": t.speaker, "content": t.text} for t in self.turns[:upto + 1]
                if t.text or t.speaker == "user"]


# ---------------------------------------------------------------- loading


def _problem(path: Path, line: int, col: str, what: str) -> DataError:
    return DataError(f"{path}:{line}: column '{col}': {what}")


def _label(raw: str) -> str:
    return OOS if raw.casefold() in NO_ROUTE_LABELS else raw


def load_conversations(path: str | Path, *, text_col: str = "text",
                       label_col: str = "label") -> list[Conversation]:
    """Conversations of a CSV file (see the module doc), in order of first appearance.

    Raises `DataError` naming file, line and column for a missing column, an empty
    conversation id, a non-integer `turn`, an unknown speaker, a user turn without text or
    label, and a (conversation_id, turn) that occurs twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: conversation file not found")
    cols = {"conversation_id": "conversation_id", "turn": "turn", "speaker": "speaker",
            "text": text_col, "label": label_col}
    by_id: dict[str, list[Turn]] = {}
    seen: dict[tuple[str, int], int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for col in cols.values():
                if col not in header:
                    raise DataError(f"{path}:1: column '{col}' is missing from the header "
                                    f"(columns: {', '.join(header) or 'none'}; a conversation "
                                    f"file needs {', '.join(cols.values())})")
            for rec in reader:
                line = reader.line_num
                cid, turn_s, speaker, text, label = (
                    str(rec.get(cols[c]) or "").strip() for c in COLUMNS)
                if not cid:
                    raise _problem(path, line, cols["conversation_id"], "empty")
                try:
                    turn = int(turn_s)
                except ValueError:
                    raise _problem(path, line, cols["turn"],
                                   f"{turn_s!r} is not an integer") from None
                speaker = speaker.lower()
                if speaker not in SPEAKERS:
                    raise _problem(path, line, cols["speaker"],
                                   f"{speaker!r} is not 'user' or 'assistant'")
                if (cid, turn) in seen:
                    raise _problem(path, line, cols["turn"],
                                   f"turn {turn} of conversation {cid!r} already on line "
                                   f"{seen[cid, turn]}")
                seen[cid, turn] = line
                if speaker == "user":
                    if not normalise_text(text):
                        raise _problem(path, line, cols["text"], "a user turn with no text")
                    if not label:
                        raise _problem(path, line, cols["label"], "a user turn with no label")
                by_id.setdefault(cid, []).append(Turn(
                    turn, "user" if speaker == "user" else "assistant", text,
                    _label(label) if speaker == "user" else None, line))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    convs = [Conversation(cid, tuple(sorted(turns, key=lambda t: t.turn)))
             for cid, turns in by_id.items()]
    if not any(c.user_turns() for c in convs):
        raise DataError(f"{path}: no user turns")
    return convs


# ---------------------------------------------------------------- what each turn is


@dataclass(frozen=True)
class UserTurn:
    """A scored user turn: where it is, its label, and whether it opens a topic."""

    conversation: int  # index in the list of conversations
    position: int  # index in the conversation's turns
    label: str
    first: bool


def user_turns(conversations: Sequence[Conversation]) -> list[UserTurn]:
    """Every user turn, marked first (opens a topic) or follow-up (same label as the
    previous user turn)."""
    out = []
    for ci, conv in enumerate(conversations):
        previous: str | None = None
        for pos in conv.user_turns():
            label = conv.turns[pos].label or OOS
            out.append(UserTurn(ci, pos, label, previous is None or label != previous))
            previous = label
    return out


# ---------------------------------------------------------------- how a turn is asked


def in_context(conv: Conversation, pos: int) -> Request:
    """Conversation-aware: the messages up to and including the turn."""
    return conv.messages(pos)


def last_turn_only(conv: Conversation, pos: int) -> Request:
    """The turn's own text, as a router without conversation support sees it."""
    return conv.turns[pos].text


def previous_glued(conv: Conversation, pos: int) -> Request:
    """Naive baseline: the previous user turn's text, a space, and this turn's text."""
    prev = [t.text for t in conv.turns[:pos] if t.speaker == "user"]
    return f"{prev[-1]} {conv.turns[pos].text}" if prev else conv.turns[pos].text


RULES: dict[str, Rule] = {"conversation": in_context, "last_turn_only": last_turn_only,
                          "previous_glued": previous_glued}


# ---------------------------------------------------------------- scoring


def score_turns(decisions: Sequence[Decision], turns: Sequence[UserTurn],
                route_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy over all user turns, first turns and follow-ups (None when there are none),
    plus `top1_*`: the same with the best-scoring route, thresholds ignored."""
    if len(decisions) != len(turns):
        raise ValueError(f"{len(decisions)} decisions for {len(turns)} user turns")
    known = frozenset(route_names)
    ok, top_ok = [], []
    for d, t in zip(decisions, turns, strict=True):
        gold = gold_label(t.label, known)
        ok.append(predicted_label(d) == gold)
        top = d.candidates[0].route if d.candidates else None
        top_ok.append((top if top is not None else OOS) == gold)
    out: dict[str, Any] = {}
    for prefix, flags in (("", ok), ("top1_", top_ok)):
        first = [f for f, t in zip(flags, turns, strict=True) if t.first]
        follow = [f for f, t in zip(flags, turns, strict=True) if not t.first]
        out[f"{prefix}accuracy"] = sum(flags) / len(flags) if flags else None
        out[f"{prefix}first_turn_accuracy"] = sum(first) / len(first) if first else None
        out[f"{prefix}followup_accuracy"] = sum(follow) / len(follow) if follow else None
    return out


@dataclass
class ConversationEval:
    """Accuracy per rule (`conversation`, `last_turn_only`, ...), counts, and the decisions."""

    by_rule: dict[str, dict[str, Any]]
    counts: dict[str, int]
    unknown_labels: dict[str, int]
    info: dict[str, Any] = field(default_factory=dict)
    decisions: dict[str, list[Decision]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The `semroute eval --conversations --json` object: the conversation-aware
        metrics flat, each other rule as an object with the same keys, then the counts."""
        main = self.by_rule.get("conversation") or {}
        out: dict[str, Any] = {k: main.get(k) for k in METRIC_KEYS}
        for rule, metrics in self.by_rule.items():
            if rule != "conversation":
                out[rule] = {k: metrics.get(k) for k in METRIC_KEYS}
        out.update(self.counts)
        out["unknown_labels"] = self.unknown_labels
        out["info"] = self.info
        return out


def route_requests(router: Router, requests: Sequence[Request], *,
                   with_classifier: bool = False, chunk: int = 256) -> list[Decision]:
    """Decisions for texts or message lists through `router.route_batch`, in chunks."""
    batch: Callable[..., list[Decision]] = router.route_batch
    out: list[Decision] = []
    for start in range(0, len(requests), chunk):
        out += batch(list(requests[start:start + chunk]), use_classifier=with_classifier)
    return out


def evaluate_conversations(router: Router, conversations: Sequence[Conversation], *,
                           rules: Sequence[str] = ("conversation", "last_turn_only"),
                           with_classifier: bool = False,
                           chunk: int = 256) -> ConversationEval:
    """Route every user turn under each rule (see `RULES`) and score the decisions."""
    unknown_rules = [r for r in rules if r not in RULES]
    if unknown_rules:
        raise ValueError(f"unknown rule(s) {unknown_rules}: {', '.join(RULES)}")
    turns = user_turns(conversations)
    if not turns:
        raise DataError("no user turns to score")
    names = router.routes.names
    known = set(names)
    by_rule: dict[str, dict[str, Any]] = {}
    decisions: dict[str, list[Decision]] = {}
    timing: dict[str, float] = {}
    for rule in rules:
        ask = RULES[rule]
        requests = [ask(conversations[t.conversation], t.position) for t in turns]
        t0 = time.perf_counter()
        decisions[rule] = route_requests(router, requests, with_classifier=with_classifier,
                                         chunk=chunk)
        timing[rule] = round(time.perf_counter() - t0, 3)
        by_rule[rule] = score_turns(decisions[rule], turns, names)
    unknown = Counter(t.label for t in turns if t.label != OOS and t.label not in known)
    first = sum(t.first for t in turns)
    counts = {"conversations": len(conversations), "user_turns": len(turns),
              "first_turns": first, "followup_turns": len(turns) - first,
              "oos_turns": sum(gold_label(t.label, known) == OOS for t in turns),
              "unknown_label_turns": sum(unknown.values())}
    info = {"with_classifier": with_classifier, "routes": len(names),
            "build_id": router.index.manifest.build_id, "route_s": timing}
    return ConversationEval(by_rule, counts, dict(unknown.most_common()), info, decisions)
