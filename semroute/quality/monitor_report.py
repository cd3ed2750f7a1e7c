"""`semroute monitor`: the report assembled from traces and the outcomes store
(`build_report`), its JSON form, and the report folder written whole (`write_monitor`:
Markdown, PNG charts and `monitor.json` built in a temporary folder, then swapped in).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from semroute.errors import DataError
from semroute.files import fsync_path, write_synced
from semroute.quality.monitor_quality import (
    MIN_FLAG_N,
    QualityFlag,
    QualityStat,
    below,
    feedback_quality,
    gate_quality,
    shadow_quality,
)
from semroute.quality.monitor_sources import StoreData, TraceFile, Window, iso, merge
from semroute.quality.monitoring import (
    Bands,
    Drift,
    RequestRow,
    Savings,
    Traffic,
    bands,
    bucket_edges,
    drift,
    method_shares,
    methods_by_bucket,
    most_expensive,
    savings,
    traffic_by,
)

REPORT_FILE = "report.md"
JSON_FILE = "monitor.json"


@dataclass(frozen=True)
class MonitorSettings:
    """How the report cuts time and judges quality."""

    buckets: int | None = 12
    bucket_seconds: float | None = None  # wins over `buckets`
    quality_threshold: float = 0.5
    min_n: int = MIN_FLAG_N
    baseline: str | None = None  # a catalogue key; None: the shadow reference, else dearest
    reference: str | None = None  # the configured shadow reference, if any


@dataclass
class MonitorReport:
    """Everything the Markdown, the charts and `--json` show."""

    generated: float
    start: float
    end: float
    window: Window
    traces: list[TraceFile]
    store: StoreData | None
    rows: list[RequestRow]
    by_route: list[Traffic]
    by_model: list[Traffic]
    methods: dict[str, float]
    edges: list[float]
    method_buckets: list[Counter[str]]
    bands: list[Bands]
    drift: Drift
    shadow: list[QualityStat]
    feedback: list[QualityStat]
    gates: list[QualityStat]
    orphan_feedback: int
    flags: list[QualityFlag]
    savings: Savings
    baseline_reason: str
    held: dict[str, float]
    settings: MonitorSettings
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> list[QualityFlag]:
        """Routes whose whole interval is below the quality threshold."""
        return [f for f in self.flags if f.confirmed]

    @property
    def shadow_cost(self) -> float:
        """What the shadow evaluations in the window cost (reference and judge calls)."""
        return sum(v.cost_usd or 0.0 for v in (self.store.shadow if self.store else []))

    @property
    def sources(self) -> dict[str, int]:
        return dict(Counter(r.source for r in self.rows))

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (`monitor.json`, `--json`)."""
        s = self.store
        return {
            "generated": iso(self.generated), "start": iso(self.start), "end": iso(self.end),
            "since": None if self.window.since is None else iso(self.window.since),
            "until": None if self.window.until is None else iso(self.window.until),
            "traces": [{**asdict(t), "kinds": dict(t.kinds)} for t in self.traces],
            "store": None if s is None else {
                "path": s.path, "found": s.found, "requests": len(s.requests),
                "feedback": len(s.feedback), "shadow": len(s.shadow),
                "gate_records": len(s.records)},
            "requests": len(self.rows), "sources": self.sources,
            "by_route": [asdict(t) for t in self.by_route],
            "by_model": [asdict(t) for t in self.by_model],
            "methods": self.methods,
            "buckets": [{"start": iso(self.edges[i]), "end": iso(self.edges[i + 1]),
                         "methods": dict(c), **({"margin": b.margin, "score": b.score,
                                                 "scored": b.n})}
                        for i, (c, b) in enumerate(zip(self.method_buckets, self.bands,
                                                       strict=True))],
            "drift": asdict(self.drift),
            "quality": {"shadow": [asdict(q) for q in self.shadow],
                        "feedback": [asdict(q) for q in self.feedback],
                        "gates": [asdict(q) for q in self.gates],
                        "feedback_without_request": self.orphan_feedback,
                        "threshold": self.settings.quality_threshold,
                        "min_n": self.settings.min_n,
                        "below_threshold": [{**asdict(f.stat), "flagged": f.confirmed}
                                            for f in self.flags]},
            "savings": {**asdict(self.savings), "saved_usd": self.savings.saved_usd,
                        "saved_share": self.savings.saved_share,
                        "baseline_reason": self.baseline_reason, "quality_held": self.held,
                        "shadow_cost_usd": self.shadow_cost},
            "notes": self.notes,
        }


