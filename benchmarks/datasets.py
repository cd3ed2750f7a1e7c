"""Labelled intent data for the benchmarks: load a dataset folder (or one CSV/JSONL file) with
`text,label` rows, split it into train / valid / test, and draw route sets of k utterances per
intent from train.

Rules (the same for every dataset, so one given by path is treated like the shipped ones):

- Splits come from file names in a folder: `train*`, `valid*`/`dev*`/`val*`, `test*`
  (`.csv`, `.jsonl`). A single file is split here: a stratified 20% becomes test.
- Without a validation split, a stratified 10% of train is carved out (fixed seed) as the
  validation set; those rows are never route utterances ("all" then means the other 90%).
- The label `oos` means "no route should match". Train rows labelled `oos` are never route
  utterances (they join the carved validation set when one is carved).
- Test rows whose text also occurs in train (compared as semroute compares utterances:
  whitespace- and case-insensitive) are dropped; so are validation rows that occur among the
  utterances, so calibration never sees a query that is also a route utterance.
- Labels are mapped to valid route names (`reverted_card_payment?` -> `reverted_card_payment_`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from semroute.config import RESERVED_ROUTE_NAMES, utterance_key
from semroute.quality import OOS, LabelledQuery, load_labelled

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATASETS = ("banking77", "hwu64", "snips", "banking77_oos")
SUFFIXES = (".csv", ".jsonl", ".ndjson")
SPLIT_PREFIXES = {"train": ("train",), "valid": ("valid", "validation", "dev", "val"),
                  "test": ("test",)}
TEST_FRACTION = 0.2
VALID_FRACTION = 0.1
CARVE_SEED = 0
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Dataset:
    """One dataset, split, with labels already mapped to route names (`oos` kept as is)."""

    name: str
    source: str
    train: list[LabelledQuery]
    valid: list[LabelledQuery]
    test: list[LabelledQuery]
    routes: list[str]
    label_of: dict[str, str]
    pools: dict[str, list[str]]
    valid_source: str
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    train_oos: list[str] = field(default_factory=list)  # train texts labelled oos

    def oos_examples(self, n: int, seed: int) -> list[str]:
        """A seeded sample of n train texts labelled oos: a route set's out-of-scope file."""
        pool = list(self.train_oos)
        random.Random(f"{seed}|oos").shuffle(pool)
        return pool[:n]

    @property
    def has_oos(self) -> bool:
        return any(q.label == OOS for q in self.test)

    def utterances(self, k: int | None, seed: int) -> dict[str, list[str]]:
        """k utterances per route (all with k=None), nested: the k=5 set of a seed is the
        first five of its k=10 set, so rebuilds across k hit the index's embedding cache."""
        out = {}
        for route in self.routes:
            pool = list(self.pools[route])
            if k is not None:
                random.Random(f"{seed}|{route}").shuffle(pool)
                pool = pool[:k]
            out[route] = pool
        return out


def unambiguous_pools(rows: Sequence[LabelledQuery]
                      ) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Utterances per label, first spelling of each text (case and spacing ignored); a text
    under two labels is ambiguous and dropped. Also returns each text key's labels."""
    owners: dict[str, set[str]] = {}
    for q in rows:
        owners.setdefault(utterance_key(q.text), set()).add(q.label)
    pools: dict[str, list[str]] = {}
    seen: set[str] = set()
    for q in rows:
        key = utterance_key(q.text)
        if key in seen or len(owners[key]) > 1:
            continue
        seen.add(key)
        pools.setdefault(q.label, []).append(q.text)
    return pools, owners


def route_name(label: str, taken: set[str]) -> str:
    """A valid, unique route name for a label (letters, digits, `_.-`, at most 64 chars)."""
    name = label if _NAME_OK.match(label) and len(label) <= 64 else \
        re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:60]
    if not name or not name[0].isalnum() or name.casefold() in RESERVED_ROUTE_NAMES:
        name = "r" + name
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


def _carve(rows: Sequence[LabelledQuery], fraction: float,
           tag: str) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """Split off a stratified `fraction` of each label (at least one row of any label that
    has two or more); returns (carved, rest), each in the original order."""
    by_label: dict[str, list[int]] = {}
    for i, q in enumerate(rows):
        by_label.setdefault(q.label, []).append(i)
    picked: set[int] = set()
    for label, idx in sorted(by_label.items()):
        if len(idx) < 2:
            continue
        idx = list(idx)
        random.Random(f"{tag}|{CARVE_SEED}|{label}").shuffle(idx)
        picked.update(idx[:max(1, round(fraction * len(idx)))])
    return ([q for i, q in enumerate(rows) if i in picked],
            [q for i, q in enumerate(rows) if i not in picked])


def _split_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in SUFFIXES or not p.is_file():
            continue
        stem = p.stem.lower()
        for split, prefixes in SPLIT_PREFIXES.items():
            if split not in files and stem.startswith(prefixes):
                files[split] = p
                break
    return files


def resolve(spec: str, root: Path = DATA_ROOT) -> Path:
    """A dataset name under `root`, or a path to a folder or file."""
    p = Path(spec).expanduser()
    if p.exists():
        return p.resolve()
    if (root / spec).exists():
        return (root / spec).resolve()
    raise FileNotFoundError(f"dataset '{spec}': not a path and not a folder of {root}")


