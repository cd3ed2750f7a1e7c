"""Synthetic route sets of 1k / 10k / 100k utterances for the latency benchmark, built
deterministically from the public intent data in shared/data (train texts as utterances, test
texts as queries). Any folder with the same layout (banking77/, hwu64/, snips/ holding
train.csv and test.csv with `text,label` columns; hwu64/valid.csv optional) works, e.g. the
smoke test's tiny one.

- 100 routes (with the shipped data): the 77 banking77 intents, 16 hwu64 intents (every 4th
  label, sorted) and the 7 snips intents. A route's pool is its intent's unique train texts
  (banking77_oos adds nothing: its in-scope rows are banking77's).
- A set of N utterances takes texts round-robin over the routes (route 1's first text, route 2's
  first, ..., then every route's second text, ...), skipping routes whose pool has run out, so
  1k is ~10 per route and 10k ~100 per route (snips' larger pools fill in where banking77's run
  out).
- There are ~25k unique real texts, so for 100k the remainder is **synthetic variants**: within
  a route, two of its own texts joined with a space ("<text i> <text j>", pairs in a fixed
  order), again round-robin over routes. They stay on topic but are about twice as long
  as a real utterance, which makes the 100k build's embedding slower per utterance than the
  smaller sets'.
- Every utterance is unique across the whole set under semroute's comparison
  (`utterance_key`: whitespace- and case-insensitive), as the route-file contract requires.
- Queries: the test splits of the same intents (banking77, the 16 hwu64 intents, snips), minus
  any text also found in a train split, shuffled with a fixed seed; warm-up queries come from
  hwu64's validation split (same intents), so they never repeat a timed query.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from semroute.config import utterance_key

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
N_ROUTES = 100
HWU_EVERY = 4
SEED = 20240501
CATALOGUE_BASE = {
    "profile": "bench",
    "profiles": {"bench": {"fast": {"provider": "openai", "model": "unused",
                                    "base_url": "http://127.0.0.1:9/v1"}}},
}


@dataclass
class Pools:
    """Route name -> its intent's unique train texts; queries and warm-up texts."""

    routes: dict[str, list[str]]
    queries: list[str]
    warmup: list[str]
    train_keys: set[str]


def _rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def _route_name(dataset: str, label: str) -> str:
    clean = "".join(c if c.isalnum() or c in "_.-" else "_" for c in label)
    return f"{dataset}.{clean}"[:64]


def load_pools(root: Path = DATA_ROOT) -> Pools:
    """The 100 intents' pools, the query texts and the warm-up texts (see module doc)."""
    b77 = _rows(root / "banking77" / "train.csv")
    hwu = _rows(root / "hwu64" / "train.csv")
    snips = _rows(root / "snips" / "train.csv")
    hwu_labels = sorted({lab for _, lab in hwu})[::HWU_EVERY]
    chosen = ([("banking77", lab) for lab in sorted({lab for _, lab in b77})]
              + [("hwu64", lab) for lab in hwu_labels]
              + [("snips", lab) for lab in sorted({lab for _, lab in snips})])
    train = {"banking77": b77, "hwu64": hwu, "snips": snips}
    # every train text of every dataset (queries must not be utterances of any set)
    train_keys = {utterance_key(t) for rows in train.values() for t, _ in rows}
    for extra in ("banking77_oos",):
        p = root / extra / "train.csv"
        if p.exists():
            train_keys |= {utterance_key(t) for t, _ in _rows(p)}
    seen: set[str] = set()
    routes: dict[str, list[str]] = {}
    for ds, label in chosen:
        pool = []
        for text, lab in train[ds]:
            k = utterance_key(text)
            if lab == label and k and k not in seen:
                seen.add(k)
                pool.append(" ".join(text.split()))
        routes[_route_name(ds, label)] = pool
    hwu_set = set(hwu_labels)
    tests = (_rows(root / "banking77" / "test.csv")
             + [r for r in _rows(root / "hwu64" / "test.csv") if r[1] in hwu_set]
             + _rows(root / "snips" / "test.csv"))
    queries = _unique([t for t, _ in tests], exclude=train_keys)
    random.Random(SEED).shuffle(queries)
    valid = root / "hwu64" / "valid.csv"
    warm = _unique([t for t, lab in _rows(valid) if lab in hwu_set] if valid.exists() else [],
                   exclude=train_keys | {utterance_key(q) for q in queries})
    random.Random(SEED + 1).shuffle(warm)
    return Pools(routes, queries, warm, train_keys)


