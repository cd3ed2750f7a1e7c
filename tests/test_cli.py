"""The `semroute` command: JSON output is complete, errors are readable and exit non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from semroute.cli import main

DECISION_FIELDS = {"query", "route", "method", "score", "margin", "threshold",
                   "margin_threshold", "reason", "candidates", "timings_ms", "truncated",
                   "classifier", "total_ms"}


def test_route_json_parses_and_has_every_field(example_routes: Path, example_index: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["route", "--routes", str(example_routes), "--index", str(example_index),
               "--json", "how do I reverse a linked list"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) >= DECISION_FIELDS
    c = d["candidates"][0]
    assert {"route", "score", "neighbours"} <= set(c)
    assert {"text", "similarity"} <= set(c["neighbours"][0])


def test_route_prints_a_readable_table(example_routes: Path, example_index: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    main(["route", "--routes", str(example_routes), "--index", str(example_index),
          "write a haiku about autumn", "fix my segfault"])
    out = capsys.readouterr().out
    assert out.count("route ") >= 2 and "margin" in out and "nearest utterances" in out


def test_routes_lists_routes_and_models(example_routes: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "--routes", str(example_routes)]) == 0
    out = capsys.readouterr().out
    assert "code_generation" in out and "anthropic:" in out


def test_build_error_exits_2_with_the_file_named(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "models.yaml").write_text("profiles: {p: {}}\n")
    (tmp_path / "x.yaml").write_text("name: x\n")
    assert main(["build", "--routes", str(tmp_path), "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err
    assert "x.yaml" in err and "field 'utterances'" in err


def test_console_script_runs_in_a_fresh_process(example_routes: Path,
                                                example_index: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "semroute.cli.app", "route", "--json", "--routes",
         str(example_routes), "--index", str(example_index), "hello there"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["candidates"]


def test_chat_survives_a_stream_that_breaks_after_text(tmp_path: Path) -> None:
    """A stream cut after two chunks prints an error and the chat goes on to the next turn."""
    from tests.dispatch_support import SseServer, entry, shared_index, write_set

    server = SseServer(["error_mid", "ok"])
    try:
        index = shared_index(tmp_path / "built")
        routes = write_set(tmp_path / "routes", {"m": entry("openai", server.base_url)}, ["m"])
        proc = subprocess.run(
            [sys.executable, "-m", "semroute.cli", "chat", "--routes", str(routes), "--index",
             str(index), "--no-trace"],
            input="hello there\nhello again\n/quit\n", capture_output=True, text=True,
            timeout=120)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "injected stream fault" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Hello from the stream." in proc.stdout  # the second turn was answered
