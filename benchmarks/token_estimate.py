"""How good is the budget's token estimate (a token per digit, the other UTF-8 bytes / 3:
`semroute.policies.costs.text_tokens`)?

Counts the real tokens of prompts from the shared data with a real byte-level BPE tokenizer
(SmolLM2's, 49k vocabulary, through the local llama-server's /tokenize) and compares them with
the estimate, with plain bytes/3 and with the usual chars/4 rule: the share of texts each
under-counts and the mean ratio estimate / tokens. Texts: MMLU, GSM8K and MT-Bench prompts
(routellm_evals), banking77 queries, and semroute's own Python source in 2,000-character
chunks (code).

    python -m benchmarks.token_estimate [--per-set 400]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.machine import machine, save_results
from semroute.policies import text_tokens
from tests.support.llm_server import start_llm_server

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"


def texts(per_set: int, seed: int = 0) -> dict[str, list[str]]:
    """A seeded sample of up to `per_set` texts per set."""
    rng = random.Random(seed)
    csv.field_size_limit(1 << 24)
    sets: dict[str, list[str]] = {}
    for name, file, column in (("mmlu", "routellm_evals/mmlu_mixtral_vs_gpt4.csv", "prompt"),
                               ("gsm8k", "routellm_evals/gsm8k_mixtral_vs_gpt4.csv", "prompt"),
                               ("banking77", "banking77/test.csv", "text")):
        with (DATA / file).open(encoding="utf-8") as f:
            sets[name] = [row[column] for row in csv.DictReader(f)]
    with (DATA / "routellm_evals/mt_bench_judgements.csv").open(encoding="utf-8") as f:
        sets["mt_bench"] = sorted({t for row in csv.DictReader(f)
                                   for t in json.loads(row["question_turns"])})
    code = "".join(p.read_text() for p in sorted((REPO / "semroute").rglob("*.py")))
    sets["python code"] = [code[i:i + 2000] for i in range(0, len(code), 2000)]
    return {k: rng.sample(v, min(per_set, len(v))) for k, v in sets.items()}


def count(base_url: str, text: str) -> int:
    req = urllib.request.Request(f"{base_url}/tokenize", data=json.dumps(
        {"content": text, "add_special": False}).encode(), headers={
        "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return len(json.loads(r.read())["tokens"])


def summary(real: Sequence[int], est: Sequence[int]) -> dict[str, float]:
    return {"under_share": sum(e < t for e, t in zip(est, real, strict=True)) / len(real),
            "mean_ratio": statistics.fmean(e / t for e, t in zip(est, real, strict=True)),
            "min_ratio": min(e / t for e, t in zip(est, real, strict=True))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-set", type=int, default=400)
    args = ap.parse_args()
    server = start_llm_server()
    rows: dict[str, Any] = {}
    try:
        for name, sample in texts(args.per_set).items():
            sample = [t for t in sample if t.strip()]
            real = [max(1, count(server.base_url, t)) for t in sample]
            rows[name] = {
                "texts": len(sample), "mean_tokens": statistics.fmean(real),
                "estimate": summary(real, [text_tokens(t) for t in sample]),
                "bytes/3": summary(real, [math.ceil(len(t.encode()) / 3) for t in sample]),
                "chars/4": summary(real, [math.ceil(len(t) / 4) for t in sample])}
    finally:
        server.stop()
    lines = ["# Token estimate (digits + other bytes / 3) against a real BPE tokenizer", "",
             "Real tokens: SmolLM2's byte-level BPE (49k vocabulary) via llama-server "
             "/tokenize. `under` is the share of texts an estimate under-counts; `ratio` the "
             "mean (and minimum) estimate / real tokens.", "",
             "| texts | n | mean tokens | estimate under | ratio (min) | bytes/3 under | "
             "ratio (min) | chars/4 under | ratio (min) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        cells = [f"{r[k]['under_share']:.1%} | {r[k]['mean_ratio']:.2f} "
                 f"({r[k]['min_ratio']:.2f})" for k in ("estimate", "bytes/3", "chars/4")]
        lines.append(f"| {name} | {r['texts']} | {r['mean_tokens']:.0f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Reproduce: `python -m benchmarks.token_estimate`", ""]
    print("\n".join(lines))
    save_results({"machine": machine(), "per_set": args.per_set, "sets": rows},
                 "\n".join(lines), RESULTS, "token_estimate")


if __name__ == "__main__":
    main()
