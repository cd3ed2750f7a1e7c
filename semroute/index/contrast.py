"""Negatives and out-of-scope examples ("contrast" rows): embedded at build time beside the
utterances, and the rule that lets a close one lower the best route's score.

The rule: let b be the best route, `nearest` the similarity of b's nearest utterance among the
query's neighbours. When b's closest negative (similarity s) has s > nearest - margin, b's
score drops by weight * (s - nearest + margin); the routes are ranked again and the new best
route is checked the same way. Then the closest out-of-scope example is compared with the
(new) best route the same way, and its penalty is taken from every route's score: the
ranking and margin stay, the confidence drops. A lowered score falls under the threshold
(undecided) or below another route's. The contrast vectors are compared with one product
per query (2,000 rows: about 0.2 ms). A penalty, not a veto:
with many out-of-scope examples the nearest one is often a little closer than a route's
nearest of ten utterances, and `fit` can trade a continuous score off (on banking77_oos with
1,000-2,000 examples a hard veto lost 9-15 points of in-scope accuracy at 90% OOS recall
against the penalty, 0.4-1.6 with 100-300; benchmarks/results/negatives.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from semroute.config import RouteSet
from semroute.errors import CorruptIndexError
from semroute.index.scoring import Scored

if TYPE_CHECKING:
    from numpy.typing import NDArray

OOS_OWNER = -1  # the owner id of an out-of-scope example (a route id otherwise)
TABLE = "contrast.json"
VECTORS = "contrast.npy"
MAX_PENALISED = 5  # routes whose scores one query may lower, best first


@dataclass(frozen=True)
class ContrastSet:
    """A build's negatives and out-of-scope examples: unit vectors, the route each negative
    belongs to (`OOS_OWNER` for an out-of-scope example) and the texts."""

    vectors: NDArray[np.float32]  # (n, d)
    owners: NDArray[np.int32]  # (n,)
    texts: list[str]

    @classmethod
    def empty(cls, dim: int) -> ContrastSet:
        return cls(np.zeros((0, dim), np.float32), np.zeros(0, np.int32), [])

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Penalty:
    """A contrast row that lowered a route's score: its kind, the route, its text and
    similarity to the query, the route's nearest utterance similarity, and by how much."""

    kind: Literal["negative", "oos"]
    route: int
    text: str
    similarity: float
    nearest: float
    penalty: float


def contrast_rows(routes: RouteSet) -> list[tuple[int, str]]:
    """(owner, text) of every negative (owner: its route's position) then every
    out-of-scope example (owner: `OOS_OWNER`), in route-file order."""
    rows = [(i, text) for i, r in enumerate(routes.routes) for text in r.negatives]
    return rows + [(OOS_OWNER, text) for text in routes.oos_examples]


def write_contrast(build: Path, rows: list[tuple[int, str]],
                   vectors: NDArray[np.float32]) -> None:
    """Save the contrast rows (nothing when there are none); build.py fsyncs the files."""
    if not rows:
        return
    (build / TABLE).write_bytes(json.dumps({"rows": rows}).encode())
    np.save(build / VECTORS, vectors.astype(np.float32), allow_pickle=False)


