"""How fast the outcomes store writes and loads: `OutcomeStore.matrix` at 100k records (what a
kNN quality predictor loads at start), with random unit vectors (dim 384, as all-MiniLM-L6-v2).

    python -m benchmarks.outcome_store_load [--records 100000] [--models 2] [--repeat 5]

The store is written in one transaction, closed and opened again (as a predictor starting up
would find it), then `matrix` is timed. Prints wall and CPU time (the machine may be shared:
CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from semroute.encoders import Fingerprint
from semroute.outcomes import OutcomeRecord, OutcomeStore, text_hash

FP = Fingerprint("bench", "torch", 384, "0" * 64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--models", type=int, default=2, help="records per text")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n_texts = args.records // args.models
    hashes = [text_hash(f"query {i}") for i in range(n_texts)]
    vecs = rng.standard_normal((n_texts, FP.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    records = [OutcomeRecord(text_hash=h, model=f"m{j}", score=float(rng.random()),
                             source="imported", cost_usd=0.001 * (j + 1))
               for h in hashes for j in range(args.models)]
    with tempfile.TemporaryDirectory() as tmp:
        with OutcomeStore(Path(tmp) / "o.db") as store:
            t = time.perf_counter()
            with store.transaction() as tx:
                tx.add_many(records)
                tx.put_vectors(FP, hashes, vecs)
            write_s = time.perf_counter() - t
        store = OutcomeStore(Path(tmp) / "o.db")  # as a predictor starting up would
        walls, cpus = [], []
        for _ in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            m = store.matrix(FP)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
        store.close()
    print(f"{len(records)} records over {n_texts} texts x {args.models} models, dim {FP.dim}, "
          f"store {size:.0f} MiB")
    print(f"write (one transaction): {write_s:.2f} s")
    print(f"matrix -> vectors {m.vectors.shape}, scores {m.scores.shape}: "
          f"median {statistics.median(walls) * 1000:.0f} ms wall "
          f"({statistics.median(cpus) * 1000:.0f} ms CPU), best {min(walls) * 1000:.0f} ms "
          f"over {args.repeat} runs")


if __name__ == "__main__":
    main()
