"""`semroute lint`: what makes a route set route badly, found before users see it (the
utterances and routes here; the route-file rules in `rule_checks.py`).

Reads the utterance vectors of the index build (`embeddings.npy`, no re-encoding), so the
index must be fresh for the route files (`RouteIndex.load(index_dir, routes)` checks that).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from semroute.config import Route, RouteSet
from semroute.errors import CorruptIndexError
from semroute.index import RouteIndex
from semroute.quality.negative_checks import NegativeChecks
from semroute.quality.rule_checks import RuleChecks

Level = Literal["error", "warning"]
_BLOCK = 1024


@dataclass(frozen=True)
class LintFinding:
    """One problem: where it is (file, route, utterance) and why it matters."""

    level: Level
    file: str
    route: str
    utterance: str | None
    message: str

    def format(self) -> str:
        """`file: route: utterance: level: why` (the utterance part only when there is one)."""
        utt = f" {self.utterance!r}:" if self.utterance is not None else ""
        return f"{self.file}: {self.route}:{utt} {self.level}: {self.message}"


@dataclass(frozen=True)
class LintLimits:
    """Thresholds of the checks (cosine similarities and counts)."""

    near_dup: float = 0.92
    near_dup_error: float = 0.95
    min_utterances_error: int = 5
    min_utterances_warning: int = 10
    max_mean_similarity: float = 0.85
    min_description: int = 20
    misplaced_gap: float = 0.05  # how much closer to another route before it is reported


def _vectors(index: RouteIndex) -> NDArray[np.float32]:
    """Unit-length utterance vectors of the build, aligned with `index.texts`."""
    path = index.build_dir / "embeddings.npy"
    try:
        vecs = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{path} is unreadable ({exc}): run `semroute build`") from None
    if vecs.ndim != 2 or vecs.shape[0] != len(index.texts):
        raise CorruptIndexError(f"{path} has shape {vecs.shape}, expected "
                                f"({len(index.texts)}, dim): run `semroute build`")
    return _unit(vecs)


def _near_duplicates(vecs: NDArray[np.float32], labels: NDArray[np.int32],
                     threshold: float) -> Iterator[tuple[int, int, float]]:
    """Pairs (i < j) of utterances in different routes with cosine ≥ threshold, blockwise."""
    for start in range(0, len(vecs), _BLOCK):
        sims = vecs[start:start + _BLOCK] @ vecs.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, j in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < j and labels[i] != labels[j]:
                yield i, j, float(sims[r, j])


def _centroids(vecs: NDArray[np.float32], labels: NDArray[np.int32],
               n_routes: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Per-route sums of vectors and counts."""
    sums = np.zeros((n_routes, vecs.shape[1]), dtype=np.float32)
    np.add.at(sums, labels, vecs)
    return sums, np.bincount(labels, minlength=n_routes)


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return np.asarray(x / norms, dtype=np.float32)


