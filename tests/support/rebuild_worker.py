"""A separate process that builds one index folder again and again, for the tests that kill a
build mid-way or route while another process rebuilds.

    python -m tests.support.rebuild_worker OUT ROUTES_A [ROUTES_B ...] [--times N]

Builds N times, cycling through the route folders. Before each build it prints
`building <n>`, after it `built <build-id> <seconds>` (stdout, flushed), so a test can time a
kill from the moment the build itself starts (imports and start-up excluded). Also here: the
two route sets the tests alternate between (`write_route_pair`) and `start_worker`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from semroute.config import load_routes
from semroute.index import build_index

CATALOGUE: dict[str, Any] = {
    "profile": "local",
    "profiles": {"local": {"fast": {"provider": "openai", "model": "local",
                                    "base_url": "http://127.0.0.1:9/v1"}}},
    "router": {"default_route": "greet"},
}
_GREET = ["hi there", "hello, how are you", "good morning friend", "hey what's up",
          "nice to meet you", "good evening everyone", "howdy", "greetings and salutations"]
_CODE = ["write a python function to sort a list", "implement binary search in java",
         "reverse a linked list in C", "write a SQL query joining two tables",
         "create a REST endpoint in flask", "parse a CSV file in go",
         "write a unit test for a rust function", "generate a bash script that renames files"]
_STYLES = ["{}", "{} please", "could you {}", "{}, thanks", "quick one: {}"]
# In route set B only, so builds from A and B really differ (one more vector, one more text).
EXTRA_UTTERANCE = "howdy partner, long time no see"


def write_route_pair(parent: Path) -> tuple[Path, Path]:
    """Two route folders, A and B (B = A plus EXTRA_UTTERANCE), 80 utterances in two routes."""
    folders = []
    for name, extra in (("routes-a", []), ("routes-b", [EXTRA_UTTERANCE])):
        d = parent / name
        d.mkdir(parents=True)
        for route, texts in (("greet", _GREET), ("code", _CODE)):
            utterances = [s.format(t) for t in texts for s in _STYLES]
            if route == "greet":
                utterances += extra
            spec = {"name": route, "description": f"{route} queries", "model": "fast",
                    "utterances": utterances}
            (d / f"{route}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        (d / "models.yaml").write_text(yaml.safe_dump(CATALOGUE, sort_keys=False))
        folders.append(d)
    return folders[0], folders[1]


REPO = Path(__file__).resolve().parents[2]


def start_worker(out: Path, *routes: Path, times: int = 1,
                 prefix: list[str] | None = None) -> subprocess.Popen[str]:
    """Run this module in a new process (text pipes for stdout and stderr); `prefix` wraps
    the command, e.g. in strace."""
    cmd = [*(prefix or []), sys.executable, "-m", "tests.support.rebuild_worker", str(out),
           *map(str, routes), "--times", str(times)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run the builds."""
    parser = argparse.ArgumentParser(prog="rebuild_worker")
    parser.add_argument("out", type=Path)
    parser.add_argument("routes", type=Path, nargs="+")
    parser.add_argument("--times", type=int, default=1)
    args = parser.parse_args(argv)
    route_sets = [load_routes(r) for r in args.routes]
    for n in range(args.times):
        print(f"building {n}", flush=True)
        t0 = time.perf_counter()
        report = build_index(route_sets[n % len(route_sets)], args.out, threads=1,
                             show_progress=False)
        print(f"built {report.build_id} {time.perf_counter() - t0:.4f}", flush=True)


if __name__ == "__main__":
    main()
