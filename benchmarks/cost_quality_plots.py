"""Cost-quality curves of benchmarks/cost_quality.py as PNGs (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_two_model(name: str, data: dict[str, Any], path: Path) -> Path:
    """Quality against strong-model calls (%) for each system, with random, weak, strong."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    qw, qs = data["model_quality"][data["weak"]], data["model_quality"][data["strong"]]
    for label, sysd in data["systems"].items():
        c = sysd["curve_seed0"]
        a = sysd["apgr"]["mean"]
        ax.plot([100 * x for x in c["cost"]], c["quality"], marker=".",
                label=f"{label} (APGR {a:.3f})")
    ax.plot([0, 100], [qw, qs], "k:", label="random (APGR 0.500)")
    ax.axhline(qw, color="grey", ls="--", lw=0.8, label=f"{data['weak']} (weak)")
    ax.axhline(qs, color="red", ls="--", lw=0.8, label=f"{data['strong']} (strong)")
    ax.set_xlabel("strong model calls (%)")
    ax.set_ylabel("quality")
    ax.set_title(f"{name}: 5-fold CV, fold seed 0")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_arena(data: dict[str, Any], path: Path) -> Path:
    """Mean cost per query against quality: the learned router's frontier, each model, oracle."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    f = data["frontier_seed0"]
    ax.plot([1e6 * c for c in f["cost"]], f["quality"], marker=".", label="learned router")
    for m in data["models"]:
        ax.scatter([1e6 * data["model_cost"][m]], [data["model_quality"][m]], s=50, label=m)
    ax.scatter([1e6 * data["oracle_cost"]], [data["oracle_quality"]], marker="*", s=120,
               label="oracle")
    ax.set_xlabel("mean cost per query (USD per million queries)")
    ax.set_ylabel("quality (mean score)")
    ax.set_title("routerarena (809 queries): 5-fold CV, fold seed 0")
    ax.legend(fontsize=8)
    return _save(fig, path)