class _Linter:
    """The checks, over one index build and the route files it was built from."""

    def __init__(self, routes: RouteSet, index: RouteIndex, limits: LintLimits) -> None:
        self.limits = limits
        self.names = index.route_names
        self.by_name: dict[str, Route] = {r.name: r for r in routes.routes}
        self.labels = index.labels
        self.texts = index.texts
        self.vecs = _vectors(index)
        self.sums, self.counts = _centroids(self.vecs, self.labels, len(self.names))

    def _finding(self, level: Level, route_id: int, utterance: str | None,
                 message: str) -> LintFinding:
        name = self.names[route_id]
        route = self.by_name.get(name)
        return LintFinding(level, str(route.file) if route else "?", name, utterance, message)

    def near_duplicates(self) -> Iterator[LintFinding]:
        lim = self.limits
        for i, j, sim in _near_duplicates(self.vecs, self.labels, lim.near_dup):
            other = self.names[self.labels[j]]
            where = self.by_name[other].file.name if other in self.by_name else "?"
            yield self._finding(
                "error" if sim >= lim.near_dup_error else "warning", int(self.labels[i]),
                self.texts[i], f"near-duplicate of {self.texts[j]!r} in route '{other}' "
                f"({where}), similarity {sim:.3f}: queries like these cannot be told apart; "
                f"keep it in one route")

    def misplaced(self) -> Iterator[LintFinding]:
        """Utterances clearly closer to another route's centroid than to their own
        (leave-one-out), largest gap first; small gaps between weak matches are noise."""
        own = self.sums[self.labels] - self.vecs
        own_sim = np.einsum("ij,ij->i", _unit(own), self.vecs)
        others = self.vecs @ _unit(self.sums).T
        others[np.arange(len(self.vecs)), self.labels] = -np.inf
        best = np.argmax(others, axis=1) if others.size else np.zeros(0, dtype=np.int64)
        rows = np.arange(len(self.vecs))
        gap = others[rows, best] - own_sim if len(rows) else np.zeros(0)
        for i in np.argsort(-gap, kind="stable"):
            label, o = int(self.labels[i]), int(best[i])
            if self.counts[label] < 2 or gap[i] < self.limits.misplaced_gap:
                continue
            yield self._finding(
                "warning", label, self.texts[i],
                f"closer to route '{self.names[o]}' (centroid similarity {others[i, o]:.3f}) "
                f"than to its own route (leave-one-out {own_sim[i]:.3f}, gap {gap[i]:.3f}): "
                f"if it belongs here, add more utterances like it to this route; if not, "
                f"move it to '{self.names[o]}'")

    def per_route(self) -> Iterator[LintFinding]:
        lim = self.limits
        for rid, name in enumerate(self.names):
            n = int(self.counts[rid])
            if n < lim.min_utterances_warning:
                level: Level = "error" if n < lim.min_utterances_error else "warning"
                yield self._finding(level, rid, None, f"only {n} utterance(s); give at least "
                                    f"{lim.min_utterances_warning} varied ways users ask")
            if n >= 2:
                mean = (float(self.sums[rid] @ self.sums[rid]) - n) / (n * (n - 1))
                if mean >= lim.max_mean_similarity:
                    yield self._finding("warning", rid, None,
                                        f"utterances too alike (mean pairwise similarity "
                                        f"{mean:.3f}): they cover few ways users ask")
            route = self.by_name.get(name)
            if route is not None and len(route.description) < lim.min_description:
                yield self._finding("warning", rid, None,
                                    f"description is {len(route.description)} characters; the "
                                    f"classifier chooses routes by it: say what belongs here "
                                    f"(at least {lim.min_description})")


def lint(routes: RouteSet, index: RouteIndex, *, near_dup: float = 0.92,
         limits: LintLimits | None = None) -> list[LintFinding]:
    """Every finding on a route set and its index, errors first, then by file and route."""
    limits = limits or LintLimits(near_dup=near_dup)
    missing = sorted(set(routes.names) - set(index.route_names))
    if missing:
        raise CorruptIndexError(f"the index at {index.path} lacks routes {', '.join(missing)}:"
                                f" run `semroute build`")
    linter = _Linter(routes, index, limits)
    found = [*linter.per_route(), *linter.near_duplicates(), *linter.misplaced()]
    found += [LintFinding(*f) for f in NegativeChecks(routes, index, linter.vecs,
                                                      limits).findings()]
    rules = RuleChecks(routes)
    found += [LintFinding(*f) for f in (*rules.shadowed(), *rules.utterances())]
    order = {"error": 0, "warning": 1}
    return sorted(found, key=lambda f: order[f.level])  # stable: each check's own order


def lint_dir(routes_dir: str | Path, index_dir: str | Path, *, profile: str | None = None,
             near_dup: float = 0.92) -> list[LintFinding]:
    """Load the route files and their (fresh) index, then `lint` them."""
    from semroute.config import load_routes

    route_set = load_routes(routes_dir, profile=profile)
    return lint(route_set, RouteIndex.load(index_dir, route_set), near_dup=near_dup)
