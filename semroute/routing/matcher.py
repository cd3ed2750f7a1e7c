"""From a query to a `Decision` using the index alone: normalise, encode, kNN search, score
each route, take the margin between the best two, and decide or stay undecided."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from semroute.config import RouteSet, normalise_text
from semroute.encoders import Encoder, QueryCache, default_margin
from semroute.errors import QueryError, StaleIndexError
from semroute.index import (
    REBUILD_HINT,
    Calibration,
    RouteIndex,
    Scored,
    apply_contrast,
    blend_lexical,
    contrast_sims,
    nearest_oos,
    score_query,
)
from semroute.routing.decision import Candidate, Decision, Method, NegativeHit, Neighbour

if TYPE_CHECKING:
    from numpy.typing import NDArray

NEIGHBOURS_SHOWN = 3
CANDIDATES_SHOWN = 5
TURN_SCORES_CACHED = 2048

ScoredTurn = tuple[Scored, "NDArray[np.float32]", "NDArray[np.int64]"]  # scores, kNN sims, ids


@dataclass(frozen=True)
class Thresholds:
    """Score and margin thresholds: router-wide, with per-route score overrides."""

    score: float
    margin: float
    per_route: dict[str, float]

    def for_route(self, route: str) -> float:
        return self.per_route.get(route, self.score)

    def check(self, route: str | None, score: float, margin: float,
              runner_up: str | None = None) -> str | None:
        """The decision rule: None when `route` is accepted, else the reason it is not."""
        if route is None:
            return "the index is empty"
        threshold = self.for_route(route)
        if score < threshold:
            return f"score {score:.3f} of '{route}' is below the threshold {threshold:.3f}"
        if margin < self.margin:
            return (f"margin {margin:.3f} between '{route}' and '{runner_up or '-'}' is below "
                    f"{self.margin:.3f}")
        return None


def prepare_query(text: str, max_chars: int) -> tuple[str, bool]:
    """Whitespace-normalise a query and cut it to `max_chars`; say whether it was cut."""
    if not isinstance(text, str):
        raise QueryError(f"a query must be a string, got {type(text).__name__}")
    q = normalise_text(text)
    if not q:
        raise QueryError("the query is empty (after trimming whitespace)")
    if len(q) > max_chars:
        return q[:max_chars], True
    return q, False


def resolve_thresholds(routes: RouteSet, index: RouteIndex,
                       calibration: Calibration | None = None) -> Thresholds:
    """Route file > calibrated per-route > calibrated router-wide > models.yaml, where
    `score_threshold: auto` means the index's label-free default (see scoring.py) and
    `margin_threshold: auto` the encoder's default margin (encoders/packaged.py)."""
    s = routes.settings
    score = index.stats.default_threshold if s.score_threshold == "auto" else s.score_threshold
    margin = default_margin(s.encoder) if s.margin_threshold == "auto" else s.margin_threshold
    per_route: dict[str, float] = {}
    if calibration is not None:
        score, margin = calibration.score_threshold, calibration.margin_threshold
        per_route = {k: v for k, v in calibration.per_route.items() if k in routes.names}
    per_route.update({r.name: r.threshold for r in routes.routes if r.threshold is not None})
    return Thresholds(score, margin, per_route)


