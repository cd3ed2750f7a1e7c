"""`semroute fit` when live traffic has another out-of-scope share than validation: the
index misroute rate on test at several live shares, for thresholds fitted without and with
`--oos-share` reweighting (told the live share), and told the share with `--cross-fit 5`
(`--folds 0` skips that column), 10 utterances per route.

    python -m benchmarks.fit_shift                    # the four sets, target 3% and 10%
    python -m benchmarks.fit_shift --sets banking77_oos --targets 0.03
    python -m benchmarks.fit_shift --sets banking77_oos --train-oos --name fit_shift_train_oos

Sets: banking77_oos (its validation split holds `oos` rows: 1/3 of it; test 1/2), and
banking77, hwu64 and snips mixed with another dataset's queries as off-topic `oos` rows
(validation: that dataset's validation rows, a quarter of the mixed set; test: its test
rows). A share s on test is exact, not sampled: test rows are reweighted so `oos` rows make
up s of the weight (`semroute.quality.misroute_at_share`). Results: a table on stdout,
`benchmarks/results/fit_shift.md` / `.json`.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.accuracy import route_all, write_route_set  # noqa: E402
from benchmarks.datasets import DATA_ROOT, Dataset, load_dataset  # noqa: E402
from benchmarks.machine import machine, save_results  # noqa: E402
from semroute.quality.evaluation import OOS, LabelledQuery, index_route  # noqa: E402

WORK = REPO / "benchmarks" / ".work" / "fit_shift"
RESULTS = REPO / "benchmarks" / "results"
SETS = {"banking77_oos": None, "banking77": "hwu64", "hwu64": "banking77", "snips": "banking77"}
SHARES = (0.0, 0.05, 0.1, 0.2, 0.4)
VALID_OOS = 0.25  # share of oos rows in a synthetic set's validation data


def mixed(ds: Dataset, other: Dataset | None) -> tuple[list[LabelledQuery],
                                                      list[LabelledQuery]]:
    """(validation, test) rows: the dataset's own, plus `other`'s queries as `oos`."""
    if other is None:
        return ds.valid, ds.test
    rng = random.Random(0)
    extra_valid = [LabelledQuery(q.text, OOS, "ood_oos") for q in other.valid]
    rng.shuffle(extra_valid)
    n = round(len(ds.valid) * VALID_OOS / (1 - VALID_OOS))
    return (ds.valid + extra_valid[:n],
            ds.test + [LabelledQuery(q.text, OOS, "ood_oos") for q in other.test])


def train_oos(name: str) -> list[LabelledQuery]:
    """The dataset's train rows labelled `oos` (banking77_oos: calibration only, never
    utterances; the data README says so)."""
    from semroute.quality import load_labelled

    path = DATA_ROOT / name / "train.csv"
    return [q for q in load_labelled(path) if q.label == OOS] if path.exists() else []


def run_set(name: str, other_name: str | None, targets: list[float], backend: str,
            k: int, say: Any, with_train_oos: bool = False,
            min_route_rows: int = 30, folds: int = 5) -> list[dict[str, Any]]:
    import semroute
    from semroute.quality import (
        fit_cross_fitted,
        fit_thresholds,
        misroute_at_share,
        oos_share_weights,
    )

    ds = load_dataset(name, DATA_ROOT)
    other = load_dataset(other_name, DATA_ROOT) if other_name else None
    valid, test = mixed(ds, other)
    if with_train_oos:
        valid = valid + train_oos(name)
    base = WORK / (name + (f"+{other_name}" if other_name else "")) / backend
    write_route_set(base / "routes", ds, ds.utterances(k, 0), backend)
    (base / "index" / "calibration.json").unlink(missing_ok=True)
    semroute.build_index(base / "routes", base / "index", threads=1, show_progress=False)
    router = semroute.load_router(base / "routes", base / "index", threads=1)
    t0 = time.perf_counter()
    vd = route_all(router, [q.text for q in valid], 512)
    td = route_all(router, [q.text for q in test], 512)
    say(f"{name}: routed {len(valid)} validation and {len(test)} test rows in "
        f"{time.perf_counter() - t0:.1f}s")
    names = ds.routes
    valid_share = sum(q.label == OOS for q in valid) / len(valid)
    test_share = sum(q.label == OOS for q in test) / len(test)
    rows = []
    for target in targets:
        plain = fit_thresholds(vd, valid, target_misroute=target, min_route_rows=min_route_rows)
        for share in SHARES:
            t1 = time.perf_counter()
            weights = oos_share_weights(valid, names, share)
            fit = fit_thresholds(vd, valid, target_misroute=target, min_route_rows=min_route_rows,
                                 weights=weights)
            fit_s = time.perf_counter() - t1
            fits = [("plain", plain), ("reweighted", fit)]
            cf_s = None
            if folds:
                t1 = time.perf_counter()
                crossed, cf = fit_cross_fitted(vd, valid, target_misroute=target, folds=folds,
                                               weights=weights, min_route_rows=min_route_rows)
                cf_s = round(time.perf_counter() - t1, 3)
                fits.append(("crossfit", crossed))
            row = {"set": name + (f" + {other_name} as oos" if other_name else "")
                   + (" (+ train oos rows)" if with_train_oos else ""),
                   "target": target, "share": share, "valid_oos_share": valid_share,
                   "test_oos_share": test_share, "fit_s": round(fit_s, 3), "crossfit_s": cf_s}
            if folds:
                row["crossfit_internal"] = cf.internal
                row["crossfit_expected"] = cf.expected
            for tag, f in fits:
                th = f.thresholds()
                row[f"{tag}_misroute"] = misroute_at_share(td, test, th, names, share)
                inscope = [(d, q) for d, q in zip(td, test, strict=True) if q.label in names]
                row[f"{tag}_in_scope_acc"] = sum(index_route(d, th) == q.label
                                                 for d, q in inscope) / len(inscope)
                oos = [d for d, q in zip(td, test, strict=True) if q.label not in names]
                row[f"{tag}_oos_recall"] = (sum(index_route(d, th) is None for d in oos)
                                            / len(oos)) if oos else None
                row[f"{tag}_feasible"] = f.feasible
            rows.append(row)
            say(f"  target {target:.0%} share {share:.0%}: misroute plain "
                f"{pct(row['plain_misroute'])}, reweighted {pct(row['reweighted_misroute'])}, "
                f"cross-fitted {pct(row.get('crossfit_misroute'))}")
    return rows


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def render(results: dict[str, Any]) -> str:
    m = results["meta"]
    lines = ["# fit under a shifted out-of-scope share", "",
             f"- Date: {m['date']}", f"- Command: `{m['command']}`",
             f"- Machine: {m['machine']['cpu']}, {m['machine']['cores']} cores, Python "
             f"{m['machine']['python']}",
             f"- Encoder all-MiniLM-L6-v2, backend {m['backend']}, k={m['k']} utterances per "
             f"route (seed 0); wall {m['wall_s']:.0f}s",
             f"- fit's min_route_rows: {m.get('min_route_rows', 30)} (0: router-wide thresholds "
             f"only)", "",
             "Index misroute rate (wrong / decided, %) on test with its `oos` rows reweighted to "
             "the live share; *plain*: `fit` on validation as it is; *told*: `fit --oos-share "
             "<live share>`; *told+cf*: `fit --oos-share <live share> --cross-fit "
             f"{m.get('folds', 5)}`, whose *cf estimate* is the cross-fitted held-out misroute "
             "on validation (what `fit` expects; test − estimate is the validation→test shift "
             "that no fit on validation can see). In-scope accuracy and OOS recall are "
             "unweighted test figures of the same thresholds. |Δ| is |misroute − target| in "
             "points.", "",
             "| set | valid oos | target | live share | misroute plain | misroute told | "
             "\\|Δ\\| told | misroute told+cf | \\|Δ\\| told+cf | cf estimate | "
             "in-scope acc told | in-scope acc told+cf | OOS recall told | OOS recall told+cf |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        told, cf = r["reweighted_misroute"], r.get("crossfit_misroute")
        lines.append(f"| {r['set']} | {pct(r['valid_oos_share'])} | {pct(r['target'])} | "
                     f"{pct(r['share'])} | {pct(r['plain_misroute'])} | {pct(told)} | "
                     f"{gap(told, r['target'])} | {pct(cf)} | {gap(cf, r['target'])} | "
                     f"{pct(r.get('crossfit_expected'))} | {pct(r['reweighted_in_scope_acc'])} | "
                     f"{pct(r.get('crossfit_in_scope_acc'))} | "
                     f"{pct(r['reweighted_oos_recall'])} | {pct(r.get('crossfit_oos_recall'))} |")
    lines += ["", "Largest |misroute − target| per set (points):", "",
              "| set | told | told+cf |", "|---|---|---|"]
    for name in dict.fromkeys(r["set"] for r in results["rows"]):
        rows = [r for r in results["rows"] if r["set"] == name]
        lines.append(f"| {name} | {pct(worst(rows, 'reweighted_misroute'))} | "
                     f"{pct(worst(rows, 'crossfit_misroute'))} |")
    return "\n".join(lines) + "\n"


def gap(v: float | None, target: float) -> str:
    return "—" if v is None else f"{100 * abs(v - target):.1f}"


def worst(rows: list[dict[str, Any]], key: str) -> float | None:
    return max((abs(r[key] - r["target"]) for r in rows if r.get(key) is not None),
               default=None)


def main(argv: list[str] | None = None) -> int:
    from datetime import UTC, datetime

    p = argparse.ArgumentParser(prog="python -m benchmarks.fit_shift")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--targets", default="0.03,0.10")
    p.add_argument("--backend", default="onnx-int8")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--name", default="fit_shift")
    p.add_argument("--min-route-rows", type=int, default=30,
                   help="fit's --min-route-rows (0: router-wide thresholds only)")
    p.add_argument("--folds", type=int, default=5,
                   help="fit's --cross-fit folds for the told+cf column (0: skip it)")
    p.add_argument("--train-oos", action="store_true",
                   help="add the train rows labelled oos to the validation rows")
    a = p.parse_args(argv)
    started = time.perf_counter()
    def say(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    rows: list[dict[str, Any]] = []
    for name in a.sets.split(","):
        rows += run_set(name, SETS.get(name), [float(t) for t in a.targets.split(",")],
                        a.backend, a.k, say, a.train_oos, a.min_route_rows, a.folds)
    results = {"meta": {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                        "command": shlex.join(["python", "-m", "benchmarks.fit_shift",
                                               *(argv if argv is not None else sys.argv[1:])]),
                        "machine": machine(), "backend": a.backend, "k": a.k,
                        "wall_s": time.perf_counter() - started,
                        "min_route_rows": a.min_route_rows, "folds": a.folds},
               "rows": rows}
    text = render(results)
    print(text)
    save_results(results, text, RESULTS, a.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
