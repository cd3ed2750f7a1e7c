"""Build-time export of a sentence-transformer to ONNX (fp32, or dynamically quantised int8)
for the torch-free `OnnxEncoder`. torch, sentence-transformers and onnx are imported here only,
inside the functions, and only `semroute build` calls this module."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from semroute.encoders.onnx_backend import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    KNOWN_INPUTS,
    MODEL_FILE,
    OUTPUT_NAME,
    TOKENIZER_FILE,
    OnnxEncoder,
    OnnxFiles,
    sha256_file,
)
from semroute.errors import OnnxBackendError

# Opset 17 has LayerNormalization and is read by every onnxruntime since 1.14.
OPSET = 17
DYNAMO_OPSET = 18  # the lowest the dynamo exporter implements (onnxruntime >= 1.16 reads it)
# Mean cosine to sentence-transformers over the probes below, below which an export is refused.
_MIN_PROBE_COSINE = {"onnx": 0.999, "onnx-int8": 0.98}
_PROBES = (
    "hi",
    "How do I locate my card?",
    "I still have not received my new card, I ordered over a week ago.",
    "write a python function that reverses a linked list in place",
    "What is the capital of France, and why did it become the capital?",
    "Translate 'good morning, how are you today?' into German.",
    "My transfer was declined twice today even though my balance is fine, what is going on?",
    "Résumé: naïve café owners ☕ — quarterly numbers 2024/Q3 😀",
)

log = logging.getLogger(__name__)



def export_onnx(st_model_path: Path, out_dir: Path, *, quantize: bool) -> OnnxFiles:
    """Export a local sentence-transformers folder's transformer to ONNX in `out_dir`.

    With `quantize`, weights become int8 (dynamic quantisation, signed per-channel weights:
    fastest and most faithful on this hardware). The export is checked against
    sentence-transformers on a few probe sentences before it replaces `out_dir` atomically.
    """
    st_model_path, out_dir = Path(st_model_path), Path(out_dir)
    backend = "onnx-int8" if quantize else "onnx"
    started = time.perf_counter()
    model = _load_sentence_transformer(st_model_path)
    spec = _pipeline_spec(model, st_model_path)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        model_path = tmp / MODEL_FILE
        fp32_path = tmp / "model.fp32.onnx" if quantize else model_path
        export_info = _torch_export(model, fp32_path, spec["inputs"])
        if quantize:
            export_info["quantization"] = _quantize(fp32_path, model_path)
            fp32_path.unlink()
        _write_tokenizer(model, st_model_path, tmp / TOKENIZER_FILE)
        config: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "backend": backend,
            "model_file": MODEL_FILE,
            "model_sha256": sha256_file(model_path),
            "tokenizer_file": TOKENIZER_FILE,
            "output": OUTPUT_NAME,
            **spec,
            "source": str(st_model_path.resolve()),
            "export": export_info,
        }
        _write_json(tmp / CONFIG_FILE, config)
        config["fidelity"] = _probe_fidelity(model, tmp, backend)
        config["export"]["seconds"] = round(time.perf_counter() - started, 2)
        _write_json(tmp / CONFIG_FILE, config)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return OnnxFiles.read(out_dir)


def _load_sentence_transformer(path: Path) -> Any:
    """Load the model offline, on CPU, without transformers' progress bars."""
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise OnnxBackendError(f"{path} is not a sentence-transformers model folder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise OnnxBackendError(
            "exporting to ONNX needs torch and sentence-transformers (the build extra): "
            "pip install torch==2.13.0 sentence-transformers onnx") from exc
    with contextlib.suppress(ImportError, AttributeError):  # transformers without the switch
        importlib.import_module("transformers.utils.logging").disable_progress_bar()
    try:
        return SentenceTransformer(str(path), device="cpu")
    except OSError as exc:
        raise OnnxBackendError(f"cannot load sentence-transformers model {path}: {exc}") from exc


def _pipeline_spec(model: Any, path: Path) -> dict[str, Any]:
    """What the ONNX side must reproduce: Transformer -> mean Pooling -> (Normalize)."""
    modules = list(model)
    kinds = [type(m).__name__ for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise OnnxBackendError(f"{path}: only Transformer -> Pooling -> Normalize pipelines can "
                               f"be exported, this one is {' -> '.join(kinds)}")
    pooling = modules[1]
    mode = getattr(pooling, "pooling_mode", None)
    if not isinstance(mode, str):
        mode = pooling.get_pooling_mode_str()
    if mode != "mean":
        raise OnnxBackendError(f"{path}: pooling '{mode}' is not supported (only mean)")
    if getattr(model, "default_prompt_name", None):
        raise OnnxBackendError(f"{path}: models with a default prompt are not supported")
    transformer = modules[0]
    names = list(getattr(transformer.tokenizer, "model_input_names", KNOWN_INPUTS))
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in names
                                                else [])
    dim_of = getattr(model, "get_embedding_dimension", None) or (
        model.get_sentence_embedding_dimension)
    return {
        "inputs": inputs,
        "dim": int(dim_of()),
        "max_seq_length": int(model.max_seq_length),
        "lowercase": bool(getattr(transformer, "do_lower_case", False)),
        "pooling": "mean",
        # Rows are always L2-normalised: the Encoder contract, whatever the source pipeline.
        "normalize": True,
    }


