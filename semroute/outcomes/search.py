"""The nearest-neighbour index over outcome vectors, and its cache beside the outcomes store.

Up to `FLAT_LIMIT` rows the search is exact (FAISS flat inner product). Above it, IVF-SQ8: about
sqrt(n) lists, k-means trained on a fixed sample of `TRAIN_PER_LIST` rows per list, rows stored
as 8-bit codes, `NPROBE` lists probed a query. The exact scan of 5k-50k rows of 384 floats is
memory-bound (0.5-2 ms a query on one core); the probe reads about 12/sqrt(n) of the rows at a
quarter of the bytes and finds ~96% of the exact 50 nearest on MiniLM vectors
(benchmarks/results/tiers_latency.md). A large store's built index is cached in a file beside it
keyed by the vectors' content (`cached_index`), so the next load skips training and assignment.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute.files import write_atomic

if TYPE_CHECKING:
    from numpy.typing import NDArray

FLAT_LIMIT = 2_000
"""Exact search up to this many rows; IVF above."""
NPROBE = 6
"""IVF lists probed per query at least (of about sqrt(n))..."""
MIN_SCAN = 1_500
"""...and enough lists to scan about this many rows: a mid-sized store (a few thousand rows,
small lists) keeps a high recall for the cost of a large store's probe."""
TRAIN_PER_LIST = 39
"""k-means trains on at most this many sampled rows per list (FAISS's own lower bound)."""
KMEANS_ITERATIONS = 10
LAYOUT = b"semroute-ivf-sq8-v1"
"""Part of the cache key: a change in how the index is built invalidates old cache files."""


def ivf_lists(rows: int) -> int:
    """How many IVF lists `rows` vectors get: about sqrt(rows), at least 16."""
    return int(min(4096, max(16, round(math.sqrt(rows)))))


def probes(rows: int, lists: int) -> int:
    """IVF lists to probe: at least NPROBE, and enough to scan about MIN_SCAN rows."""
    return int(min(lists, max(NPROBE, math.ceil(MIN_SCAN * lists / rows))))


def content_key(vectors: NDArray[np.float32], salt: str = "") -> bytes:
    """sha256 over `salt` (the encoder's key), the build settings and the vectors (shape and
    bytes, in row order): equal keys mean the same trained index."""
    h = hashlib.sha256(LAYOUT + b"\0" + salt.encode() + b"\0")
    h.update(repr((vectors.shape, str(vectors.dtype), ivf_lists(len(vectors)), TRAIN_PER_LIST,
                   KMEANS_ITERATIONS)).encode())
    h.update(np.ascontiguousarray(vectors).tobytes())
    return h.hexdigest().encode()


def empty_ivf(sample: NDArray[np.float32], lists: int) -> Any:
    """A trained, empty IVF-SQ8 inner-product index: spherical k-means centroids on `sample`,
    8-bit scalar quantiser ranges of the residuals (a quarter of the float32 bytes to scan;
    the same neighbours as IVF-flat within 0.3 points of recall on MiniLM vectors)."""
    import faiss

    dim = sample.shape[1]
    km = faiss.Kmeans(dim, lists, niter=KMEANS_ITERATIONS, seed=1, spherical=True,
                      min_points_per_centroid=1, max_points_per_centroid=TRAIN_PER_LIST)
    km.train(sample)
    quantizer: Any = faiss.IndexFlatIP(dim)
    quantizer.add(km.centroids)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True  # the IVF index frees its quantizer
    quantizer.this.disown()
    index.train(sample)  # the quantizer holds its centroids: this trains the 8-bit ranges
    return index


def search_index(vectors: NDArray[np.float32], flat_limit: int = FLAT_LIMIT) -> Any:
    """A FAISS index over `vectors` (L2-normalised float32): flat up to `flat_limit` rows,
    else IVF-SQ8 (about sqrt(n) lists) trained on a fixed sample of the rows."""
    import faiss

    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vecs.shape
    if n <= flat_limit:
        flat = faiss.IndexFlatIP(dim)
        flat.add(vecs)
        return flat
    lists = ivf_lists(n)
    take = min(n, TRAIN_PER_LIST * lists)
    sample = vecs[np.sort(np.random.default_rng(0).choice(n, take, replace=False))]
    index = empty_ivf(np.ascontiguousarray(sample), lists)
    index.add(vecs)
    index.nprobe = probes(n, lists)
    return index


def cached_index(vectors: NDArray[np.float32], cache: Path, flat_limit: int = FLAT_LIMIT,
                 salt: str = "") -> tuple[Any, str]:
    """`search_index(vectors)`, read from `cache` when the key there matches the vectors and
    `salt` (else built and written there atomically; a cache that cannot be written is
    skipped). Returns the index and how it was made: `exact`, `cached` or `built`."""
    import faiss

    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vecs) <= flat_limit:
        return search_index(vecs, flat_limit), "exact"
    head = content_key(vecs, salt) + b"\n"
    try:
        data = cache.read_bytes()
    except OSError:
        data = b""
    if data.startswith(head):
        try:
            index: Any = faiss.deserialize_index(np.frombuffer(data, np.uint8, offset=len(head)))
        except RuntimeError:
            index = None  # a torn or foreign file: build again
        if index is not None and int(index.ntotal) == len(vecs):
            index.nprobe = probes(len(vecs), int(index.nlist))
            return index, "cached"
    index = search_index(vecs, flat_limit)
    with contextlib.suppress(OSError):  # a read-only folder: the next load builds again
        write_atomic(cache, head + faiss.serialize_index(index).tobytes())
    return index, "built"