def _unique(texts: Iterable[str], exclude: set[str]) -> list[str]:
    out, seen = [], set(exclude)
    for t in texts:
        k = utterance_key(t)
        if k and k not in seen:
            seen.add(k)
            out.append(" ".join(t.split()))
    return out


def _variants(pool: Sequence[str], route: str) -> Iterable[str]:
    """Deterministic on-topic variants: pairs of the route's own texts, joined by a space
    (text i with text i+1, then i+2, ..., i taken in a fixed shuffled order)."""
    n = len(pool)
    order = list(range(n))
    random.Random(f"{SEED}|{route}").shuffle(order)
    for offset in range(1, n):
        for i in order:
            yield f"{pool[i]} {pool[(i + offset) % n]}"


def make_route_set(pools: Pools, size: int) -> tuple[dict[str, list[str]], dict[str, int]]:
    """`size` unique utterances spread round-robin over the routes; returns (routes, counts)
    with counts = {"real": n, "synthetic": m}."""
    names = list(pools.routes)
    seen: set[str] = set()
    out: dict[str, list[str]] = {n: [] for n in names}
    total = 0
    # real texts first, round-robin
    its = {n: iter(pools.routes[n]) for n in names}
    total = _round_robin(its, out, seen, size, total)
    real = total
    if total < size:
        its = {n: iter(_variants(pools.routes[n], n)) for n in names}
        total = _round_robin(its, out, seen, size, total)
    if total < size:
        raise ValueError(f"cannot make {size} unique utterances (got {total})")
    return {n: u for n, u in out.items() if u}, {"real": real, "synthetic": total - real}


def _keys_of(routes: dict[str, list[str]]) -> set[str]:
    return {utterance_key(t) for pool in routes.values() for t in pool}


def _round_robin(its: dict[str, Iterable[str]], out: dict[str, list[str]], seen: set[str],
                 size: int, total: int) -> int:
    live = list(its)
    while live and total < size:
        still = []
        for name in live:
            if total >= size:
                break
            for text in its[name]:  # type: ignore[union-attr]
                k = utterance_key(text)
                if k not in seen:
                    seen.add(k)
                    out[name].append(text)
                    total += 1
                    still.append(name)
                    break
        live = still if total < size else []
    return total


def write_routes(folder: Path, routes: dict[str, list[str]], backend: str,
                 extra_router: dict | None = None) -> Path:
    """Write route files + models.yaml for `backend`; unchanged files are left alone (so their
    mtimes and the index's route hashes stay put)."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for name, utts in routes.items():
        spec = {"name": name, "description": f"Synthetic benchmark route {name}.",
                "model": "fast", "utterances": list(utts)}
        _write_if_changed(folder / f"{name}.yaml",
                          yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
        wanted.add(f"{name}.yaml")
    cat = dict(CATALOGUE_BASE)
    cat["router"] = {"backend": backend, **(extra_router or {})}
    _write_if_changed(folder / "models.yaml", yaml.safe_dump(cat, sort_keys=False))
    wanted.add("models.yaml")
    for p in folder.glob("*.yaml"):
        if p.name not in wanted:
            p.unlink()
    return folder


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def change_utterances(routes: dict[str, list[str]], pools: Pools, n: int
                      ) -> dict[str, list[str]]:
    """A copy of `routes` with `n` utterances replaced by new on-topic texts (an edited copy of
    the route's first utterance, one route after another): the incremental-rebuild workload."""
    out = {k: list(v) for k, v in routes.items()}
    used = _keys_of(out) | pools.train_keys
    names = [n for n in out if out[n]]
    changed = 0
    for turn in range(n):  # one per route in turn (several per route in a tiny set)
        if changed >= n or not names:
            break
        name = names[turn % len(names)]
        utts = out[name]
        base = utts[0]
        for suffix in range(1, 1000):
            text = f"{base} (edit {turn}.{suffix})"
            if utterance_key(text) not in used:
                used.add(utterance_key(text))
                utts[(len(utts) // 2 + turn // len(names)) % len(utts)] = text
                changed += 1
                break
    return out
