"""Thresholds fitted on labelled data (`semroute fit`), stored beside the index they were
fitted for (`<index>/calibration.json`) and read by `Router.load`.

Precedence, most specific first: a route file's own `threshold`, the calibrated per-route
threshold, the calibrated router-wide thresholds, then `router:` in models.yaml.

A calibration belongs to one build: a rebuild moves every route's score offset, so thresholds
fitted on an earlier build are not applied (unless asked to) until `semroute fit` runs again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from semroute.errors import CorruptIndexError
from semroute.files import write_atomic

CALIBRATION_FILE = "calibration.json"
# What to do with a calibration fitted on another build: ignore it (keep the label-free
# defaults) or apply it anyway. Either way a CalibrationWarning says so.
StalePolicy = Literal["ignore", "apply"]
CalibrationStatus = Literal["none", "current", "stale-ignored", "stale-applied"]


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
    """Write atomically and durably (`files.write_atomic`)."""
    return write_atomic(calibration_path(index_dir),
                        calibration.model_dump_json(indent=2).encode())


def calibration_for(index_dir: str | Path, build_id: str, *, stale: StalePolicy = "ignore"
                    ) -> tuple[Calibration | None, CalibrationStatus, str | None]:
    """The calibration to apply to build `build_id`, its status, and a warning to emit (None
    when there is nothing to say): a stale one is dropped unless `stale="apply"`."""
    if stale not in get_args(StalePolicy):
        raise ValueError(f"stale_calibration must be one of {', '.join(get_args(StalePolicy))}, "
                         f"got {stale!r}")
    calibration = load_calibration(index_dir)
    if calibration is None:
        return None, "none", None
    if calibration.build_id == build_id:
        return calibration, "current", None
    what = (f"{calibration_path(index_dir)} was fitted on build {calibration.build_id}, the index "
            f"is now build {build_id}, whose score offsets differ")
    if stale == "apply":
        return calibration, "stale-applied", (
            f"{what}; its thresholds are applied anyway (stale_calibration='apply'); run "
            f"`semroute fit` again to recalibrate")
    return None, "stale-ignored", (
        f"{what}; its thresholds are ignored and the route files' and models.yaml's are used; "
        f"run `semroute fit` again to recalibrate")
