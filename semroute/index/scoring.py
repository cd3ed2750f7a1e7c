"""How routes are scored from a query's nearest utterances (numpy only).

Route score = α·(similarity of the route's nearest utterance) + (1-α)·(similarity to the
route's centroid), α = 0.4. The nearest utterance rewards a close paraphrase; the centroid
rewards agreement with the route as a whole, which steadies the ranking and separates
off-topic queries better than either part alone (benchmarks/results/accuracy.md).

Confidence = score − offset of the best route: routes whose own utterances sit tightly
together score high for everything near them, so each route's offset is half its mean
leave-one-out score minus the median, computed at build time without labels. The default
threshold is the 5th percentile of the utterances' leave-one-out confidences (about 5% of
in-scope queries would be rejected), used when models.yaml says `score_threshold: auto`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from numpy.typing import NDArray

ALPHA = 0.4
OFFSET_GAMMA = 0.5
DEFAULT_QUANTILE = 0.05
MIN_LOO = 3  # a leave-one-out statistic needs at least two remaining utterances


@dataclass(frozen=True)
class RouteStats:
    """Per-route data computed at build time: unit centroids and confidence offsets."""

    centroids: NDArray[np.float32]  # (R, d), unit rows
    offsets: NDArray[np.float32]  # (R,)
    default_threshold: float
    alpha: float


def build_route_stats(vectors: NDArray[np.float32], labels: NDArray[np.int32], n_routes: int,
                      alpha: float = ALPHA) -> RouteStats:
    """Centroids, offsets and the default threshold from the utterance vectors alone.

    BLAS runs on one thread here: the products are small, and OpenBLAS's first multi-threaded
    call costs about a second on busy cores (benchmarks/results/latency.md).
    """
    with threadpool_limits(limits=1):
        return _route_stats(vectors, labels, n_routes, alpha)


def _route_stats(vectors: NDArray[np.float32], labels: NDArray[np.int32], n_routes: int,
                 alpha: float) -> RouteStats:
    dim = vectors.shape[1]
    centroids = np.zeros((n_routes, dim), dtype=np.float32)
    mean_loo = np.full(n_routes, np.nan)
    loo_scores: list[NDArray[np.float64]] = [np.zeros(0)] * n_routes
    for r in range(n_routes):
        own = vectors[labels == r].astype(np.float64)
        if not len(own):
            continue
        total = own.sum(0)
        centroids[r] = total / max(np.linalg.norm(total), 1e-12)
        if len(own) >= MIN_LOO:
            gram = own @ own.T
            np.fill_diagonal(gram, -np.inf)
            rest = total[None, :] - own  # centroid direction of the other utterances
            rest_cos = (own * rest).sum(1) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
            loo_scores[r] = alpha * gram.max(1) + (1 - alpha) * rest_cos
            mean_loo[r] = loo_scores[r].mean()
    median = np.nanmedian(mean_loo) if np.isfinite(mean_loo).any() else 0.0
    offsets = OFFSET_GAMMA * np.nan_to_num(mean_loo - median, nan=0.0)
    held = [loo_scores[r] - offsets[r] for r in range(n_routes) if len(loo_scores[r])]
    default = float(np.quantile(np.concatenate(held), DEFAULT_QUANTILE)) if held else 0.5
    return RouteStats(centroids, offsets.astype(np.float32), default, alpha)


@dataclass(frozen=True)
class Scored:
    """One query's route scores: every route, best first, and which had a neighbour."""

    order: NDArray[np.int64]  # route ids, the best candidate first, then by score
    scores: NDArray[np.float32]  # (R,) blend scores (upper bounds for non-neighbours)
    has_neighbour: NDArray[np.bool_]  # (R,)
    confidence: float  # best score minus the best route's offset
    margin: float  # best score minus the runner-up's


def score_query(sims: NDArray[np.float32], ids: NDArray[np.int64], query: NDArray[np.float32],
                labels: NDArray[np.int32], stats: RouteStats) -> Scored:
    """Score every route for one query from its top-k neighbours (ids of -1 are padding).

    A route with no neighbour in the top k is given an upper bound (its max part taken as the
    lowest neighbour similarity), so the margin never overstates how clear the winner is.
    """
    valid = ids >= 0
    sims, ids = sims[valid], ids[valid]
    n_routes = len(stats.offsets)
    centroid_sims = stats.centroids @ query
    if not len(ids):
        return Scored(np.arange(n_routes), centroid_sims, np.zeros(n_routes, bool), -1.0, 0.0)
    route_of = labels[ids]
    nearest = np.full(n_routes, sims.min(), dtype=np.float32)
    np.maximum.at(nearest, route_of, sims)
    has = np.zeros(n_routes, dtype=bool)
    has[route_of] = True
    scores = (stats.alpha * nearest + (1 - stats.alpha) * centroid_sims).astype(np.float32)
    best = int(np.argmax(np.where(has, scores, -np.inf)))
    others = np.argsort(-scores, kind="stable")
    order = np.concatenate(([best], others[others != best]))
    runner_up = float(scores[order[1]]) if n_routes > 1 else 0.0
    margin = max(float(scores[best]) - runner_up, 0.0)
    return Scored(order, scores, has, float(scores[best] - stats.offsets[best]), margin)
