"""The servers the gateway benchmark sends load to, each in its own process on 127.0.0.1: the
instant upstream, `semroute serve` (example routes, every model re-pointed at one base URL),
LiteLLM's proxy (its own venv) and the local llama-server. Stopped by PID, never by name."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks import gateway_load
from tests.support.example_routes import copy_example_routes
from tests.support.llm_server import free_port

REPO = Path(__file__).resolve().parent.parent
LITELLM_VENV = Path(os.environ.get("SEMROUTE_LITELLM_VENV", "/work/venv-litellm"))
CLIENT_KEY = gateway_load.CLIENT_KEY  # what the load generator presents to every target


@dataclass
class Proc:
    """A server process we started: its name, port, Popen and log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tree(self) -> list[int]:
        """The process and its descendants (`semroute serve --workers N`: the supervisor, its
        N workers and multiprocessing's resource tracker), from /proc/<pid>/task/*/children."""
        pids, i = [self.pid], 0
        while i < len(pids):
            for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    pids += [int(c) for c in task.read_text().split()]
            i += 1
        return pids

    def rss_kib(self) -> int | None:
        """VmRSS of the process and its descendants, from /proc/<pid>/status (summed: shared
        pages count once per process; None once it has exited)."""
        total = None
        for pid in self.tree():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total = (total or 0) + int(line.split()[1])
            except OSError:
                continue
        return total

    def cpu_s(self, main_thread: bool = False) -> float:
        """User + system CPU seconds of the process and its descendants (or of their main
        threads alone: the event loops of asyncio servers)."""
        return sum(self.cpu_by_pid(main_thread).values())

    def cpu_by_pid(self, main_thread: bool = False) -> dict[int, float]:
        """`cpu_s` of each process of the tree (how the work spread over the workers)."""
        out = {}
        for pid in self.tree():
            stat = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
            try:
                f = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[pid] = sum(int(x) for x in f[11:13]) / os.sysconf("SC_CLK_TCK")
        return out

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM (a supervisor stops its workers); SIGKILL to the whole tree, by pid, if it
        has not exited within 15 s."""
        if self.process.poll() is None:
            tree = self.tree()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                for pid in reversed(tree):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                self.process.wait(5)


def spawn(name: str, cmd: list[str], port: int, workdir: Path,
          env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=workdir, env={**os.environ, **(env or {})},
                             start_new_session=True)
    return Proc(name, port, p, log)


def wait_http(proc: Proc, path: str, timeout: float) -> None:
    """Until GET path answers 200; raises with the log's tail if the process dies or is slow."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{proc.port}{path}"
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.process.returncode}):\n{proc.tail()}")
        with contextlib.suppress(urllib.error.URLError, OSError), \
                urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.2)
    proc.stop()
    raise RuntimeError(f"{proc.name} not ready at {url} within {timeout} s:\n{proc.tail()}")


def python_env() -> dict[str, str]:
    """This repository first on PYTHONPATH, so the worktree's semroute is what runs."""
    return {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "TOKENIZERS_PARALLELISM": "false"}


def start_upstream(workdir: Path) -> Proc:
    port = free_port()
    p = spawn("upstream", [sys.executable, "-m", "benchmarks.gateway_upstream", str(port)],
              port, workdir, python_env())
    wait_http(p, "/health", 30)
    return p


def bench_routes(workdir: Path, base_url: str, name: str = "routes",
                 extra: dict[str, Any] | None = None) -> Path:
    """The example route set copied to `workdir/name`, with a profile `bench` in which every
    catalogue key of the active profile is the OpenAI-compatible server at `base_url`. Its
    router settings stay the example's, as in production: the request journal
    (`router.outcomes.log_requests`) is on, into `workdir/name/outcomes.db`."""
    out = workdir / name
    if out.exists():
        shutil.rmtree(out)
    copy_example_routes(out)  # as shipped, without a quickstart's outcome store
    models = yaml.safe_load((out / "models.yaml").read_text())
    keys = list(models["profiles"][models["profile"]])
    models["profiles"]["bench"] = {k: {"provider": "openai", "model": "bench-model",
                                       "base_url": base_url, "input_price": 0,
                                       "output_price": 0, "timeout": 30, **(extra or {})}
                                   for k in keys}
    models["profile"] = "bench"
    (out / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    return out


def build_index(routes: Path, index: Path) -> None:
    """`semroute build` in a child process (the encoder stays out of the load generator)."""
    subprocess.run([sys.executable, "-m", "semroute.cli", "build", "--routes", str(routes),
                    "--out", str(index)], check=True, capture_output=True, cwd=REPO,
                   env={**os.environ, **python_env()})


def start_gateway(workdir: Path, routes: Path, index: Path, name: str = "semroute",
                  workers: int = 1) -> Proc:
    """`semroute serve` as in production: its own process, `workers` workers (more than one:
    ready once every worker logged its start-up), access log off, one client key (checked on
    every request, as LiteLLM checks its master key)."""
    from semroute.config import hash_client_key

    config = workdir / f"{name}-gateway.yaml"
    config.write_text(yaml.safe_dump({"keys": [{"name": "bench",
                                                "sha256": hash_client_key(CLIENT_KEY)}]}))
    port = free_port()
    p = spawn(name, [sys.executable, "-m", "semroute.cli", "serve", "--routes", str(routes),
                     "--index", str(index), "--port", str(port), "--config", str(config),
                     "--workers", str(workers)],
              port, workdir, python_env())
    wait_http(p, "/readyz", 180)
    deadline = time.monotonic() + 180
    while p.tail(10_000).count("Application startup complete.") < workers:
        if p.process.poll() is not None or time.monotonic() > deadline:
            p.stop()
            raise RuntimeError(f"{name}: {workers} workers not started:\n{p.tail()}")
        time.sleep(0.2)
    return p


def litellm_available() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").is_file()


def litellm_version() -> str | None:
    try:
        out = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c",
                              "from importlib.metadata import version; print(version('litellm'))"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def start_litellm(workdir: Path, upstream_base_url: str) -> Proc:
    """LiteLLM's proxy (1 worker) with model `bench` = the same upstream, OpenAI provider."""
    cfg = workdir / "litellm.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "bench", "litellm_params": {
            "model": "openai/bench-model", "api_base": upstream_base_url,
            "api_key": "sk-unused"}}],
        "litellm_settings": {"telemetry": False, "set_verbose": False},
        "general_settings": {"master_key": CLIENT_KEY},
    }))
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "DISABLE_ADMIN_UI": "True", "NO_DOCS": "True"}
    p = spawn("litellm", [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg),
                          "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
              port, workdir, env)
    wait_http(p, "/health/liveliness", 240)
    return p
