"""Importing an outcome file into the store: read it whole, encode its texts, then write every
record and vector in one transaction, so a bad row or a crash leaves the store unchanged.
A file is known by the sha256 of its bytes: importing it again adds nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from semroute.config import normalise_text
from semroute.encoders import Encoder, Fingerprint, file_sha256
from semroute.outcomes.formats import read_outcome_file
from semroute.outcomes.predict import text_features
from semroute.outcomes.records import OutcomeRecord, text_hash

if TYPE_CHECKING:
    from semroute.outcomes.store import OutcomeStore


@dataclass(frozen=True)
class ImportSummary:
    """What an import did (or, `already_imported`, that the file was in the store)."""

    dataset: str  # sha256 of the file: the records' `dataset`
    name: str
    path: str
    form: str
    examples: int
    models: list[str]
    records: int  # records written now (0 when already imported)
    dropped: int  # rows the form leaves out (routellm: contaminated)
    encoded: int  # texts encoded now (texts with a vector for this encoder are skipped)
    encoder: str
    already_imported: bool
    seconds: float

    def describe(self) -> str:
        if self.already_imported:
            extra = f"; encoded {self.encoded} texts for {self.encoder}" if self.encoded else ""
            return f"{self.path}: already imported as '{self.name}' ({self.dataset[:12]}){extra}"
        dropped = f", {self.dropped} rows left out (contaminated)" if self.dropped else ""
        return (f"{self.path}: imported '{self.name}' ({self.form} form, {self.dataset[:12]}): "
                f"{self.examples} examples x {len(self.models)} models "
                f"({', '.join(self.models)}) = {self.records} records{dropped}; "
                f"{self.encoded} texts encoded with {self.encoder} in {self.seconds:.1f} s")


def import_file(store: OutcomeStore, path: str | Path, encoder: Encoder, *,
                dataset: str | None = None, keep_text: bool = False,
                batch_size: int = 64) -> ImportSummary:
    """Import an outcome file (any form `read_outcome_file` reads) as `imported` records.

    The file is read and checked, and texts without a vector for this encoder are encoded,
    before the store is touched; then one transaction writes records, vectors and the
    dataset entry. `keep_text` also stores the raw texts (by default only their hashes).
    """
    t0 = time.perf_counter()
    path = Path(path)
    table = read_outcome_file(path)
    digest = file_sha256(path)
    name = dataset or path.name
    fp = Fingerprint.of(encoder)
    hashes = [text_hash(t) for t in table.texts]
    first_text: dict[str, str] = {}
    for h, t in zip(hashes, table.texts, strict=True):
        first_text.setdefault(h, t)
    have = store.has_vectors(fp, hashes)
    todo = [h for h in first_text if h not in have]
    vectors = encoder.encode([normalise_text(first_text[h]) for h in todo],
                             batch_size=batch_size) if todo else None
    records = [
        OutcomeRecord(text_hash=h, model=model, score=float(table.scores[i, j]),
                      source="imported", dataset=digest, ts=now,
                      cost_usd=None if table.costs is None or math.isnan(table.costs[i, j])
                      else float(table.costs[i, j]),
                      category=table.groups[i] if table.groups else None)
        for now in (time.time(),)
        for i, h in enumerate(hashes)
        for j, model in enumerate(table.models)
        if not math.isnan(table.scores[i, j])]
    with store.transaction() as tx:
        known = tx.conn.execute("SELECT name FROM datasets WHERE id = ?", (digest,)).fetchone()
        if known is None:
            tx.add_dataset(digest, name, str(path), table.form, len(table.texts), len(records),
                           table.dropped)
            tx.add_many(records, first_text if keep_text else None)
        if vectors is not None:
            tx.put_vectors(fp, todo, vectors)
        tx.put_features(list(first_text), text_features(
            [normalise_text(t) for t in first_text.values()]))
    if vectors is not None or known is None:
        store.checkpoint()
    return ImportSummary(digest, known[0] if known else name, str(path), table.form,
                         len(table.texts), list(table.models), 0 if known else len(records),
                         table.dropped, len(todo), fp.describe(), known is not None,
                         time.perf_counter() - t0)
