"""The utterance index: building it (build.py), loading and checking it (store.py,
manifest.py), the scoring rule and its build-time statistics (scoring.py), and fitted
thresholds (calibration.py)."""

from __future__ import annotations

from semroute.index.build import BuildReport, build_index, export_cache_dir
from semroute.index.calibration import (
    Calibration,
    calibration_path,
    load_calibration,
    save_calibration,
)
from semroute.index.contrast import (
    ContrastSet,
    Penalty,
    apply_contrast,
    contrast_sims,
    nearest_oos,
)
from semroute.index.lexical import LexicalIndex, blend_lexical, build_lexical
from semroute.index.manifest import (
    REBUILD_HINT,
    Manifest,
    check_fresh,
    current_build,
    read_manifest,
)
from semroute.index.scoring import (
    RouteStats,
    Scored,
    build_route_stats,
    score_query,
)
from semroute.index.store import RouteIndex

__all__ = [
    "REBUILD_HINT",
    "BuildReport",
    "Calibration",
    "ContrastSet",
    "LexicalIndex",
    "Manifest",
    "Penalty",
    "RouteIndex",
    "RouteStats",
    "Scored",
    "apply_contrast",
    "blend_lexical",
    "build_index",
    "build_lexical",
    "build_route_stats",
    "calibration_path",
    "check_fresh",
    "contrast_sims",
    "current_build",
    "export_cache_dir",
    "load_calibration",
    "nearest_oos",
    "read_manifest",
    "save_calibration",
    "score_query",
]
