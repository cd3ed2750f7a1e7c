"""New utterances from what the learning loop saw (`semroute suggest`).

A candidate is a query whose route someone other than the index decided: the fallback
classifier (method `classifier`, its route taken as the label) or a feedback correction (a
`label`: that route, overriding the classifier). Its text comes from the outcomes store (kept
with `router.outcomes.keep_text`) or a trace's `query` (`router.trace_include_query`).

Per route, in this order: queries showing personal data are counted and never copied; exact
duplicates (of each other or of any utterance) are dropped; queries the current index already
routes right are dropped (they teach it nothing); a query nearly identical to another route's
utterance (it would steal that route's traffic) is reported as a conflict, not added; near
duplicates of the route's utterances are dropped; from the rest a diverse subset is chosen by
farthest-point (k-center) selection against the route's utterances, at most N per route.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute.config import normalise_text, utterance_key
from semroute.errors import DataError
from semroute.quality.monitor_sources import parse_time as parse_moment
from semroute.quality.pii import personal_data

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semroute.outcomes import OutcomeStore
    from semroute.routing import Router

DUP_SIM = 0.95  # cosine from which two texts say the same thing
CONFLICT_SIM = 0.90  # another route's utterance this close: the query would steal from it
CONFLICT_GAP = 0.05  # ... and that close ahead of the route's own nearest utterance
NEIGHBOURS = 16
DROP_REASONS = ("no_text", "unknown_route", "personal_data", "duplicate", "routed_right",
                "near_duplicate", "conflict", "limit")


@dataclass(frozen=True)
class Candidate:
    """A query and the route someone other than the index gave it."""

    text: str
    route: str
    source: str  # "classifier" | "feedback"
    request_id: str | None = None
    ts: float | None = None


@dataclass(frozen=True)
class Proposal:
    """A query proposed as a new utterance of `route`, with why it helps."""

    route: str
    text: str
    source: str
    request_id: str | None
    index_said: str  # what the index does with it now
    nearest: float  # cosine to the route's nearest utterance


@dataclass(frozen=True)
class Conflict:
    """A query labelled `route` that sits on another route's utterance: reported, not added."""

    route: str
    text: str
    other_route: str
    other_similarity: float
    own_similarity: float
    request_id: str | None
    other_utterance: str = ""