def load_dataset(spec: str, root: Path = DATA_ROOT) -> Dataset:
    """Load and split a dataset (see the module doc for the rules)."""
    path = resolve(spec, root)
    notes: list[str] = []
    if path.is_dir():
        name = path.name
        files = _split_files(path)
        if "test" not in files:
            raise FileNotFoundError(f"{path}: no test split (test*.csv / test*.jsonl)")
        if "train" not in files:
            raise FileNotFoundError(f"{path}: no train split (train*.csv / train*.jsonl)")
        train, test = load_labelled(files["train"]), load_labelled(files["test"])
        valid = load_labelled(files["valid"]) if "valid" in files else None
        valid_source = files["valid"].name if "valid" in files else ""
    else:
        name = path.stem
        rows = load_labelled(path)
        test, train = _carve(rows, TEST_FRACTION, "test")
        valid, valid_source = None, ""
        notes.append(f"one file: a stratified {TEST_FRACTION:.0%} per label (seed "
                     f"{CARVE_SEED}) is the test split")
    counts = {"train_rows": len(train), "test_rows": len(test)}
    train_oos = [q for q in train if q.label == OOS]
    train = [q for q in train if q.label != OOS]
    valid_carved = valid is None  # then the train oos rows are validation rows
    if valid is None:
        valid, train = _carve(train, VALID_FRACTION, "valid")
        valid = valid + train_oos
        valid_source = (f"carved from train: a stratified {VALID_FRACTION:.0%} per intent "
                        f"(seed {CARVE_SEED}), never used as utterances"
                        + (f", plus the {len(train_oos)} train rows labelled oos"
                           if train_oos else ""))
        notes.append(f"no validation split: {valid_source}")
    elif train_oos:
        notes.append(f"{len(train_oos)} train rows labelled oos: never utterances (out-of-"
                     f"scope examples of the semroute+oos rows only)")
    counts["train_oos_rows"] = len(train_oos)

    labels = sorted({q.label for q in train})
    taken: set[str] = set()
    route_of: dict[str, str] = {}
    for label in labels:
        route_of[label] = route_name(label, taken)
        taken.add(route_of[label])
    renamed = {lab: r for lab, r in route_of.items() if lab != r}
    if renamed:
        notes.append("labels renamed to valid route names: "
                     + ", ".join(f"{a!r} -> {b!r}" for a, b in renamed.items()))

    def relabel(rows: list[LabelledQuery]) -> list[LabelledQuery]:
        return [LabelledQuery(q.text, route_of.get(q.label, q.label), q.group) for q in rows]

    train, valid, test = relabel(train), relabel(valid), relabel(test)

    # utterance pools: unique keys per route; a text under two labels is ambiguous: dropped
    found, owners = unambiguous_pools(train)
    pools: dict[str, list[str]] = {r: found.get(r, []) for r in route_of.values()}
    ambiguous = sum(len(v) > 1 for v in owners.values())
    counts["train_duplicates_dropped"] = len(train) - sum(map(len, found.values())) - sum(
        1 for q in train if len(owners[utterance_key(q.text)]) > 1)
    if ambiguous:
        notes.append(f"{ambiguous} train texts carry two labels: not used as utterances")

    train_keys = set(owners) | {utterance_key(q.text) for q in train_oos}
    before = len(test)
    test = [q for q in test if utterance_key(q.text) not in train_keys]
    counts["test_dropped_in_train"] = before - len(test)
    if before - len(test):
        notes.append(f"{before - len(test)} test rows also in train (whitespace/case-"
                     f"insensitive): dropped")
    before = len(valid)
    valid = [q for q in valid if utterance_key(q.text) not in owners]
    counts["valid_dropped_in_train"] = before - len(valid)
    if before - len(valid):
        notes.append(f"{before - len(valid)} validation rows also among the utterance pool: "
                     f"dropped")
    unknown = Counter(q.label for q in test if q.label != OOS and q.label not in pools)
    if unknown:
        notes.append(f"{sum(unknown.values())} test rows carry labels with no train rows "
                     f"({len(unknown)} labels): scored as out-of-scope")
    counts.update(train_used=len(train), valid=len(valid), test=len(test),
                  test_oos=sum(q.label == OOS for q in test),
                  valid_oos=sum(q.label == OOS for q in valid))
    return Dataset(name=name, source=str(path), train=train, valid=valid, test=test,
                   routes=list(pools), label_of={r: lab for lab, r in route_of.items()},
                   pools=pools, valid_source=valid_source, notes=notes, counts=counts,
                   train_oos=spare_oos(train_oos, owners) if valid_carved is False else [])


def spare_oos(rows: Sequence[LabelledQuery], owners: dict[str, set[str]]) -> list[str]:
    """Train texts labelled oos that may serve as out-of-scope examples: each once, none
    an utterance of the pools (a route set refuses that)."""
    keys: dict[str, str] = {}
    for q in rows:
        key = utterance_key(q.text)
        if key not in owners and key not in keys and q.text.strip():
            keys[key] = q.text
    return list(keys.values())
