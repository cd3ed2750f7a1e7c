"""Build the utterance index: embed (reusing the previous build's vectors), write a new build
folder aside, make it durable, then switch CURRENT to it.

Layout of an index folder (`indexes/<name>/`)::

    CURRENT            the id of the live build (replaced atomically)
    .lock              flock'ed by the one build running in this folder at a time
    <build-id>/        one immutable build: manifest.json, vectors.faiss, utterances.json,
                       embeddings.npy (the embedding cache), route_stats.npz,
                       encoder/<backend>/ (ONNX export, hard-linked from the previous build)

Every file and folder of a build is fsynced, the folder renamed into place and the index
folder fsynced before CURRENT is switched (temp file, fsync, rename, fsync), so after a crash,
a kill or a power loss CURRENT names a complete build. A build deletes only what builds made:
builds (a build-id name holding our manifest) other than the live one and its predecessor,
and its own temp names (.tmp-<id>/, .old-<id>/, .CURRENT.<id>); nothing else in the folder.
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
    check_backend,
    file_sha256,
    load_encoder,
    onnx_dir,
    resolve_model_path,
)
from semroute.errors import CorruptIndexError, IndexNotFoundError, StaleIndexError
from semroute.files import fsync_path, write_synced
from semroute.index.contrast import cached_contrast, contrast_rows, write_contrast
from semroute.index.lexical import LEXICAL_FILE, build_lexical, write_lexical
from semroute.index.manifest import (
    BUILD_ID,
    FORMAT_VERSION,
    EncoderEntry,
    FileEntry,
    Manifest,
    OosEntry,
    RouteEntry,
    current_build,
    is_build,
    read_manifest,
    verify_files,
)
from semroute.index.scoring import build_route_stats
from semroute.index.store import write_route_stats

if TYPE_CHECKING:
    from numpy.typing import NDArray

# From this many vectors `index_type: auto` builds HNSW (M=32, efSearch 128): at 10k it searches
# in ~0.2 ms against ~0.5-0.75 ms for the exact flat index, with 99.98% recall@32
# (benchmarks/results/latency.md); below a few thousand the flat index is faster.
HNSW_MIN_VECTORS = 4_000

# Our temp names, each followed by a build id: a build being written, a superseded build being
# deleted, CURRENT being replaced. Only exact matches are ever removed.
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
POINTER_PREFIX = ".CURRENT."


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
    n_contrast: int = 0  # negatives and out-of-scope examples embedded beside the utterances

    def summary(self) -> str:
        contrast = f" + {self.n_contrast} negatives/out-of-scope examples" \
            if self.n_contrast else ""
        parts = [f"{self.n_vectors} utterances{contrast}, embedded {self.embedded}, "
                 f"reused {self.reused}"]
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
    """Hold the index folder's build lock: builders of one folder run one after the other."""
    if not index_dir.is_dir():
        index_dir.mkdir(parents=True, exist_ok=True)
        fsync_path(index_dir.parent)
    with (index_dir / ".lock").open("a") as f:  # "a": never truncates an existing file
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every folder, deepest first, `root` last."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a folder of immutable files as hard links (no bytes to copy and sync again), or
    as copies where a link is impossible (another filesystem, no permission)."""

    def link_or_copy(s: str, d: str) -> str:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
        return d

    shutil.copytree(src, dst, copy_function=link_or_copy)


def _previous(index_dir: Path) -> tuple[Path | None, Manifest | None, bool]:
    """The live build, its manifest, and whether all its files match their checksums (only
    then are its vectors and encoder export reused)."""
    try:
        build = current_build(index_dir)
    except (IndexNotFoundError, CorruptIndexError):
        return None, None, False
    try:
        manifest = read_manifest(build)
    except (CorruptIndexError, StaleIndexError):
        return build, None, False
    try:
        verify_files(build, manifest, hashes=True)
    except CorruptIndexError:
        return build, manifest, False
    return build, manifest, True


def _cached_vectors(build: Path | None, manifest: Manifest | None,
                    fingerprint: Fingerprint) -> dict[str, NDArray[np.float32]]:
    """text -> vector from the previous (verified) build, if it used the same encoder."""
    if build is None or manifest is None or manifest.fingerprint != fingerprint:
        return {}
    try:
        table = json.loads((build / "utterances.json").read_bytes())
        vecs = np.load(build / "embeddings.npy", allow_pickle=False)
        texts = [row[1] for row in table["rows"]]
        if vecs.shape != (len(texts), fingerprint.dim):
            return {}
        return {**cached_contrast(build), **dict(zip(texts, vecs, strict=True))}
    except (OSError, ValueError, KeyError):
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
    """Load the configured encoder; for ONNX backends export it into the new build folder:
    hard-linked from the previous (verified) build when it came from the same torch weights,
    else copied from the shared export cache (never linked: no inode shared outside the index)."""
    s = routes.settings
    check_backend(s.encoder, s.backend)
    if s.backend == "torch":
        enc = SentenceTransformerEncoder(s.encoder, threads=threads)
        return enc, enc.weights_hash
    if s.backend == "native":  # the engine ships with its package: nothing to export
        native = load_encoder(s.encoder, s.backend, threads=threads)
        return native, native.weights_hash
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
        _link_tree(onnx_dir(previous, s.backend), target)
    else:
        shared = export_cache_dir() / f"{source_hash[:16]}-{s.backend}"
        if not shared.is_dir():
            export_onnx(resolve_model_path(s.encoder), shared, quantize=s.backend == "onnx-int8")
        shutil.copytree(shared, target)
    return load_encoder(s.encoder, s.backend, index_dir=build, threads=threads), source_hash


def build_index(routes: RouteSet | str | Path = "routes", out: str | Path = "indexes/default",
                *, threads: int | None = None, show_progress: bool | None = None,
                log: Callable[[str], None] | None = None) -> BuildReport:
    """Embed every utterance (reusing cached vectors) and write a new index build atomically
    and durably; the previous build stays live until the new one is complete on disk."""
    if not isinstance(routes, RouteSet):
        routes = load_routes(routes)
    index_dir = Path(out)
    threads = threads or min(4, os.cpu_count() or 1)
    show_progress = sys.stderr.isatty() if show_progress is None else show_progress
    say = log or (lambda _msg: None)
    timings: dict[str, float] = {}
    with _build_lock(index_dir):
        t0 = time.perf_counter()
        previous, prev_manifest, intact = _previous(index_dir)
        reusable = previous if intact else None
        build_id = datetime.now(UTC).strftime("b%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        tmp = index_dir / f"{TMP_PREFIX}{build_id}"
        final = index_dir / build_id
        tmp.mkdir()
        made = tmp  # what to remove if the build fails before CURRENT names it
        switched = False
        try:
            encoder, source_hash = _prepare_encoder(routes, tmp, reusable, prev_manifest,
                                                    threads)
            fingerprint = Fingerprint.of(encoder)
            timings["encoder"] = time.perf_counter() - t0

            t1 = time.perf_counter()
            rows = [(i, text) for i, r in enumerate(routes.routes) for text in r.utterances]
            contrast = contrast_rows(routes)  # negatives and out-of-scope examples
            cache = _cached_vectors(reusable, prev_manifest, fingerprint)
            missing = sorted({text for _, text in rows + contrast if text not in cache})
            if missing:
                say(f"embedding {len(missing)} new utterance(s) with {fingerprint.describe()}")
                fresh = encoder.encode(missing, show_progress=show_progress)  # its own batch
                cache.update(zip(missing, fresh, strict=True))
            vectors = np.stack([cache[t] for _, t in rows]).astype(np.float32) if rows else \
                np.zeros((0, fingerprint.dim), dtype=np.float32)
            write_contrast(tmp, contrast, np.stack([cache[t] for _, t in contrast])
                           if contrast else np.zeros((0, fingerprint.dim), np.float32))
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
            write_lexical(tmp / LEXICAL_FILE, build_lexical([t for _, t in rows], labels.tolist(),
                                                            len(routes.routes)))
            table = {"routes": routes.names, "rows": rows}
            (tmp / "utterances.json").write_bytes(json.dumps(table).encode())
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
                n_vectors=len(rows), n_contrast=len(contrast),
                routes={r.name: RouteEntry(hash=r.content_hash(), utterances=len(r.utterances),
                                           file=r.file.name, negatives=len(r.negatives))
                        for r in routes.routes},
                oos=OosEntry.of(routes), files=files)
            (tmp / "manifest.json").write_bytes(manifest.model_dump_json(indent=2).encode())

            _fsync_tree(tmp)  # every byte of the build is on disk ...
            tmp.rename(final)
            made = final
            fsync_path(index_dir)  # ... and so is its name, before CURRENT names it
            pointer = index_dir / f"{POINTER_PREFIX}{build_id}"
            write_synced(pointer, build_id.encode())
            os.replace(pointer, index_dir / "CURRENT")
            switched = True
            fsync_path(index_dir)
            timings["write"] = time.perf_counter() - t2
        except BaseException:
            if not switched:  # nothing refers to the new build: remove it, the old one serves
                shutil.rmtree(made, ignore_errors=True)
                (index_dir / f"{POINTER_PREFIX}{build_id}").unlink(missing_ok=True)
            raise
        _prune(index_dir, keep={build_id, previous.name if previous else ""})

    old = prev_manifest.routes if prev_manifest else {}
    new = {r.name: r.content_hash() for r in routes.routes}
    timings["total"] = time.perf_counter() - t0
    return BuildReport(
        path=index_dir, build_id=build_id, n_vectors=len(rows), embedded=len(missing),
        reused=len({t for _, t in rows + contrast}) - len(missing),
        routes_added=sorted(set(new) - set(old)), routes_removed=sorted(set(old) - set(new)),
        routes_changed=sorted(n for n in set(new) & set(old) if new[n] != old[n].hash),
        encoder=fingerprint.describe(), timings_s=timings, n_contrast=len(contrast))


def _prune(index_dir: Path, keep: set[str]) -> None:
    """Delete what builds left behind, and nothing else: our builds other than `keep` (the live
    one and its predecessor, which a reader may still be loading) and our exact temp names."""
    for p in sorted(index_dir.iterdir()):
        if p.name in keep:
            continue
        if is_build(p):
            trash = index_dir / f"{OLD_PREFIX}{p.name}"
            try:  # atomic: a prune killed half-way leaves an .old- folder, not half a build
                p.rename(trash)
            except OSError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
        elif _is_leftover(p):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _is_leftover(p: Path) -> bool:
    """A temp name of ours left by a killed build: .tmp-<id>/ or .old-<id>/, .CURRENT.<id>."""
    if p.is_symlink():
        return False
    for prefix, folder in ((TMP_PREFIX, True), (OLD_PREFIX, True), (POINTER_PREFIX, False)):
        if p.name.startswith(prefix) and BUILD_ID.fullmatch(p.name[len(prefix):]):
            return p.is_dir() if folder else p.is_file()
    return False
