"""Subprocess jobs of the latency benchmark: each runs in a fresh interpreter so that imports,
thread pools and peak memory belong to the job alone.

    python benchmarks/latency_worker.py JOB SPEC.json OUT.json

JOB is one of
- `build`: `semroute.build_index(routes, index)`; reports the BuildReport, the process's peak RSS
  (ru_maxrss) and its import time. The parent points SEMROUTE_CACHE at an empty folder for a
  cold build, so the ONNX export is made from scratch.
- `query`: `load_router(...)`, then single-query decisions (each with the bare encoder on the
  same query right before or after, alternating) and batched decisions.
- `load`: import semroute, `load_router()`, one decision: a fresh process's start-up costs.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

T_START = time.perf_counter()


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def job_build(spec: dict) -> dict:
    t0 = time.perf_counter()
    from semroute.index import build_index

    import_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = build_index(spec["routes"], spec["index"], show_progress=False)
    build_s = time.perf_counter() - t1
    return {"import_s": import_s, "build_s": build_s, "timings_s": report.timings_s,
            "embedded": report.embedded, "reused": report.reused,
            "n_vectors": report.n_vectors, "encoder": report.encoder,
            "peak_rss_mib": _maxrss_mib(), "process_s": time.perf_counter() - T_START}


def _stored_vectors(router):
    """The index's utterance vectors (embeddings.npy of the build; FAISS as a fallback)."""
    import numpy as np

    try:
        return np.load(router.index.build_dir / "embeddings.npy").astype(np.float32)
    except Exception:
        fi = router.index.faiss_index
        return fi.reconstruct_n(0, fi.ntotal)


