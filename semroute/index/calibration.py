"""Thresholds fitted on labelled data (`semroute fit`), stored beside the index they were
fitted for (`<index>/calibration.json`) and read by `Router.load`.

Precedence, most specific first: a route file's own `threshold`, the calibrated per-route
threshold, the calibrated router-wide thresholds, then `router:` in models.yaml.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from semroute.errors import CorruptIndexError

CALIBRATION_FILE = "calibration.json"


class Calibration(BaseModel):
    """Fitted thresholds and the evidence behind them."""

    model_config = ConfigDict(extra="forbid")

    score_threshold: float = Field(ge=-1.0, le=1.0)
    margin_threshold: float = Field(ge=0.0, le=2.0)
    per_route: dict[str, float] = Field(default_factory=dict)
    target_misroute: float = Field(ge=0.0, le=1.0)
    expected_coverage: float = Field(ge=0.0, le=1.0)
    expected_misroute: float = Field(ge=0.0, le=1.0)
    build_id: str
    data: str
    rows: int
    created_at: str


def calibration_path(index_dir: str | Path) -> Path:
    return Path(index_dir) / CALIBRATION_FILE


def load_calibration(index_dir: str | Path) -> Calibration | None:
    """The index's calibration, None if it has none; a broken file is an error, not ignored."""
    path = calibration_path(index_dir)
    if not path.exists():
        return None
    try:
        return Calibration.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise CorruptIndexError(f"{path} is not a valid calibration ({exc}); run `semroute fit` "
                                f"again or delete the file") from None


def save_calibration(index_dir: str | Path, calibration: Calibration) -> Path:
    """Write atomically: a temporary file in the same folder, fsync, then rename."""
    path = calibration_path(index_dir)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(calibration.model_dump_json(indent=2).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