class Matcher:
    """Routes queries with the index: one code path for single queries and batches."""

    def __init__(self, routes: RouteSet, index: RouteIndex, encoder: Encoder, *,
                 thresholds: Thresholds | None = None, cache_size: int = 4096) -> None:
        self.routes = routes
        self.index = index
        self.encoder = encoder
        self.cache = QueryCache(encoder, cache_size)
        s = routes.settings
        self.top_k = s.top_k
        self.max_chars = s.max_query_chars
        self.thresholds = thresholds or resolve_thresholds(routes, index)
        self.lexical_weight = s.lexical_weight
        if self.lexical_weight > 0 and index.lexical is None:
            raise StaleIndexError(f"router.lexical_weight is {s.lexical_weight}, but the index at "
                                  f"{index.path} was built without its lexical file: "
                                  f"{REBUILD_HINT}")
        self._turns: OrderedDict[str, ScoredTurn] = OrderedDict()
        self._turns_lock = threading.Lock()

    def score_turns(self, texts: Sequence[str]) -> tuple[list[ScoredTurn], dict[str, float]]:
        """Route scores and kNN rows of prepared texts, e.g. a conversation's turns; those
        seen recently come from a small LRU, so a live chat encodes and searches only its
        newest turn. Also returns the encode/search/score times (ms)."""
        out: dict[str, ScoredTurn] = {}
        with self._turns_lock:
            for t in texts:
                hit = self._turns.get(t)
                if hit is not None:
                    self._turns.move_to_end(t)
                    out[t] = hit
        todo = [t for t in dict.fromkeys(texts) if t not in out]
        t0 = time.perf_counter()
        t1 = t2 = t0
        if todo:
            vecs, _ = self.cache.encode(todo)
            t1 = time.perf_counter()
            sims, ids = self.index.search(vecs, self.top_k)
            t2 = time.perf_counter()
            fresh = {t: (self.score_contrasted(t, s, i, v)[0], s, i)
                     for t, s, i, v in zip(todo, sims, ids, vecs, strict=True)}
            out.update(fresh)
            with self._turns_lock:
                self._turns.update(fresh)
                while len(self._turns) > TURN_SCORES_CACHED:
                    self._turns.popitem(last=False)
        t3 = time.perf_counter()
        return [out[t] for t in texts], {"encode": (t1 - t0) * 1e3, "search": (t2 - t1) * 1e3,
                                         "score": (t3 - t2) * 1e3}

    def score_one(self, text: str, sims: NDArray[np.float32], ids: NDArray[np.int64],
                  query: NDArray[np.float32]) -> Scored:
        """Route scores of one prepared query: the kNN blend (index/scoring.py), plus the
        lexical signal when `router.lexical_weight` is set (index/lexical.py)."""
        scored = score_query(sims, ids, query, self.index.labels, self.index.stats)
        if self.lexical_weight > 0 and self.index.lexical is not None:
            scored = blend_lexical(scored, self.index.lexical.scores(text), self.lexical_weight,
                                   self.index.stats)
        return scored

    def match(self, query: str) -> Decision:
        return self.match_batch([query])[0]

    def match_batch(self, queries: Sequence[str]) -> list[Decision]:
        """Decisions for many queries; encode and search run once for the whole batch."""
        n = max(len(queries), 1)
        t0 = time.perf_counter()
        prepared = [prepare_query(q, self.max_chars) for q in queries]
        t1 = time.perf_counter()
        vecs, _ = self.cache.encode([q for q, _ in prepared])
        t2 = time.perf_counter()
        sims, ids = self.index.search(vecs, self.top_k)
        t3 = time.perf_counter()
        per_query = {"normalise": (t1 - t0) * 1e3 / n, "encode": (t2 - t1) * 1e3 / n,
                     "search": (t3 - t2) * 1e3 / n}
        return [self._decide(q, cut, per_query, s_row, i_row, vec)
                for (q, cut), s_row, i_row, vec in zip(prepared, sims, ids, vecs, strict=True)]

    def _decide(self, text: str, truncated: bool, timings: dict[str, float],
                 sims: NDArray[np.float32], ids: NDArray[np.int64],
                 query: NDArray[np.float32]) -> Decision:
        t0 = time.perf_counter()
        scored, negatives, oos = self.score_contrasted(text, sims, ids, query)
        return self.decide_scored(text, truncated, timings, scored, [(sims, ids)], t0,
                                  negatives=negatives, oos_neighbours=oos)

    def score_contrasted(self, text: str, sims: NDArray[np.float32], ids: NDArray[np.int64],
                         query: NDArray[np.float32]
                         ) -> tuple[Scored, tuple[NegativeHit, ...], tuple[Neighbour, ...]]:
        """Route scores of one query (`score_one`), lowered where a negative or out-of-scope
        example comes close (index/contrast.py), those penalties for the Decision, and the
        out-of-scope examples nearest the query (one product with the contrast rows)."""
        idx, s = self.index, self.routes.settings
        scored = self.score_one(text, sims, ids, query)
        if idx.contrast is None or not len(idx.contrast):
            return scored, (), ()
        csims = contrast_sims(idx.contrast, query)
        oos = tuple(Neighbour(t, round(sim, 6))
                    for t, sim in nearest_oos(idx.contrast, csims, NEIGHBOURS_SHOWN))
        if s.contrast_weight == 0:
            return scored, (), oos
        scored, found = apply_contrast(scored, sims, ids, query, idx.labels, idx.stats.offsets,
                                       idx.contrast, margin=s.contrast_margin,
                                       weight=s.contrast_weight, csims=csims)
        return scored, tuple(NegativeHit(p.kind, idx.route_names[p.route], p.text,
                                         round(p.similarity, 6), round(p.nearest, 6),
                                         round(p.penalty, 6)) for p in found), oos

    def rejects(self, scored: Scored) -> str | None:
        """Why the index would not decide on these scores alone (None: it would)."""
        best = int(scored.order[0])
        names = self.index.route_names
        if not scored.has_neighbour[best]:
            return "the index is empty"
        runner_up = names[int(scored.order[1])] if len(scored.order) > 1 else None
        return self.thresholds.check(names[best], scored.confidence, scored.margin, runner_up)

    def decide_scored(self, text: str, truncated: bool, timings: dict[str, float],
                      scored: Scored, hits: Sequence[tuple[NDArray[np.float32],
                                                           NDArray[np.int64]]],
                      t0: float, *, negatives: tuple[NegativeHit, ...] = (),
                      oos_neighbours: tuple[Neighbour, ...] = ()) -> Decision:
        """Apply the thresholds to route scores; `hits` are the kNN rows the nearest
        utterances shown are drawn from (the query's, or every turn's that counted);
        `negatives` the penalties already in the scores, named in the reason;
        `oos_neighbours` the out-of-scope examples nearest the query, carried along."""
        idx = self.index
        shown = scored.order[:CANDIDATES_SHOWN].tolist()
        near: dict[int, list[Neighbour]] = {r: [] for r in shown}
        pairs: list[tuple[float, int]] = []
        for sims, ids in hits:
            valid = ids >= 0
            pairs += zip(sims[valid].tolist(), ids[valid].tolist(), strict=True)
        if len(hits) > 1:
            pairs.sort(key=lambda p: -p[0])
        seen: set[int] = set()
        for sim, v in pairs:
            hits_r = near.get(int(idx.labels[v]))
            if hits_r is not None and len(hits_r) < NEIGHBOURS_SHOWN and v not in seen:
                seen.add(v)
                hits_r.append(Neighbour(idx.texts[v], round(sim, 6)))
        scores = scored.scores[shown].tolist()
        candidates = tuple(
            Candidate(route=idx.route_names[r], score=round(score, 6), neighbours=tuple(near[r]))
            for r, score in zip(shown, scores, strict=True))
        best = candidates[0].route if candidates and candidates[0].neighbours else None
        th = self.thresholds
        threshold = th.for_route(best) if best else th.score
        rejected = th.check(best, scored.confidence, scored.margin,
                            candidates[1].route if len(candidates) > 1 else None)
        method: Method
        if rejected is None:
            route, method = best, "index"
            reason = (f"score {scored.confidence:.3f} ≥ {threshold:.3f} and margin "
                      f"{scored.margin:.3f} ≥ {th.margin:.3f}")
        else:
            route, method, reason = None, "undecided", rejected
        if negatives:
            reason += "; " + "; ".join(explain_negative(n) for n in negatives)
        return Decision(query=text, route=route, method=method,
                        score=round(scored.confidence, 6), margin=round(scored.margin, 6),
                        threshold=threshold, margin_threshold=th.margin, reason=reason,
                        candidates=candidates, truncated=truncated,
                        timings_ms=dict(timings, score=(time.perf_counter() - t0) * 1e3),
                        negatives=negatives, oos_neighbours=oos_neighbours)


def explain_negative(hit: NegativeHit) -> str:
    """One penalty in words, for `Decision.reason`."""
    what = "out-of-scope example" if hit.kind == "oos" else "negative"
    return (f"'{hit.route}' lowered by {hit.penalty:.3f}: {what} '{hit.text}' "
            f"(similarity {hit.similarity:.3f}) is near its nearest utterance "
            f"({hit.nearest:.3f})")