@dataclass
class UtteranceSuggestions:
    """Proposals per route, conflicts, and what was dropped for which reason."""

    proposals: dict[str, list[Proposal]] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    personal_kinds: Counter[str] = field(default_factory=Counter)
    candidates: int = 0

    @property
    def added(self) -> int:
        return sum(map(len, self.proposals.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "added": self.added,
                "proposals": {r: [p.__dict__ for p in ps] for r, ps in self.proposals.items()},
                "conflicts": [c.__dict__ for c in self.conflicts],
                "dropped": {k: self.dropped.get(k, 0) for k in DROP_REASONS},
                "personal_data_kinds": dict(self.personal_kinds)}


def parse_time(value: str | float | None) -> float | None:
    """`--since`: epoch seconds, an ISO 8601 time (UTC unless it says otherwise), or an age
    like `7d`, `12h`, `30m`, read as `semroute monitor` reads it; None: no bound."""
    return None if value is None else parse_moment(value)


def read_traces(paths: Iterable[str | Path], since: float | None
                ) -> dict[str, dict[str, Any]]:
    """Trace records by request id (`query`, `route`, `method`, `ts` as epoch seconds) from
    JSONL trace files; lines that are not trace records are skipped."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: trace file not found")
        for line_no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{line_no}: not a JSON trace record ({exc.msg})") from None
            if not isinstance(rec, dict) or not rec.get("request_id") \
                    or rec.get("kind", "request") != "request":  # feedback, shadow lines
                continue
            ts = rec.get("ts")
            try:
                t = datetime.fromisoformat(ts).timestamp() if isinstance(ts, str) else ts
            except ValueError:
                t = None
            if since is not None and t is not None and t < since:
                continue
            out[str(rec["request_id"])] = {"query": rec.get("query"), "route": rec.get("route"),
                                           "method": rec.get("method"), "ts": t}
    return out


def gather(store: OutcomeStore | None, traces: Sequence[str | Path], route_names: Sequence[str],
           since: float | None = None) -> tuple[list[Candidate], Counter[str]]:
    """Candidates from the store's journal and feedback and from trace files, in time order,
    and counts of those left out (`no_text`, `unknown_route`)."""
    dropped: Counter[str] = Counter()
    rows: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    if store is not None:
        for r in store.requests(since=since):
            rows[r.request_id] = {"query": r.text, "route": r.route, "method": r.method,
                                  "ts": r.ts}
        for f in store.feedback():
            if f.label is not None:
                labels[f.request_id] = f.label  # the latest correction wins
    for rid, rec in read_traces(traces, since).items():
        known = rows.setdefault(rid, rec)
        if not known.get("query") and rec.get("query"):
            known["query"] = rec["query"]
    names = set(route_names)
    out: list[Candidate] = []
    for rid, rec in rows.items():
        label, source = labels.get(rid), "feedback"
        if label is None and rec.get("method") == "classifier":
            label, source = rec.get("route"), "classifier"
        if not label:
            continue
        if label not in names:
            dropped["unknown_route"] += 1
            continue
        text = normalise_text(rec.get("query") or "")
        if not text:
            dropped["no_text"] += 1
            continue
        out.append(Candidate(text, label, source, rid, rec.get("ts")))
    out.sort(key=lambda c: c.ts or 0.0)
    return out, dropped


def index_vectors(router: Router) -> NDArray[np.float32]:
    """The index's utterance vectors (row i is utterance i of `router.index.texts`)."""
    fi = router.index.faiss_index
    try:
        return np.asarray(fi.reconstruct_n(0, fi.ntotal), dtype=np.float32)
    except RuntimeError:  # an index type that does not keep its vectors
        return router.matcher.encoder.encode(router.index.texts)


def farthest_first(existing: NDArray[np.float32], cands: NDArray[np.float32], k: int,
                   dup_sim: float) -> tuple[list[int], list[int]]:
    """Greedy k-center: repeatedly take the candidate farthest (lowest max cosine) from the
    route's utterances and those taken so far. Returns (taken, near duplicates)."""
    near = (cands @ existing.T).max(axis=1) if existing.size else np.full(len(cands), -1.0)
    taken: list[int] = []
    open_ = np.ones(len(cands), dtype=bool)
    while len(taken) < k and open_.any():
        i = int(np.argmin(np.where(open_, near, np.inf)))
        if near[i] >= dup_sim:
            break
        taken.append(i)
        open_[i] = False
        near = np.maximum(near, cands @ cands[i])
    dups = [i for i in range(len(cands)) if open_[i] and near[i] >= dup_sim]
    return taken, dups


def suggest_utterances(router: Router, candidates: Sequence[Candidate], *, per_route: int = 5,
                       dup_sim: float = DUP_SIM, conflict_sim: float = CONFLICT_SIM,
                       conflict_gap: float = CONFLICT_GAP,
                       keep_routed_right: bool = False) -> UtteranceSuggestions:
    """Choose new utterances from labelled candidates (see the module doc for the steps);
    `keep_routed_right` keeps those the index already routes right (paraphrases that widen a
    thin route, `semroute augment`)."""
    out = UtteranceSuggestions(candidates=len(candidates))
    owner = {utterance_key(u): r.name for r in router.routes.routes for u in r.utterances}
    seen: dict[str, str] = {}
    keep: list[Candidate] = []
    for c in candidates:
        kinds = personal_data(c.text)
        if kinds:
            out.dropped["personal_data"] += 1
            out.personal_kinds.update(kinds)
            continue
        key = utterance_key(c.text)
        if key in owner or key in seen:
            out.dropped["duplicate"] += 1
            continue
        seen[key] = c.route
        keep.append(c)
    if not keep:
        return out
    decisions = router.matcher.match_batch([c.text for c in keep])
    vecs, _ = router.matcher.cache.encode([d.query for d in decisions])
    idx = router.index
    sims, ids = idx.search(vecs, min(NEIGHBOURS, idx.faiss_index.ntotal))
    names = idx.route_names
    by_route: dict[str, list[tuple[Candidate, str, int]]] = {}
    for n, (c, d) in enumerate(zip(keep, decisions, strict=True)):
        if d.method == "index" and d.route == c.route and not keep_routed_right:
            out.dropped["routed_right"] += 1
            continue
        own = other = -1.0
        other_route, other_text = "", ""
        for s, i in zip(sims[n].tolist(), ids[n].tolist(), strict=True):
            if i < 0:
                continue
            r = names[int(idx.labels[i])]
            if r == c.route:
                own = max(own, s)
            elif s > other:
                other, other_route, other_text = s, r, idx.texts[i]
        if other >= conflict_sim and other - own >= conflict_gap:
            out.conflicts.append(Conflict(c.route, c.text, other_route, round(other, 4),
                                          round(own, 4), c.request_id, other_text))
            out.dropped["conflict"] += 1
            continue
        said = (f"index sends it to '{d.route}'" if d.method == "index" else
                f"index undecided ({d.reason})")
        by_route.setdefault(c.route, []).append((c, said, n))
    mat = index_vectors(router)
    for route, items in by_route.items():
        rid = names.index(route) if route in names else -1
        existing = mat[idx.labels == rid] if rid >= 0 else mat[:0]
        cands = vecs[[n for _, _, n in items]]
        taken, dups = farthest_first(existing, cands, per_route, dup_sim)
        out.dropped["near_duplicate"] += len(dups)
        out.dropped["limit"] += len(items) - len(taken) - len(dups)
        own_near = (cands @ existing.T).max(axis=1) if existing.size else np.zeros(len(items))
        out.proposals[route] = [
            Proposal(route, items[i][0].text, items[i][0].source, items[i][0].request_id,
                     items[i][1], round(float(own_near[i]), 4)) for i in taken]
    return out
