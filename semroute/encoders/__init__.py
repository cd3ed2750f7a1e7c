"""Text encoders: the `Encoder` protocol, its torch and ONNX backends, the query cache.

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
from semroute.encoders.query_cache import QueryCache

__all__ = [
    "ONNX_BACKENDS",
    "Encoder",
    "Fingerprint",
    "QueryCache",
    "SentenceTransformerEncoder",
    "file_sha256",
    "load_encoder",
    "onnx_dir",
    "resolve_model_path",
    "weights_files",
]