def choose_baseline(prices: Mapping[str, tuple[float, float]], settings: MonitorSettings,
                    shadow_refs: Sequence[str]) -> tuple[str | None, str]:
    """The baseline model and why: `--baseline`, else the shadow reference (configured, else
    the one most verdicts used) when the catalogue prices it, else the dearest by output."""
    if settings.baseline is not None:
        if settings.baseline not in prices:
            raise DataError(f"--baseline {settings.baseline!r} is not a key of the model "
                            f"catalogue (models.yaml); known keys: {', '.join(sorted(prices))}")
        return settings.baseline, "--baseline"
    refs = [settings.reference] if settings.reference else []
    refs += [k for k, _ in Counter(shadow_refs).most_common()]
    for ref in refs:
        if ref in prices:
            return ref, "the shadow reference model"
    key = most_expensive(prices)
    return key, ("the catalogue's most expensive model by output price" if key else
                 "no model catalogue: savings not computed")


def build_report(traced: Sequence[RequestRow], traces: list[TraceFile],
                 store: StoreData | None, prices: Mapping[str, tuple[float, float]],
                 window: Window, settings: MonitorSettings,
                 now: float | None = None) -> MonitorReport:
    """Assemble every section from parsed rows."""
    rows = merge(traced, store.requests if store else ())
    if not rows and not (store and (store.feedback or store.shadow)):
        had = [t.path for t in traces if t.found] + ([store.path] if store and store.found
                                                      else [])
        raise DataError("nothing to report: " + (
            f"no requests in the window in {', '.join(had)}" if had else
            "no trace file and no outcomes store found (pass --trace FILE and/or --store PATH"
            " or set router.trace_path / router.outcomes.path)"))
    now = time.time() if now is None else now
    stamps = [r.ts for r in rows] or [v.ts for v in (store.shadow if store else [])] or [now]
    start = window.since if window.since is not None else min(stamps)
    end = window.until if window.until is not None else max(stamps) + 1e-6
    edges = bucket_edges(start, end, count=settings.buckets, width=settings.bucket_seconds)
    served = {r.request_id: (r.route, r.model) for r in rows if r.request_id}
    if store is not None:
        served = {**store.served, **served}
    verdicts = store.shadow if store else []
    fb, orphans = feedback_quality(store.feedback if store else [], served)
    sh = shadow_quality(verdicts)
    baseline, why = choose_baseline(prices, settings, [v.reference for v in verdicts])
    notes = [f"{t.path}: not found" for t in traces if not t.found]
    if store is not None and not store.found:
        notes.append(f"outcomes store {store.path}: not found (no feedback, shadow or "
                     f"journal figures)")
    if not traces:
        notes.append("no trace file given: traffic comes from the store's journal only "
                     "(no tokens, so no savings figure)")
    return MonitorReport(
        generated=now, start=start, end=end, window=window, traces=traces, store=store,
        rows=rows, by_route=traffic_by(rows, lambda r: r.route),
        by_model=traffic_by(rows, lambda r: r.model), methods=method_shares(rows),
        edges=edges, method_buckets=methods_by_bucket(rows, edges), bands=bands(rows, edges),
        drift=drift(rows, start, end), shadow=sh, feedback=fb,
        gates=gate_quality(store.records if store else []), orphan_feedback=orphans,
        flags=below([q for q in (*sh, *fb) if q.model != "*"], settings.quality_threshold,
                    settings.min_n),
        savings=savings(rows, prices, baseline), baseline_reason=why,
        held={q.route: q.held for q in sh if q.model == "*" and q.held is not None},
        settings=settings, notes=notes)


def is_report_folder(path: Path) -> bool:
    """A folder this verb wrote (it holds `monitor.json` and `report.md`)."""
    return (path / JSON_FILE).is_file() and (path / REPORT_FILE).is_file()


def write_monitor(report: MonitorReport, out: str | Path) -> Path:
    """Write the report folder whole: built in `.<name>.tmp-<pid>` beside it, then renamed
    into place. An existing folder is replaced only if it is an earlier monitor report
    (moved aside, the new one renamed in, the old one deleted); anything else is refused."""
    from semroute.quality.monitor_charts import write_charts
    from semroute.quality.monitor_markdown import markdown

    dest = Path(out)
    if dest.exists() and not (dest.is_dir() and (is_report_folder(dest)
                                                 or not any(dest.iterdir()))):
        raise DataError(f"{dest} exists and is not a monitor report folder: give another "
                        f"--out, or move it aside")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        charts = write_charts(report, tmp)
        write_synced(tmp / REPORT_FILE, markdown(report, charts).encode())
        write_synced(tmp / JSON_FILE, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
        fsync_path(tmp)
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        fsync_path(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not dest.exists():
            os.replace(old, dest)  # put the earlier report back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dest