def read_contrast(build: Path, n_rows: int, n_routes: int, dim: int) -> ContrastSet:
    """A build's contrast rows, checked against the manifest's count, routes and dimension."""
    if n_rows == 0:
        return ContrastSet.empty(dim)
    try:
        rows = json.loads((build / TABLE).read_bytes())["rows"]
        owners = np.asarray([int(r[0]) for r in rows], dtype=np.int32)
        texts = [str(r[1]) for r in rows]
        vectors = np.load(build / VECTORS, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise CorruptIndexError(f"{build / TABLE} is unreadable ({exc}): run `semroute "
                                f"build` to rebuild it") from None
    if vectors.shape != (n_rows, dim) or len(texts) != n_rows or \
            (owners.size and (owners.min() < OOS_OWNER or owners.max() >= n_routes)):
        raise CorruptIndexError(f"{build / TABLE} does not match the index: run `semroute "
                                f"build` to rebuild it")
    return ContrastSet(vectors, owners, texts)


def cached_contrast(build: Path) -> dict[str, NDArray[np.float32]]:
    """text -> vector of a previous build's contrast rows (empty if it has none)."""
    try:
        rows = json.loads((build / TABLE).read_bytes())["rows"]
        vectors = np.load(build / VECTORS, allow_pickle=False)
        return {str(r[1]): v for r, v in zip(rows, vectors, strict=True)}
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return {}


def nearest_own(sims: NDArray[np.float32], ids: NDArray[np.int64],
                labels: NDArray[np.int32], route: int) -> float | None:
    """The similarity of `route`'s nearest utterance among the query's neighbours."""
    valid = ids >= 0
    own = sims[valid][labels[ids[valid]] == route]
    return float(own.max()) if own.size else None


def _ranked(scores: NDArray[np.float32], has: NDArray[np.bool_],
            offsets: NDArray[np.float32]) -> Scored:
    """`Scored` of adjusted route scores, ranked as `score_query` ranks them."""
    best = int(np.argmax(np.where(has, scores, -np.inf)))
    others = np.argsort(-scores, kind="stable")
    order = np.concatenate(([best], others[others != best]))
    runner_up = float(scores[order[1]]) if len(scores) > 1 else 0.0
    return Scored(order, scores, has, float(scores[best] - offsets[best]),
                  max(float(scores[best]) - runner_up, 0.0))


def contrast_sims(contrast: ContrastSet, query: NDArray[np.float32]) -> NDArray[np.float32]:
    """The query's similarity to every contrast row: one product, shared by the penalty rule
    and `nearest_oos`."""
    # einsum, not `@`: OpenBLAS threads a (rows x d) product, which on busy cores took ~20 ms
    # for 2,000 rows against 0.2 ms for einsum's single-threaded loop (negatives_latency.md)
    sims: NDArray[np.float32] = np.einsum("ij,j->i", contrast.vectors, query)
    return sims


def nearest_oos(contrast: ContrastSet, csims: NDArray[np.float32],
                k: int) -> list[tuple[str, float]]:
    """The `k` out-of-scope examples nearest the query (text, similarity), nearest first:
    what the fallback classifier shows under `none`. Empty without out-of-scope examples."""
    rows = np.flatnonzero(contrast.owners == OOS_OWNER)
    if k <= 0 or not rows.size:
        return []
    top = rows[np.argsort(-csims[rows], kind="stable")[:k]]
    return [(contrast.texts[int(r)], float(csims[int(r)])) for r in top]


def apply_contrast(scored: Scored, sims: NDArray[np.float32], ids: NDArray[np.int64],
                   query: NDArray[np.float32], labels: NDArray[np.int32],
                   offsets: NDArray[np.float32], contrast: ContrastSet | None, *,
                   margin: float, weight: float,
                   csims: NDArray[np.float32] | None = None) -> tuple[Scored, list[Penalty]]:
    """The module's rule: negatives lower their route's score (and may hand the lead to
    another route, checked in turn, at most `MAX_PENALISED`); then the nearest out-of-scope
    example lowers every score alike (the ranking and margin stay, the confidence drops).
    Returns the adjusted scores and the penalties applied, in order. `csims`: the query's
    `contrast_sims`, when the caller has them already."""
    if contrast is None or not len(contrast) or not scored.has_neighbour.any():
        return scored, []
    if csims is None:
        csims = contrast_sims(contrast, query)
    scores = scored.scores.copy()
    found: list[Penalty] = []

    def penalty(row: int, route: int, nearest: float) -> Penalty | None:
        excess = weight * (float(csims[row]) - (nearest - margin))
        if excess <= 0:
            return None
        kind: Literal["negative", "oos"] = \
            "oos" if contrast.owners[row] == OOS_OWNER else "negative"
        return Penalty(kind, route, contrast.texts[row], float(csims[row]), nearest, excess)

    def best_route() -> tuple[int, float | None]:
        best = int(np.argmax(np.where(scored.has_neighbour, scores, -np.inf)))
        return best, nearest_own(sims, ids, labels, best)

    checked: set[int] = set()
    for _ in range(MAX_PENALISED):
        best, nearest = best_route()
        mine = contrast.owners == best
        if best in checked or nearest is None or not mine.any():
            break
        checked.add(best)
        hit = penalty(int(np.argmax(np.where(mine, csims, -np.inf))), best, nearest)
        if hit is None:
            break
        scores[best] -= hit.penalty
        found.append(hit)
    oos = contrast.owners == OOS_OWNER
    best, nearest = best_route()
    if oos.any() and nearest is not None:
        hit = penalty(int(np.argmax(np.where(oos, csims, -np.inf))), best, nearest)
        if hit is not None:
            scores -= np.float32(hit.penalty)
            found.append(hit)
    if not found:
        return scored, []
    return _ranked(scores, scored.has_neighbour, offsets), found