def _search_alternatives(router, queries: list[str], k: int) -> dict:
    """The search stage on its own, as the route path sees it (each search right after an
    encode, which evicts the vectors from the CPU caches): FAISS flat (exact), FAISS
    scalar-quantised fp16 (half the bytes), HNSW (M=32; efSearch 64 and 128), with
    recall@k and top-1 agreement against the exact flat search."""
    import faiss
    import numpy as np

    enc = router.matcher.encoder
    x = _stored_vectors(router)
    d = x.shape[1]
    k = min(k, len(x))
    built: dict[str, object] = {}
    t = time.perf_counter()
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    built["flat"] = flat
    fp16 = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16,
                                      faiss.METRIC_INNER_PRODUCT)
    fp16.train(x)
    fp16.add(x)
    built["sq-fp16"] = fp16
    fi = router.index.faiss_index
    if type(fi).__name__ == "IndexHNSWFlat":
        hnsw = fi
    else:
        hnsw = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        hnsw.add(x)
    build_s = time.perf_counter() - t
    ef0 = hnsw.hnsw.efSearch
    vecs = enc.encode(queries)
    _, truth = flat.search(vecs, k)
    kinds = ["flat", "sq-fp16", "hnsw-ef64", "hnsw-ef128"]

    def search(kind: str, v):
        if kind.startswith("hnsw"):
            hnsw.hnsw.efSearch = int(kind.split("ef")[1])
            return hnsw.search(v, k)
        return built[kind].search(v, k)  # type: ignore[attr-defined]

    quality = {}
    for kind in kinds:
        _, ids = search(kind, vecs)
        quality[kind] = {
            "recall_at_k": float(np.mean([len(set(a) & set(b)) / k
                                          for a, b in zip(ids, truth, strict=True)])),
            "top1_same": float(np.mean(ids[:, 0] == truth[:, 0]))}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for i, q in enumerate(queries):
        for j in range(len(kinds)):
            kind = kinds[(i + j) % len(kinds)]
            v = enc.encode([q])
            t = time.perf_counter()
            search(kind, v)
            times[kind].append((time.perf_counter() - t) * 1e3)
    hnsw.hnsw.efSearch = ef0
    return {"k": k, "build_s": build_s, "queries": len(queries),
            "p50_ms": {kind: sorted(v)[len(v) // 2] for kind, v in times.items()},
            "quality": quality}


def job_query(spec: dict) -> dict:
    t0 = time.perf_counter()
    from semroute.routing import Router

    import_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    router = Router.load(spec["routes"], spec["index"], classifier=False,
                         threads=spec.get("threads", 1))
    load_s = time.perf_counter() - t1
    router.matcher.cache.maxsize = 0  # every query goes through the encoder
    enc = router.matcher.encoder
    clock = time.perf_counter
    for q in spec["warmup"]:
        router.route(q, use_classifier=False)
        enc.encode([q])

    queries = spec["queries"]
    passes = int(spec.get("passes", 3))
    total = [[0.0] * passes for _ in queries]
    bare = [[0.0] * passes for _ in queries]
    parts: dict[str, list[list[float]]] = {}
    routes: list[str | None] = []
    methods: list[str] = []
    for p in range(passes):
        for i, q in enumerate(queries):
            if (i + p) % 2:
                t = clock()
                enc.encode([q])
                bare[i][p] = (clock() - t) * 1e3
            t = clock()
            d = router.route(q, use_classifier=False)
            total[i][p] = (clock() - t) * 1e3
            if not (i + p) % 2:
                t = clock()
                enc.encode([q])
                bare[i][p] = (clock() - t) * 1e3
            for name, ms in d.timings_ms.items():
                parts.setdefault(name, [[0.0] * passes for _ in queries])[i][p] = ms
            if p == 0:
                routes.append(d.route)
                methods.append(d.method)
    hits = router.matcher.cache.hits

    batch_size = int(spec.get("batch_size", 256))
    batch_queries = spec.get("batch_queries") or queries
    chunks = [batch_queries[i:i + batch_size] for i in range(0, len(batch_queries), batch_size)]
    batch: dict[str, object] = {"batch_size": batch_size, "queries": len(batch_queries),
                                "passes": int(spec.get("batch_passes", 3))}
    router.route_batch(chunks[0], use_classifier=False)  # warm the batch shapes
    dps, eps = [], []
    for _ in range(int(batch["passes"])):  # type: ignore[call-overload]
        t = clock()
        for c in chunks:
            router.route_batch(c, use_classifier=False)
        dps.append(len(batch_queries) / (clock() - t))
        t = clock()
        for c in chunks:
            enc.encode(c)
        eps.append(len(batch_queries) / (clock() - t))
    batch["decisions_per_s"] = dps
    batch["bare_encoder_per_s"] = eps

    # the same batch run with two encoder threads (a second router; threads=2)
    if spec.get("batch_threads2"):
        r2 = Router.load(spec["routes"], spec["index"], classifier=False, threads=2)
        r2.matcher.cache.maxsize = 0
        r2.route_batch(chunks[0], use_classifier=False)
        dps2 = []
        for _ in range(int(batch["passes"])):  # type: ignore[call-overload]
            t = clock()
            for c in chunks:
                r2.route_batch(c, use_classifier=False)
            dps2.append(len(batch_queries) / (clock() - t))
        batch["decisions_per_s_threads2"] = dps2

    search_alt = None
    if spec.get("search_alternatives"):
        search_alt = _search_alternatives(router, queries[:200], router.matcher.top_k)

    import numpy as np

    fi = router.index.faiss_index
    return {"import_s": import_s, "load_s": load_s, "total_ms": total, "bare_ms": bare,
            "parts_ms": parts, "routes": routes, "methods": methods, "cache_hits": hits,
            "batch": batch, "search_alternatives": search_alt,
            "index_type": type(fi).__name__, "n_vectors": int(fi.ntotal),
            "encoder": repr(enc), "top_k": router.matcher.top_k,
            "numpy_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "peak_rss_mib": _maxrss_mib(), "numpy": np.__version__}


def job_load(spec: dict) -> dict:
    t0 = time.perf_counter()
    import semroute

    t1 = time.perf_counter()
    router = semroute.load_router(spec["routes"], spec["index"], classifier=False)
    t2 = time.perf_counter()
    d = router.route(spec["query"], use_classifier=False)
    t3 = time.perf_counter()
    return {"interpreter_s": t0 - T_START, "import_s": t1 - t0, "load_router_s": t2 - t1,
            "first_route_s": t3 - t2, "total_s": t3 - T_START, "route": d.route,
            "modules": sorted(m for m in ("torch", "sentence_transformers", "transformers",
                                          "onnxruntime", "faiss", "pydantic", "yaml", "sklearn",
                                          "scipy", "httpx", "openai", "anthropic")
                              if m in sys.modules)}


JOBS = {"build": job_build, "query": job_query, "load": job_load}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in JOBS:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    out = JOBS[argv[0]](spec)
    tmp = argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f)
    os.replace(tmp, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
