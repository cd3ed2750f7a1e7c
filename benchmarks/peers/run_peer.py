"""Run peer routers out of process, so their imports and pins never touch our interpreter.

    from benchmarks.peers.run_peer import run_semantic_router
    out = run_semantic_router({"encoder_path": ..., "routes": {...}, "queries": [...],
                               "fit": None, "mode": "latency", "warmup": 20})

The interpreter is, in order: the `python` argument, $SEMROUTE_PEER_PYTHON,
/work/venv-peer/bin/python if it exists, else sys.executable. See README.md beside this file
for the one-command install of the peer venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEMANTIC_ROUTER_SCRIPT = HERE / "semantic_router_peer.py"
DEFAULT_PEER_PYTHON = Path("/work/venv-peer/bin/python")


class PeerError(RuntimeError):
    """The peer process failed; the message carries the tail of its stderr."""


def peer_python(python: str | None = None) -> str:
    """The interpreter that runs the peer (see module docstring for the order)."""
    if python:
        return python
    env = os.environ.get("SEMROUTE_PEER_PYTHON")
    if env:
        return env
    if DEFAULT_PEER_PYTHON.exists():
        return str(DEFAULT_PEER_PYTHON)
    return sys.executable


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run_script(script: Path, spec: dict, python: str | None, timeout: float) -> dict:
    exe = peer_python(python)
    with tempfile.TemporaryDirectory(prefix="semroute-peer-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        out_path = Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
        )
        # the peer's own venv must win over anything we run under (e.g. our src on PYTHONPATH)
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        try:
            proc = subprocess.run(
                [exe, str(script), str(spec_path), str(out_path)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            raise PeerError(
                f"{script.name} under {exe} timed out after {timeout:.0f} s\n{_tail(err)}"
            ) from None
        except OSError as e:
            raise PeerError(f"cannot start {exe}: {e}") from None
        if proc.returncode != 0 or not out_path.exists():
            raise PeerError(
                f"{script.name} under {exe} exited {proc.returncode}\n"
                f"{_tail(proc.stderr) or _tail(proc.stdout)}"
            )
        out = json.loads(out_path.read_text(encoding="utf-8"))
    out["python"] = exe
    return out


def run_semantic_router(spec: dict, python: str | None = None, timeout: float = 1800) -> dict:
    """Run semantic-router on `spec` in a subprocess and return its OUT dict.

    spec: {"encoder_path", "routes": {name: [utterances]}, "queries": [...],
           "fit": {"texts": [...], "labels": [name | None]} | None,
           "mode": "accuracy" | "latency", "warmup": N, optional "threads", ...}
    Returns {"version", "predictions", "confidences", "per_query_s", "fit_s", "build_s",
             "load_s", "import_s", "fit_report", "settings", "notes", "python",
             "top_routes", "top_confidences", "encoder_s"} (the last three may be None);
    the fields are described in semantic_router_peer.py.
    Raises PeerError with the peer's stderr tail on failure.
    """
    missing = [k for k in ("encoder_path", "routes", "queries") if k not in spec]
    if missing:
        raise ValueError(f"peer spec is missing {missing}")
    return _run_script(SEMANTIC_ROUTER_SCRIPT, spec, python, timeout)
