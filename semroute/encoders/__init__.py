"""Text encoders: the `Encoder` protocol, its torch, ONNX and native backends, the packaged
models known by name, the query cache.

The ONNX backend and exporter import onnxruntime/onnx, so they are not imported here."""

from __future__ import annotations

from semroute.encoders.base import (
    ONNX_BACKENDS,
    Encoder,
    Fingerprint,
    SentenceTransformerEncoder,
    file_sha256,
    load_encoder,
    onnx_dir,
    resolve_model_path,
    weights_files,
)
from semroute.encoders.native_e5 import NativeE5Encoder
from semroute.encoders.packaged import (
    DEFAULT_MARGIN,
    PACKAGED_MODELS,
    PackagedModel,
    check_backend,
    default_margin,
    packaged_model,
    standalone_backend,
)
from semroute.encoders.query_cache import QueryCache

__all__ = [
    "DEFAULT_MARGIN",
    "ONNX_BACKENDS",
    "PACKAGED_MODELS",
    "Encoder",
    "Fingerprint",
    "NativeE5Encoder",
    "PackagedModel",
    "QueryCache",
    "SentenceTransformerEncoder",
    "check_backend",
    "default_margin",
    "file_sha256",
    "load_encoder",
    "onnx_dir",
    "packaged_model",
    "resolve_model_path",
    "standalone_backend",
    "weights_files",
]
