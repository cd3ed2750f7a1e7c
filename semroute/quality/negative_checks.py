"""`semroute lint` on negatives and out-of-scope examples: a negative with no other home, an
utterance its own route's negative would lower, an out-of-scope example inside a route.
Reads the vectors of the index build (no re-encoding)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np

from semroute.config import RouteSet
from semroute.index import RouteIndex

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semroute.quality.linting import LintLimits

Level = Literal["error", "warning"]
Found = tuple[Level, str, str, str | None, str]  # LintFinding's fields
OOS_ROUTE = "(out of scope)"


class NegativeChecks:
    """The checks over one build's utterance vectors (`vecs`, unit rows, aligned with
    `index.texts`) and its negatives and out-of-scope examples (`index.contrast`)."""

    def __init__(self, routes: RouteSet, index: RouteIndex, vecs: NDArray[np.float32],
                 limits: LintLimits) -> None:
        self.routes, self.index, self.vecs, self.limits = routes, index, vecs, limits
        self.files = {r.name: str(r.file) for r in routes.routes}
        contrast = index.contrast
        self.rows = [] if contrast is None else list(range(len(contrast)))
        self.sims = (contrast.vectors @ vecs.T) if contrast is not None and len(vecs) else \
            np.zeros((len(self.rows), len(vecs)), np.float32)  # (contrast rows, utterances)

    def findings(self) -> list[Found]:
        return [*self.negatives(), *self.utterances_near_negatives(), *self.oos_inside()]

    def _nearest(self, row: int, mask: NDArray[np.bool_]) -> tuple[float, int]:
        """The most similar utterance among `mask` to contrast row `row` (sim, index)."""
        sims = np.where(mask, self.sims[row], -np.inf)
        i = int(np.argmax(sims)) if mask.any() else -1
        return (float(sims[i]), i) if i >= 0 else (-1.0, -1)

    def negatives(self) -> Iterator[Found]:
        """A negative closer to its own route's utterances than to any other route's (and any
        out-of-scope example): nothing says where queries like it belong, and the route's
        own utterances near it lose score too."""
        c, names, labels = self.index.contrast, self.index.route_names, self.index.labels
        if c is None:
            return
        oos = c.owners < 0
        for row in self.rows:
            owner = int(c.owners[row])
            if owner < 0:
                continue
            own, i = self._nearest(row, labels == owner)
            other, j = self._nearest(row, labels != owner)
            oos_sim = float(np.max(np.where(oos, c.vectors @ c.vectors[row], -np.inf))) \
                if oos.any() else -1.0
            if i < 0 or own <= max(other, oos_sim):
                continue
            level: Level = "error" if own >= self.limits.near_dup_error else "warning"
            elsewhere = (f"route '{names[labels[j]]}' ({other:.3f})" if j >= 0 and
                         other >= oos_sim else f"an out-of-scope example ({oos_sim:.3f})")
            yield (level, self.files.get(names[owner], "?"), names[owner], c.texts[row],
                   f"confusing negative: closest to this route's own utterance "
                   f"{self.index.texts[i]!r} ({own:.3f}), nearer than to anything else (best: "
                   f"{elsewhere}); say where such queries belong (another route's utterance "
                   f"or an out-of-scope example), or drop it if the route should take them")

    def utterances_near_negatives(self) -> Iterator[Found]:
        """An utterance as near one of its own route's negatives as `near_dup`: queries like
        it will be pulled down by the negative."""
        c, names, labels = self.index.contrast, self.index.route_names, self.index.labels
        if c is None:
            return
        for row in self.rows:
            owner = int(c.owners[row])
            if owner < 0:
                continue
            hits = np.nonzero((labels == owner) & (self.sims[row] >= self.limits.near_dup))[0]
            for i in hits.tolist():
                yield ("warning", self.files.get(names[owner], "?"), names[owner],
                       self.index.texts[i], f"near this route's negative {c.texts[row]!r} "
                       f"(similarity {float(self.sims[row, i]):.3f}): queries like it lose "
                       f"score; reword one of the two")

    def oos_inside(self) -> Iterator[Found]:
        """An out-of-scope example more similar to a route's centroid than that route's
        own least typical utterance: it sits inside the route, and queries the route should
        take near it lose score."""
        c, names, labels = self.index.contrast, self.index.route_names, self.index.labels
        if c is None or not len(self.vecs):
            return
        sums = np.zeros((len(names), self.vecs.shape[1]), np.float32)
        np.add.at(sums, labels, self.vecs)
        cents = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        own = np.einsum("ij,ij->i", self.vecs, cents[labels])
        floor = np.full(len(names), np.inf)
        np.minimum.at(floor, labels, own)
        file = str(self.routes.oos_file) if self.routes.oos_file else "router.oos_examples"
        for row in self.rows:
            if c.owners[row] >= 0:
                continue
            to_cent = cents @ c.vectors[row]
            r = int(np.argmax(to_cent - floor))
            if to_cent[r] < floor[r]:
                continue
            near, i = self._nearest(row, labels == r)
            yield ("error" if near >= self.limits.near_dup_error else "warning", file,
                   names[r], c.texts[row], f"out-of-scope example sits inside route "
                   f"'{names[r]}' (centroid similarity {to_cent[r]:.3f} ≥ its least typical "
                   f"utterance's {floor[r]:.3f}; nearest utterance {self.index.texts[i]!r} "
                   f"{near:.3f}): if such queries belong to '{names[r]}', remove it from "
                   f"{file}; if not, give the route negatives like it")
