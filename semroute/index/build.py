"""Build, save, load and verify the utterance index.

Layout of an index folder (`indexes/<name>/`)::

    CURRENT            the id of the live build (replaced atomically)
    <build-id>/        one immutable build: manifest.json, vectors.faiss, utterances.json,
                       embeddings.npy (the embedding cache), encoder/<backend>/ (ONNX export)

A build writes a new folder and then switches CURRENT, so readers never see half a build,
and a failed build leaves the previous one in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute._version import __version__
from semroute.config import RouteSet, load_routes
from semroute.encoders import (
    Encoder,
    Fingerprint,
    SentenceTransformerEncoder,
    file_sha256,
    load_encoder,
    onnx_dir,
    resolve_model_path,
)
from semroute.errors import CorruptIndexError, IndexNotFoundError, StaleIndexError
from semroute.index.manifest import (
    FORMAT_VERSION,
    EncoderEntry,
    FileEntry,
    Manifest,
    RouteEntry,
    _verify_files,
    current_build,
    read_manifest,
)
from semroute.index.scoring import build_route_stats
from semroute.index.store import write_route_stats

if TYPE_CHECKING:
    from numpy.typing import NDArray

# From this many vectors `index_type: auto` builds HNSW (M=32, efSearch 128): at 10k it searches
# in ~0.2 ms against ~0.5-0.75 ms for the exact flat index, with 99.98% recall@32
# (benchmarks/results/latency.md); below a few thousand the flat index is faster.
HNSW_MIN_VECTORS = 4_000


@dataclass
class BuildReport:
    """What a build did: counts of embedded and reused texts, route changes, timings."""

    path: Path
    build_id: str
    n_vectors: int
    embedded: int
    reused: int
    routes_added: list[str] = field(default_factory=list)
    routes_removed: list[str] = field(default_factory=list)
    routes_changed: list[str] = field(default_factory=list)
    encoder: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.n_vectors} utterances, embedded {self.embedded}, reused {self.reused}"]
        for label, names in (("added", self.routes_added), ("removed", self.routes_removed),
                             ("changed", self.routes_changed)):
            if names:
                parts.append(f"routes {label}: {', '.join(names)}")
        if not (self.routes_added or self.routes_removed or self.routes_changed):
            parts.append("no route changed")
        t = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings_s.items())
        return f"built {self.path} ({self.build_id}) with {self.encoder}\n  " + \
            "\n  ".join(parts) + f"\n  time: {t}"


# ---------------------------------------------------------------- building


@contextlib.contextmanager
def _build_lock(index_dir: Path) -> Iterator[None]:
    index_dir.mkdir(parents=True, exist_ok=True)
    with (index_dir / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _previous(index_dir: Path) -> tuple[Path | None, Manifest | None]:
    try:
        build = current_build(index_dir)
        return build, read_manifest(build)
    except (IndexNotFoundError, CorruptIndexError, StaleIndexError):
        return None, None


def _cached_vectors(build: Path | None, manifest: Manifest | None,
                    fingerprint: Fingerprint) -> dict[str, NDArray[np.float32]]:
    """text -> vector from the previous build, if it used the same encoder and is intact."""
    if build is None or manifest is None or manifest.fingerprint != fingerprint:
        return {}
    try:
        _verify_files(build, manifest, hashes=True)
        table = json.loads((build / "utterances.json").read_bytes())
        vecs = np.load(build / "embeddings.npy", allow_pickle=False)
        texts = [row[1] for row in table["rows"]]
        if vecs.shape != (len(texts), fingerprint.dim):
            return {}
        return dict(zip(texts, vecs, strict=True))
    except (CorruptIndexError, OSError, ValueError, KeyError):
        return {}


def export_cache_dir() -> Path:
    """Where ONNX exports are kept between builds of different index folders."""
    root = os.environ.get("SEMROUTE_CACHE") or Path.home() / ".cache" / "semroute"
    return Path(root) / "onnx"


def _make_faiss(vectors: NDArray[np.float32], index_type: str) -> Any:
    import faiss

    dim = vectors.shape[1]
    fi: Any
    if index_type == "hnsw":
        fi = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        fi.hnsw.efConstruction = 80
        fi.hnsw.efSearch = 128
    else:
        fi = faiss.IndexFlatIP(dim)
    if len(vectors):
        fi.add(vectors)
    return fi


def _prepare_encoder(routes: RouteSet, build: Path, previous: Path | None,
                     prev_manifest: Manifest | None, threads: int) -> tuple[Encoder, str]:
    """Load the configured encoder; for ONNX backends export it into the new build folder
    (or reuse the previous build's export when it came from the same torch weights)."""
    s = routes.settings
    if s.backend == "torch":
        enc = SentenceTransformerEncoder(s.encoder, threads=threads)
        return enc, enc.weights_hash
    from semroute.encoders import weights_files
    from semroute.encoders.onnx_export import export_onnx

    source_hash = file_sha256(*weights_files(resolve_model_path(s.encoder)))
    target = onnx_dir(build, s.backend)
    reuse = (previous is not None and prev_manifest is not None
             and prev_manifest.encoder.backend == s.backend
             and prev_manifest.encoder.name == s.encoder
             and prev_manifest.encoder.source_weights_hash == source_hash
             and onnx_dir(previous, s.backend).is_dir())
    target.parent.mkdir(parents=True, exist_ok=True)
    if reuse:
        assert previous is not None
        shutil.copytree(onnx_dir(previous, s.backend), target)
    else:
        shared = export_cache_dir() / f"{source_hash[:16]}-{s.backend}"
        if not shared.is_dir():
            export_onnx(resolve_model_path(s.encoder), shared, quantize=s.backend == "onnx-int8")
        shutil.copytree(shared, target)
    return load_encoder(s.encoder, s.backend, index_dir=build, threads=threads), source_hash


def build_index(routes: RouteSet | str | Path = "routes", out: str | Path = "indexes/default",
                *, threads: int | None = None, show_progress: bool | None = None,
                log: Callable[[str], None] | None = None) -> BuildReport:
    """Embed every utterance (reusing cached vectors) and write a new index build atomically."""
    if not isinstance(routes, RouteSet):
        routes = load_routes(routes)
    index_dir = Path(out)
    threads = threads or min(4, os.cpu_count() or 1)
    show_progress = sys.stderr.isatty() if show_progress is None else show_progress
    say = log or (lambda _msg: None)
    timings: dict[str, float] = {}
    with _build_lock(index_dir):
        t0 = time.perf_counter()
        previous, prev_manifest = _previous(index_dir)
        build_id = datetime.now(UTC).strftime("b%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        tmp = index_dir / f".tmp-{build_id}"
        tmp.mkdir()
        try:
            encoder, source_hash = _prepare_encoder(routes, tmp, previous, prev_manifest,
                                                    threads)
            fingerprint = Fingerprint.of(encoder)
            timings["encoder"] = time.perf_counter() - t0

            t1 = time.perf_counter()
            rows = [(i, text) for i, r in enumerate(routes.routes) for text in r.utterances]
            cache = _cached_vectors(previous, prev_manifest, fingerprint)
            missing = sorted({text for _, text in rows if text not in cache})
            if missing:
                say(f"embedding {len(missing)} new utterance(s) with {fingerprint.describe()}")
                fresh = encoder.encode(missing, show_progress=show_progress)  # its own batch
                cache.update(zip(missing, fresh, strict=True))
            vectors = np.stack([cache[t] for _, t in rows]).astype(np.float32) if rows else \
                np.zeros((0, fingerprint.dim), dtype=np.float32)
            timings["embed"] = time.perf_counter() - t1

            t2 = time.perf_counter()
            index_type = routes.settings.index_type
            if index_type == "auto":
                index_type = "hnsw" if len(rows) >= HNSW_MIN_VECTORS else "flat"
            import faiss

            faiss.write_index(_make_faiss(vectors, index_type), str(tmp / "vectors.faiss"))
            np.save(tmp / "embeddings.npy", vectors, allow_pickle=False)
            labels = np.asarray([i for i, _ in rows], dtype=np.int32)
            write_route_stats(tmp / "route_stats.npz",
                         build_route_stats(vectors, labels, len(routes.routes),
                                           routes.settings.blend_alpha))
            table = {"routes": routes.names, "rows": rows}
            _fsync_write(tmp / "utterances.json", json.dumps(table).encode())
            files = {str(p.relative_to(tmp)): FileEntry(sha256=file_sha256(p),
                                                          size=p.stat().st_size)
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = Manifest(
                format=FORMAT_VERSION, semroute_version=__version__, build_id=build_id,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                encoder=EncoderEntry(name=fingerprint.name, backend=fingerprint.backend,
                                     dim=fingerprint.dim, weights_hash=fingerprint.weights_hash,
                                     source_weights_hash=source_hash),
                settings=routes.settings.index_fields(), index_type=index_type,
                n_vectors=len(rows),
                routes={r.name: RouteEntry(hash=r.content_hash(), utterances=len(r.utterances),
                                           file=r.file.name) for r in routes.routes},
                files=files)
            _fsync_write(tmp / "manifest.json", manifest.model_dump_json(indent=2).encode())
            timings["write"] = time.perf_counter() - t2

            final = index_dir / build_id
            tmp.rename(final)
            pointer_tmp = index_dir / f".CURRENT.{build_id}"
            _fsync_write(pointer_tmp, build_id.encode())
            os.replace(pointer_tmp, index_dir / "CURRENT")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _prune(index_dir, keep={build_id, previous.name if previous else ""})

    old = prev_manifest.routes if prev_manifest else {}
    new = {r.name: r.content_hash() for r in routes.routes}
    timings["total"] = time.perf_counter() - t0
    return BuildReport(
        path=index_dir, build_id=build_id, n_vectors=len(rows), embedded=len(missing),
        reused=len({t for _, t in rows}) - len(missing),
        routes_added=sorted(set(new) - set(old)), routes_removed=sorted(set(old) - set(new)),
        routes_changed=sorted(n for n in set(new) & set(old) if new[n] != old[n].hash),
        encoder=fingerprint.describe(), timings_s=timings)


def _prune(index_dir: Path, keep: set[str]) -> None:
    """Remove builds other than the live one and its predecessor (a reader may hold it)."""
    for p in index_dir.iterdir():
        if p.is_dir() and p.name not in keep and (p.name.startswith("b") or
                                                   p.name.startswith(".tmp-")):
            shutil.rmtree(p, ignore_errors=True)
