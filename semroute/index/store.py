"""Load and verify a built utterance index (`RouteIndex`); building is in build.py.

Layout of an index folder (`indexes/<name>/`)::

    CURRENT            the id of the live build (replaced atomically)
    <build-id>/        one immutable build: manifest.json, vectors.faiss, utterances.json,
                       embeddings.npy (the embedding cache), encoder/<backend>/ (ONNX export)

A build writes a new folder and then switches CURRENT, so readers never see half a build,
and a failed build leaves the previous one in place. Builds are pruned two generations later:
a load that loses its build meanwhile starts again from CURRENT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute.config import RouteSet
from semroute.encoders import (
    Encoder,
    Fingerprint,
    load_encoder,
)
from semroute.errors import (
    CorruptIndexError,
    EncoderError,
    OnnxBackendError,
    SemrouteError,
    StaleIndexError,
)
from semroute.index.contrast import ContrastSet, read_contrast
from semroute.index.lexical import LexicalIndex, read_lexical
from semroute.index.manifest import (
    REBUILD_HINT,
    Manifest,
    check_fresh,
    current_build,
    read_manifest,
    verify_files,
)
from semroute.index.scoring import RouteStats

if TYPE_CHECKING:
    from numpy.typing import NDArray

# How often a load starts again when its build was pruned under it (each retry needs two more
# builds to finish during one load, so more than one is already unlikely).
LOAD_ATTEMPTS = 5


@dataclass
class RouteIndex:
    """A loaded index: FAISS vectors, which route each vector belongs to, its texts."""

    path: Path
    manifest: Manifest
    faiss_index: Any
    route_names: list[str]
    labels: NDArray[np.int32]
    texts: list[str]
    stats: RouteStats
    lexical: LexicalIndex | None = None  # None: a build made before lexical.json existed
    contrast: ContrastSet | None = None  # negatives and out-of-scope examples (None: none)

    @classmethod
    def load(cls, index_dir: str | Path, routes: RouteSet | None = None, *,
             verify: bool = True) -> RouteIndex:
        """Load and check the live build; with `routes`, also check it is fresh against them.

        If CURRENT moved on while the build was read (a newer build replaced it and a later one
        pruned it), the load starts again from CURRENT instead of failing.
        """
        index_dir = Path(index_dir)
        attempt = 1
        while True:
            build = current_build(index_dir)
            try:
                return cls._load_build(index_dir, build, routes, verify=verify)
            except (CorruptIndexError, StaleIndexError):
                if attempt == LOAD_ATTEMPTS or not _moved_on(index_dir, build):
                    raise
                attempt += 1

    @classmethod
    def _load_build(cls, index_dir: Path, build: Path, routes: RouteSet | None, *,
                    verify: bool) -> RouteIndex:
        """Read and check one build folder (see `load`)."""
        manifest = read_manifest(build)
        verify_files(build, manifest, hashes=verify)
        if routes is not None:
            check_fresh(manifest, routes, index_dir)
        try:
            table = json.loads((build / "utterances.json").read_bytes())
            route_names = list(table["routes"])
            labels = np.asarray([row[0] for row in table["rows"]], dtype=np.int32)
            texts = [row[1] for row in table["rows"]]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise CorruptIndexError(f"{build / 'utterances.json'} is unreadable ({exc}): "
                                    f"{REBUILD_HINT}") from None
        import faiss

        try:
            fi = faiss.read_index(str(build / "vectors.faiss"))
        except RuntimeError as exc:
            raise CorruptIndexError(f"{build / 'vectors.faiss'} is unreadable: "
                                    f"{str(exc).splitlines()[0]}: {REBUILD_HINT}") from None
        if fi.ntotal != len(texts) or fi.ntotal != manifest.n_vectors or \
                fi.d != manifest.encoder.dim:
            raise CorruptIndexError(f"{build} is inconsistent ({fi.ntotal} vectors, "
                                    f"{len(texts)} utterances, manifest {manifest.n_vectors}): "
                                    f"{REBUILD_HINT}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(route_names)):
            raise CorruptIndexError(f"{build / 'utterances.json'} has route ids out of range: "
                                    f"{REBUILD_HINT}")
        contrast = read_contrast(build, manifest.n_contrast, len(route_names),
                                 manifest.encoder.dim) if manifest.n_contrast else None
        return cls(index_dir, manifest, fi, route_names, labels, texts,
                   read_route_stats(build, len(route_names), manifest.encoder.dim),
                   lexical=read_lexical(build, len(route_names)), contrast=contrast)

    @property
    def build_dir(self) -> Path:
        """The folder of the build this index was loaded from (pruned two builds later)."""
        return self.path / self.manifest.build_id

    def load_encoder(self, *, threads: int = 1) -> Encoder:
        """The encoder this index was built with; StaleIndexError if it changed since.

        If newer builds pruned this build's folder since the index was loaded, the identical
        export of the live build (same encoder entry) is read; the fingerprint check guards it.
        """
        m = self.manifest.encoder
        source = self.build_dir
        attempt = 1
        while True:
            try:
                enc = load_encoder(m.name, m.backend, index_dir=source, threads=threads)
                break
            except (EncoderError, OnnxBackendError):
                twin = None if source.is_dir() or attempt == LOAD_ATTEMPTS else self._twin()
                if twin is None:
                    raise
                source, attempt = twin, attempt + 1
        if Fingerprint.of(enc) != self.manifest.fingerprint:
            raise StaleIndexError(f"the index at {self.path} was built with encoder "
                                  f"{self.manifest.fingerprint.describe()}, but the encoder now "
                                  f"is {Fingerprint.of(enc).describe()}: {REBUILD_HINT}")
        return enc

    def _twin(self) -> Path | None:
        """The live build, if it holds the same encoder export as this one."""
        try:
            build = current_build(self.path)
            same = read_manifest(build).encoder == self.manifest.encoder
        except SemrouteError:
            return None
        return build if same else None

    def search(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32],
                                                                     NDArray[np.int64]]:
        """Top-k inner products and vector ids; ids of -1 mean fewer than k vectors."""
        k = min(k, self.faiss_index.ntotal)
        sims, ids = self.faiss_index.search(queries, k)
        return sims, ids


def _moved_on(index_dir: Path, build: Path) -> bool:
    """Whether CURRENT names another build than `build` by now."""
    try:
        return (index_dir / "CURRENT").read_text().strip() != build.name
    except OSError:
        return False


def read_route_stats(build: Path, n_routes: int, dim: int) -> RouteStats:
    """A build's per-route scoring statistics, checked against its routes and dimension."""
    path = build / "route_stats.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            stats = RouteStats(z["centroids"].astype(np.float32), z["offsets"].astype(np.float32),
                               float(z["default_threshold"]), float(z["alpha"]))
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptIndexError(f"{path} is unreadable ({exc}): {REBUILD_HINT}") from None
    if stats.centroids.shape != (n_routes, dim) or stats.offsets.shape != (n_routes,):
        raise CorruptIndexError(f"{path} does not match the index's routes: {REBUILD_HINT}")
    return stats


def write_route_stats(path: Path, stats: RouteStats) -> None:
    """Save per-route scoring statistics (numpy .npz, no pickles); build.py fsyncs it."""
    with path.open("wb") as f:
        np.savez(f, centroids=stats.centroids, offsets=stats.offsets,
                 default_threshold=np.float64(stats.default_threshold),
                 alpha=np.float64(stats.alpha))


