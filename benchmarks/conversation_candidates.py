"""The measurement behind the conversation rule (semroute/routing/conversation.py): candidate
ways to route a follow-up, compared offline on sgd_conversations from per-turn route scores.

    PYTHONPATH=. python benchmarks/conversation_candidates.py [--k 10] [--work /tmp/convcand]
    PYTHONPATH=. python benchmarks/conversation_candidates.py --decisions   # the ablation

Route set: k utterances per label of routes_train.csv (seeded shuffle), index-only top-1.
Dev = first 300 dialogues of conversations_dev.csv (tuned on), held-out = last 300. The formal
benchmark (the shipped rule through Router.route) is benchmarks/conversations.py.
`--decisions` runs the shipped rule as decisions (default thresholds, undecided = wrong) with
each later step switched off in turn, to show what each one is worth on both halves.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import semroute
from benchmarks.accuracy import CATALOGUE
from semroute.index import score_query
from semroute.routing.conversation import REPLY_OPENERS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sgd_conversations"
WORD = re.compile(r"[a-z']+")


def build(k: int, work: Path) -> Any:
    pools: dict[str, list[str]] = {}
    with open(DATA / "routes_train.csv", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            pools.setdefault(r["label"], []).append(r["text"])
    rd = work / "routes"
    rd.mkdir(parents=True, exist_ok=True)
    for p in rd.glob("*.yaml"):
        p.unlink()
    seen: set[str] = set()
    for lab, pool in sorted(pools.items()):
        pool = list(pool)
        random.Random(f"0|{lab}").shuffle(pool)
        utts = []
        for u in pool:
            key = " ".join(u.split()).casefold()
            if key not in seen:
                seen.add(key)
                utts.append(u)
            if len(utts) == k:
                break
        (rd / f"{lab}.yaml").write_text(yaml.safe_dump(
            {"name": lab, "description": lab, "model": "fast", "utterances": utts}))
    (rd / "models.yaml").write_text(yaml.safe_dump(
        dict(CATALOGUE, router={"encoder": "all-MiniLM-L6-v2"})))
    semroute.build_index(rd, work / "index", show_progress=False)
    return semroute.load_router(rd, work / "index", classifier=False)


ABLATIONS: dict[str, dict[str, float]] = {  # constants of semroute.routing.conversation
    "shipped rule": {},
    "  without the leaned anchor (ANCHOR_STAY_GAP)": {"ANCHOR_STAY_GAP": -np.inf},
    "  without the anchor in the switch test": {"SWITCH_GAP_ANCHOR": -np.inf},
    "  without confident reply-form switches": {"REPLY_SWITCH_GAP": np.inf},
    "  without the consensus of weak turns": {"CONSENSUS_TURNS": 10**9},
}


def decisions(router: Any, k: int) -> None:
    """The shipped rule's decisions on both halves, with each step switched off in turn."""
    from semroute.quality import evaluate_conversations, load_conversations
    from semroute.routing import conversation

    convs = load_conversations(DATA / "conversations_dev.csv")
    print(f"k={k} decisions (first-turn / follow-up %; last turn only in the first row)")
    for name, consts in {"last turn only": {}, **ABLATIONS}.items():
        saved = {c: getattr(conversation, c) for c in consts}
        for c, v in consts.items():
            setattr(conversation, c, v)
        rule = "last_turn_only" if name == "last turn only" else "conversation"
        try:
            cells = [evaluate_conversations(router, part, rules=[rule]).by_rule[rule]
                     for part in (convs[:300], convs[300:])]
        finally:
            for c, v in saved.items():
                setattr(conversation, c, v)
        print(f"{name:46s} " + "   ".join(
            f"{half} {100 * m['first_turn_accuracy']:5.1f} {100 * m['followup_accuracy']:5.1f}"
            for half, m in zip(("dev", "held-out"), cells, strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--work", type=Path, default=Path("/tmp/convcand"))
    ap.add_argument("--decisions", action="store_true",
                    help="the shipped rule's decisions, each step switched off in turn")
    a = ap.parse_args()
    router = build(a.k, a.work / f"k{a.k}")
    if a.decisions:
        decisions(router, a.k)
        return
    with open(DATA / "conversations_dev.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    texts = sorted({r["text"] for r in rows})
    vix = {t: i for i, t in enumerate(texts)}
    m, idx = router.matcher, router.index
    vecs, _ = m.cache.encode(texts)
    th = m.thresholds

    def score(v: Any) -> list[Any]:
        sims, ids = idx.search(np.ascontiguousarray(v, dtype=np.float32), m.top_k)
        return [score_query(s, i, q, idx.labels, idx.stats)
                for s, i, q in zip(sims, ids, v, strict=True)]

    sc = score(vecs)
    SC = np.stack([s.scores for s in sc])
    BEST = np.array([int(s.order[0]) for s in sc])
    CONF = np.array([s.confidence for s in sc])
    OK = (th.score <= CONF) & (np.array([s.margin for s in sc]) >= th.margin)

    def reply(t: str) -> bool:
        w = WORD.findall(t.lower())
        return 0 < len(w) <= 5 and " ".join(w).startswith(REPLY_OPENERS)

    CUE = np.array([reply(t) for t in texts])

    def walk(lam: float = 0.85, D: int = 6, asst: float = 0.0, gate: bool = True,
             stop: bool = True, veto: float | None = None, cue: bool = False,
             meanvec: bool = False) -> Callable[[list[dict[str, str]]], list[int]]:
        def f(turns: list[dict[str, str]]) -> list[int]:
            out, hist = [], []
            for t in turns:
                i = vix[t["text"]]
                if t["speaker"] != "user":
                    hist.append((i, False))
                    continue
                fu = cue and CUE[i]
                if not hist or (gate and OK[i] and not fu):
                    out.append(int(BEST[i]))
                    hist.append((i, True))
                    continue
                src = vecs if meanvec else SC
                tot = src[i].astype(np.float64).copy()
                dd = 0
                for j, isu in reversed(hist):
                    if isu:
                        dd += 1
                        if dd > D:
                            break
                        if cue and CUE[j]:
                            continue
                        tot += lam ** dd * src[j]
                        if stop and OK[j]:
                            break
                    elif dd + 1 <= D:
                        tot += asst * lam ** (dd + 1) * src[j]
                if meanvec:
                    p = int(score((tot / np.linalg.norm(tot))[None])[0].order[0])
                else:
                    p = int(np.argmax(tot))
                    own = SC[i]
                    if (veto is not None and not fu and CONF[i] >= th.score - 0.1
                            and own[BEST[i]] - own[p] > veto):
                        p = int(BEST[i])
                out.append(p)
                hist.append((i, True))
            return out
        return f

    convs: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        convs.setdefault(r["conversation_id"], []).append(r)
    ids = sorted(convs)
    candidates = {
        "last turn only": lambda ts: [int(BEST[vix[t["text"]]]) for t in ts
                                      if t["speaker"] == "user"],
        "decayed scores, every turn (no gate)": walk(0.7, gate=False, stop=False),
        "decayed scores, gated by confidence, λ=0.7": walk(0.7, stop=False),
        "decayed scores, gated, λ=0.85": walk(0.85, stop=False),
        "gated, λ=0.85, stop at last standalone turn": walk(0.85),
        "  + assistant turns ×0.5": walk(0.85, asst=0.5),
        "mean vector of window, gated, +assistant": walk(0.8, asst=0.5, meanvec=True,
                                                         stop=False),
        "  + topic-switch veto (gap 0.12)": walk(0.85, asst=0.5, veto=0.12),
        "  + short replies are follow-ups (shipped)": walk(0.85, asst=0.5, veto=0.12, cue=True),
    }
    print(f"k={a.k}  (first-turn / follow-up / overall top-1 %)")
    for name, fn in candidates.items():
        cells = []
        for part in (ids[:300], ids[300:]):
            hit = {"1": [0, 0], "0": [0, 0]}
            for c in part:
                turns = sorted(convs[c], key=lambda r: int(r["turn"]))
                users = [t for t in turns if t["speaker"] == "user"]
                for t, p in zip(users, fn(turns), strict=True):
                    g = hit[t["first_turn_of_domain"]]
                    g[0] += idx.route_names[p] == t["label"]
                    g[1] += 1
            f, u = hit["1"], hit["0"]
            cells.append(f"{100 * f[0] / f[1]:5.1f} {100 * u[0] / u[1]:5.1f} "
                         f"{100 * (f[0] + u[0]) / (f[1] + u[1]):5.1f}")
        print(f"{name:46s} dev {cells[0]}   held-out {cells[1]}")


if __name__ == "__main__":
    main()
