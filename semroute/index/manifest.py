"""An index build's manifest: what it was built from (encoder fingerprint, route hashes,
settings, file checksums), and the checks made on load against it."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from semroute.config import RouteSet
from semroute.encoders import Fingerprint, file_sha256
from semroute.errors import CorruptIndexError, IndexNotFoundError, StaleIndexError

FORMAT_VERSION = 1
REBUILD_HINT = "run `semroute build` to rebuild it"
# A build's folder name (and CURRENT's content): "b", UTC time to the second, 6 hex digits.
BUILD_ID = re.compile(r"b\d{8}T\d{6}-[0-9a-f]{6}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Model):
    sha256: str
    size: int


class RouteEntry(_Model):
    hash: str  # Route.content_hash: name, utterances and negatives
    utterances: int
    file: str
    negatives: int = 0


class OosEntry(_Model):
    """The out-of-scope examples a build embedded: their file, hash and count."""

    file: str
    hash: str
    examples: int

    @classmethod
    def of(cls, routes: RouteSet) -> OosEntry | None:
        digest = routes.oos_hash()
        if digest is None or routes.oos_file is None:
            return None
        return cls(file=routes.oos_file.name, hash=digest, examples=len(routes.oos_examples))


class EncoderEntry(_Model):
    name: str
    backend: str
    dim: int
    weights_hash: str
    source_weights_hash: str


class Manifest(_Model):
    """What an index was built from; checked on every load."""

    format: int
    semroute_version: str
    build_id: str
    created_at: str
    encoder: EncoderEntry
    settings: dict[str, Any]
    index_type: str
    n_vectors: int
    routes: dict[str, RouteEntry]
    files: dict[str, FileEntry]
    n_contrast: int = 0  # negatives + out-of-scope examples (contrast.json, contrast.npy)
    oos: OosEntry | None = None

    @property
    def fingerprint(self) -> Fingerprint:
        e = self.encoder
        return Fingerprint(e.name, e.backend, e.dim, e.weights_hash)



def current_build(index_dir: Path) -> Path:
    """The folder of the live build, or IndexNotFoundError."""
    pointer = index_dir / "CURRENT"
    try:
        build_id = pointer.read_text().strip()
    except FileNotFoundError:
        raise IndexNotFoundError(f"no index at {index_dir}: {REBUILD_HINT} "
                                 f"(or pass --index DIR)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"{pointer} is unreadable ({exc}): {REBUILD_HINT}") from None
    if not BUILD_ID.fullmatch(build_id):  # never a path: CURRENT cannot point outside
        raise CorruptIndexError(f"{pointer} does not name a build ({build_id[:40]!r}): "
                                f"{REBUILD_HINT}")
    build = index_dir / build_id
    if not build.is_dir():
        raise CorruptIndexError(f"{pointer} names build '{build_id}', which is missing: "
                                f"{REBUILD_HINT}")
    return build


def is_build(path: Path) -> bool:
    """Whether a folder is a build some semroute wrote: a build-id name and a manifest.json
    inside naming that id (any format version). Only such folders are ever pruned."""
    if path.is_symlink() or not path.is_dir() or not BUILD_ID.fullmatch(path.name):
        return False
    try:
        data = json.loads((path / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and data.get("build_id") == path.name
            and isinstance(data.get("format"), int) and isinstance(data.get("files"), dict))


def read_manifest(build: Path) -> Manifest:
    """A build's manifest; CorruptIndexError if missing or invalid, StaleIndexError if it is
    another format version."""
    path = build / "manifest.json"
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise CorruptIndexError(f"{path} is missing: {REBUILD_HINT}") from None
    except OSError as exc:
        raise CorruptIndexError(f"{path} is unreadable ({exc}): {REBUILD_HINT}") from None
    except ValidationError as exc:
        fmt = None
        with contextlib.suppress(Exception):
            fmt = json.loads(path.read_bytes()).get("format")
        if fmt is not None and fmt != FORMAT_VERSION:
            raise StaleIndexError(f"{path} has index format {fmt}, this semroute reads "
                                  f"{FORMAT_VERSION}: {REBUILD_HINT}") from None
        raise CorruptIndexError(f"{path} is not a valid manifest ({exc.error_count()} errors): "
                                f"{REBUILD_HINT}") from None


def verify_files(build: Path, manifest: Manifest, *, hashes: bool) -> None:
    """CorruptIndexError unless every file the manifest lists is there, with its size (and,
    with `hashes`, its sha256)."""
    for rel, entry in manifest.files.items():
        p = build / rel
        try:
            size = p.stat().st_size if p.is_file() else None
            if size is None:
                raise CorruptIndexError(f"{p} is missing: {REBUILD_HINT}")
            if size != entry.size:
                raise CorruptIndexError(f"{p} has {size} bytes, the manifest says "
                                        f"{entry.size}: {REBUILD_HINT}")
            if hashes and file_sha256(p) != entry.sha256:
                raise CorruptIndexError(f"{p} does not match its checksum: {REBUILD_HINT}")
        except OSError as exc:  # e.g. removed while being read
            raise CorruptIndexError(f"{p} is unreadable ({exc}): {REBUILD_HINT}") from None


def check_fresh(manifest: Manifest, routes: RouteSet, where: Path) -> None:
    """StaleIndexError when the route files or index settings changed since the build."""
    current = {r.name: r.content_hash() for r in routes.routes}
    built = {name: e.hash for name, e in manifest.routes.items()}
    added = sorted(set(current) - set(built))
    removed = sorted(set(built) - set(current))
    changed = sorted(n for n in set(current) & set(built) if current[n] != built[n])
    problems = []
    if added:
        problems.append(f"routes added since the build: {', '.join(added)}")
    if removed:
        problems.append(f"routes removed since the build: {', '.join(removed)}")
    if changed:
        problems.append(f"routes whose utterances or negatives changed: {', '.join(changed)}")
    built_oos = manifest.oos.hash if manifest.oos else None
    if built_oos != routes.oos_hash():
        problems.append("the out-of-scope examples (router.oos_examples) changed")
    settings = routes.settings.index_fields()
    if manifest.settings != settings:
        problems.append(f"index settings changed: built with {manifest.settings}, "
                        f"now {settings}")
    if problems:
        raise StaleIndexError(f"the index at {where} is out of date with {routes.directory} ("
                              + "; ".join(problems) + f"): {REBUILD_HINT}")


