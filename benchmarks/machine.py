"""The facts every benchmark result states: the machine it ran on and the package versions."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS and Python version of this machine."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gib": ram_gib(),
            "os": platform.platform(), "python": platform.python_version()}


def versions(dists: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = None
    return out


def save_results(results: dict[str, Any], markdown: str, out: Path,
                 name: str) -> tuple[Path, Path]:
    """Write `<name>.md` and `<name>.json` under `out`, each atomically (temp file, rename),
    so an interrupted run never leaves half a results file."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    paths = out / f"{name}.md", out / f"{name}.json"
    texts = markdown, json.dumps(results, indent=1, default=str) + "\n"
    for path, text in zip(paths, texts, strict=True):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return paths