def _torch_export(model: Any, dst: Path, input_names: list[str]) -> dict[str, Any]:
    """Trace the transformer (token embeddings out) to ONNX with dynamic batch and length.

    Eager attention traces to the plain MatMul/Softmax pattern (SDPA adds IsNaN/Where guards);
    the legacy TorchScript exporter needs no extra package and takes ~3 s, the dynamo exporter
    (fallback) needs onnxscript and takes ~15 s.
    """
    import torch

    hf = model[0].auto_model
    if hasattr(hf, "set_attn_implementation"):
        hf.set_attn_implementation("eager")
    else:  # pragma: no cover - older transformers
        hf.config._attn_implementation = "eager"
    hf.eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner: Any, names: list[str]) -> None:
            super().__init__()
            self.inner = inner
            self.names = names

        def forward(self, *inputs: Any) -> Any:
            return self.inner(**dict(zip(self.names, inputs, strict=True))).last_hidden_state

    wrapper = TokenEmbeddings(hf, input_names).eval()
    # A padded dummy batch, so nothing specialises on an all-ones mask.
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3], dtype=torch.long)
    samples = {"input_ids": torch.full((2, 8), 1000, dtype=torch.long) * mask,
               "attention_mask": mask,
               "token_type_ids": torch.zeros((2, 8), dtype=torch.long)}
    args = tuple(samples[n] for n in input_names)
    common: dict[str, Any] = {"input_names": input_names, "output_names": [OUTPUT_NAME]}
    info: dict[str, Any] = {"torch": torch.__version__, "opset": OPSET,
                            "attention": "eager", "quantization": None}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapper, args, str(dst), dynamo=False, do_constant_folding=True,
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*input_names, OUTPUT_NAME]},
                opset_version=OPSET, **common)
            info["exporter"] = "torchscript"
        except Exception as legacy_exc:  # the legacy exporter may be gone in a future torch
            log.info("legacy ONNX export failed (%s); trying the dynamo exporter", legacy_exc)
            if importlib.util.find_spec("onnxscript") is None:
                raise OnnxBackendError(
                    f"torch {torch.__version__}: the legacy ONNX exporter failed "
                    f"({legacy_exc}) and the dynamo exporter needs onnxscript: "
                    f"pip install onnxscript") from legacy_exc
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            torch.onnx.export(wrapper, args, str(dst), dynamo=True, external_data=False,
                              opset_version=DYNAMO_OPSET,
                              # one entry: the *inputs parameter, a tuple of tensors
                              dynamic_shapes=(({0: batch, 1: seq},) * len(input_names),),
                              **common)
            info["exporter"] = "dynamo"
            info["opset"] = DYNAMO_OPSET
    return info


def _quantize(src: Path, dst: Path) -> dict[str, Any]:
    """Dynamic int8: signed per-channel weights, uint8 activations quantised per call.

    Measured (CPU time per query, AVX-512 VNNI; mean cosine to torch): QInt8 per-channel
    1.8 ms, 0.993; QUInt8 per-channel 2.7 ms, 0.993; QUInt8 per-tensor 2.7 ms, 0.984; QInt8
    per-tensor 2.1 ms, 0.968. Without VNNI, u8s8 products can saturate: check the probes.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings: dict[str, Any] = {"method": "dynamic", "weight_type": "QInt8",
                                "per_channel": True, "reduce_range": False}
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantizer warns about pre-processing via the root logger
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=False)
    finally:
        quiet.setLevel(level)
    return settings


def _write_tokenizer(model: Any, st_model_path: Path, dst: Path) -> None:
    """Copy the model's tokenizer.json, or save the fast tokenizer sentence-transformers uses."""
    src = st_model_path / TOKENIZER_FILE
    if src.is_file():
        shutil.copyfile(src, dst)
        return
    backend = getattr(model[0].tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise OnnxBackendError(f"{st_model_path}: no tokenizer.json and no fast tokenizer")
    backend.save(str(dst))


def _probe_fidelity(model: Any, files_dir: Path, backend: str) -> dict[str, Any]:
    """Cosine between this export and sentence-transformers on the probes; refuse a bad one."""
    reference = model.encode(list(_PROBES), normalize_embeddings=True, convert_to_numpy=True)
    encoder = OnnxEncoder.from_dir(files_dir, name="probe", threads=1)
    batched = encoder.encode(_PROBES)
    single = np.stack([encoder.encode([t])[0] for t in _PROBES])
    cos = np.concatenate([(batched * reference).sum(axis=1), (single * reference).sum(axis=1)])
    result = {"probes": len(_PROBES), "mean_cosine": round(float(cos.mean()), 6),
              "min_cosine": round(float(cos.min()), 6)}
    if result["mean_cosine"] < _MIN_PROBE_COSINE[backend]:
        raise OnnxBackendError(f"the {backend} export does not reproduce sentence-transformers "
                               f"(mean cosine {result['mean_cosine']:.4f} on {len(_PROBES)} "
                               f"probes); not installing it")
    return result


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished folder into place; an older export is swapped out, then deleted."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


