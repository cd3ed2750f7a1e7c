"""A lexical signal for rare words (product names, merchants, place names) that a sentence
encoder blurs: built from the utterances at `semroute build` time, stored as `lexical.json`
in the build folder, computed per query in a few microseconds.

For each word w of the utterances: idf(w) = ln(1 + (N − df + 0.5) / (df + 0.5)) (BM25's, over
N utterances, df of them holding w) and p(r | w), the share of those utterances in route r.
A query's lexical score for route r is Σ idf(w)·p(r | w) over its distinct known words,
divided by Σ idf(w) over all its distinct words (unknown words count as the rarest), so it
lies in [0, 1]: 1 when every word of the query occurs only in route r. Words are lower-cased
runs of letters and digits. The route score becomes score + weight·lexical (models.yaml
`router.lexical_weight`, 0 = off).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from semroute.errors import CorruptIndexError
from semroute.index.manifest import REBUILD_HINT
from semroute.index.scoring import RouteStats, Scored

WORD = re.compile(r"[^\W_]+")
LEXICAL_FILE = "lexical.json"


def words(text: str) -> list[str]:
    """Distinct lower-cased words of a text, in order."""
    return list(dict.fromkeys(WORD.findall(text.lower())))


@dataclass(frozen=True)
class LexicalIndex:
    """Per word: its idf and the routes whose utterances hold it, with p(route | word)."""

    n_routes: int
    unknown_idf: float
    postings: dict[str, tuple[float, tuple[int, ...], tuple[float, ...]]]
    _arrays: dict[str, tuple[float, NDArray[np.intp], NDArray[np.float32]]] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_arrays", {
            w: (idf, np.asarray(rs, dtype=np.intp), np.asarray(ps, dtype=np.float32) * idf)
            for w, (idf, rs, ps) in self.postings.items()})

    def scores(self, text: str) -> NDArray[np.float32]:
        """Lexical score of every route for a query, in [0, 1]."""
        out = np.zeros(self.n_routes, dtype=np.float32)
        total = 0.0
        for w in words(text):
            hit = self._arrays.get(w)
            if hit is None:
                total += self.unknown_idf
                continue
            idf, routes, values = hit
            total += idf
            out[routes] += values  # a word's routes are distinct
        if total > 0:
            out /= total
        return out

    def to_json(self) -> dict[str, object]:
        return {"n_routes": self.n_routes, "unknown_idf": self.unknown_idf,
                "words": {w: [idf, list(rs), list(ps)] for w, (idf, rs, ps)
                          in sorted(self.postings.items())}}


def build_lexical(texts: Sequence[str], labels: Sequence[int], n_routes: int) -> LexicalIndex:
    """The lexical index of the utterances (`labels`: each utterance's route id)."""
    holders: dict[str, list[int]] = defaultdict(list)
    for text, label in zip(texts, labels, strict=True):
        for w in words(text):
            holders[w].append(int(label))
    n = len(texts)

    def idf(df: int) -> float:
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    postings = {}
    for w, rs in holders.items():
        counts: dict[int, int] = defaultdict(int)
        for r in rs:
            counts[r] += 1
        routes = tuple(sorted(counts))
        postings[w] = (idf(len(rs)), routes, tuple(counts[r] / len(rs) for r in routes))
    return LexicalIndex(n_routes, idf(1), postings)


def write_lexical(path: Path, lex: LexicalIndex) -> None:
    """Save the lexical index as JSON (build.py fsyncs it and lists it in the manifest)."""
    path.write_bytes(json.dumps(lex.to_json(), separators=(",", ":")).encode())


def read_lexical(build: Path, n_routes: int) -> LexicalIndex | None:
    """A build's lexical index (None for a build made before it existed)."""
    path = build / LEXICAL_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes())
        postings = {w: (float(v[0]), tuple(int(r) for r in v[1]), tuple(float(p) for p in v[2]))
                    for w, v in data["words"].items()}
        lex = LexicalIndex(int(data["n_routes"]), float(data["unknown_idf"]), postings)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise CorruptIndexError(f"{path} is unreadable ({exc}): {REBUILD_HINT}") from None
    if lex.n_routes != n_routes or any(r >= n_routes for _, rs, _ in postings.values()
                                       for r in rs):
        raise CorruptIndexError(f"{path} does not match the index's routes: {REBUILD_HINT}")
    return lex


def blend_lexical(scored: Scored, lexical: NDArray[np.float32], weight: float,
                  stats: RouteStats) -> Scored:
    """Route scores plus weight × lexical scores, with the best route, margin and confidence
    taken again (the best route still needs a neighbour in the top k)."""
    scores = (scored.scores + np.float32(weight) * lexical).astype(np.float32)
    has = scored.has_neighbour
    if not has.any():
        return Scored(scored.order, scores, has, scored.confidence, scored.margin)
    best = int(np.argmax(np.where(has, scores, -np.inf)))
    others = np.argsort(-scores, kind="stable")
    order = np.concatenate(([best], others[others != best]))
    runner_up = float(scores[order[1]]) if len(order) > 1 else 0.0
    margin = max(float(scores[best]) - runner_up, 0.0)
    return Scored(order, scores, has, float(scores[best] - stats.offsets[best]), margin)
