"""Load and verify a built utterance index (`RouteIndex`); building is in build.py.

Layout of an index folder (`indexes/<name>/`)::

    CURRENT            the id of the live build (replaced atomically)
    <build-id>/        one immutable build: manifest.json, vectors.faiss, utterances.json,
                       embeddings.npy (the embedding cache), encoder/<backend>/ (ONNX export)

A build writes a new folder and then switches CURRENT, so readers never see half a build,
and a failed build leaves the previous one in place.
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
from semroute.errors import CorruptIndexError, StaleIndexError
from semroute.index.manifest import (
    REBUILD_HINT,
    Manifest,
    _verify_files,
    check_fresh,
    current_build,
    read_manifest,
)
from semroute.index.scoring import RouteStats

if TYPE_CHECKING:
    from numpy.typing import NDArray

# From this many vectors `index_type: auto` builds HNSW (M=32, efSearch 128): at 10k it searches
# in ~0.2 ms against ~0.5-0.75 ms for the exact flat index, with 99.98% recall@32
# (benchmarks/results/latency.md); below a few thousand the flat index is faster.
HNSW_MIN_VECTORS = 4_000


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

    @classmethod
    def load(cls, index_dir: str | Path, routes: RouteSet | None = None, *,
             verify: bool = True) -> RouteIndex:
        """Load and check an index; with `routes`, also check it is fresh against them."""
        index_dir = Path(index_dir)
        build = current_build(index_dir)
        manifest = read_manifest(build)
        _verify_files(build, manifest, hashes=verify)
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
        return cls(index_dir, manifest, fi, route_names, labels, texts,
                   read_route_stats(build, len(route_names), manifest.encoder.dim))

    @property
    def build_dir(self) -> Path:
        return self.path / self.manifest.build_id

    def load_encoder(self, *, threads: int = 1) -> Encoder:
        """The encoder this index was built with; StaleIndexError if it changed since."""
        m = self.manifest.encoder
        enc = load_encoder(m.name, m.backend, index_dir=self.build_dir, threads=threads)
        if Fingerprint.of(enc) != self.manifest.fingerprint:
            raise StaleIndexError(f"the index at {self.path} was built with encoder "
                                  f"{self.manifest.fingerprint.describe()}, but the encoder now "
                                  f"is {Fingerprint.of(enc).describe()}: {REBUILD_HINT}")
        return enc

    def search(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32],
                                                                     NDArray[np.int64]]:
        """Top-k inner products and vector ids; ids of -1 mean fewer than k vectors."""
        k = min(k, self.faiss_index.ntotal)
        sims, ids = self.faiss_index.search(queries, k)
        return sims, ids


def read_route_stats(build: Path, n_routes: int, dim: int) -> RouteStats:
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
    with path.open("wb") as f:
        np.savez(f, centroids=stats.centroids, offsets=stats.offsets,
                 default_threshold=np.float64(stats.default_threshold),
                 alpha=np.float64(stats.alpha))


