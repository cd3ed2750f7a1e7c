"""`semroute serve` as a real process for tests: started on a free loopback port with its log
in a file, its worker processes found through /proc, and the worker that answered a
response found through the server side of its connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.llm_server import free_port

REPO = Path(__file__).resolve().parent.parent.parent


@dataclass
class Served:
    """A running `semroute serve`: the process (the supervisor with --workers), port, log."""

    proc: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[int]:
        """Every child process of the supervisor (workers and multiprocessing's helpers)."""
        pid = self.proc.pid
        try:
            return [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def workers(self) -> list[int]:
        """The worker processes: children started by multiprocessing's spawn."""
        out = []
        for k in self.children():
            try:
                cmdline = Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "spawn_main" in cmdline:
                out.append(k)
        return out


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie no longer does)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_serve(routes: Path, index: Path, config: Path, log: Path, *extra: str,
                workers: int = 1, timeout: float = 180.0, own_group: bool = False) -> Served:
    """Start `semroute serve` and wait until every worker has loaded its router (uvicorn logs
    "Application startup complete." once per server, after the lifespan). `own_group`: in a
    process group of its own, as a terminal would start it (for Ctrl-C: `os.killpg`)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SEMROUTE_REDIS_URL"}
    env["PYTHONPATH"] = str(REPO)
    args = ["--workers", str(workers)] if workers > 1 else []
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "semroute.cli", "serve", "--routes",
                                 str(routes), "--index", str(index), "--port", str(port),
                                 "--config", str(config), *args, *extra],
                                cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
                                text=True, process_group=0 if own_group else None)
    served = Served(proc, port, log)
    deadline = time.monotonic() + timeout
    while served.text().count("Application startup complete.") < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            kill(served)
            raise RuntimeError(f"semroute serve did not start:\n{served.text()[-3000:]}")
        time.sleep(0.1)
    return served


def kill(served: Served) -> None:
    """Leave nothing behind (a test's `finally`): SIGKILL the process and its children."""
    for pid in [*served.children(), served.proc.pid]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    served.proc.wait(timeout=30)


def serving_pid(response: object, port: int, pids: list[int]) -> int:
    """The process holding the server side of the connection an httpx2 response came on:
    the client's port → the socket in /proc/net/tcp → the process with that fd."""
    stream = response.extensions["network_stream"]  # type: ignore[attr-defined]
    client_port = stream.get_extra_info("client_addr")[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and int(f[2].split(":")[1], 16) == client_port:
            inode = f[9]
    assert inode is not None, f"no server socket for client port {client_port}"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no process of {pids} holds socket {inode}")


def wait_for_text(served: Served, text: str, count: int = 1, timeout: float = 60.0) -> None:
    """Poll the log until `text` appears `count` times."""
    deadline = time.monotonic() + timeout
    while served.text().count(text) < count:
        assert time.monotonic() < deadline, \
            f"{text!r} x{count} not logged:\n{served.text()[-3000:]}"
        time.sleep(0.1)
