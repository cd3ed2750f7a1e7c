"""`semroute augment`: the configured model writes paraphrases of a thin route; bullets and
quotes are cleaned off, personal data, repeats, drifted paraphrases (the index sends them to
another route) and near duplicates are left out, and what remains is a patch that `--write`
applies and `semroute build` accepts. Real encoder and FAISS; the model is a loopback server
with a scripted answer, and once the real local llama-server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.cli import main
from semroute.config import load_routes
from semroute.errors import SemrouteError
from semroute.index import build_index
from semroute.quality.augmenting import augment, augment_prompt, parse_lines
from semroute.routing import Router
from tests.conftest import TINY_ROUTES
from tests.conftest_llm import MakeFaultServer
from tests.support.llm_server import LLMServer

SCRIPTED = """Here are some messages:
1. good evening, how have you been?
2) "howdy partner, lovely day isn't it"
- write a python function to reverse a string
* hi there
- hello, how are you
- drop me a line at jo@example.com to say hi
- hey hey, long time no see!
"""


def write_set(folder: Path, base_url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, spec in TINY_ROUTES.items():
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "models.yaml").write_text(yaml.safe_dump({
        "profile": "test",
        "profiles": {"test": {"fast": {"provider": "openai", "model": "local",
                                       "base_url": base_url, "timeout": 60,
                                       "input_price": 1.0, "output_price": 2.0}}},
        "router": {"default_route": "greet", "classifier_model": "fast"}}, sort_keys=False))
    return folder


@pytest.fixture
def scripted(tmp_path: Path, fault_server: MakeFaultServer) -> tuple[Path, Path, Any]:
    server = fault_server([200], reply_text=SCRIPTED)
    routes = write_set(tmp_path / "routes", server.openai_base_url)
    build_index(routes, tmp_path / "index")
    return routes, tmp_path / "index", server


def test_lines_lose_bullets_numbers_and_wrapping_quotes() -> None:
    texts, dropped = parse_lines('Sure, here they are:\n1. one thing\n2) "two things"\n'
                                 '- three\n\n* \n(4) four\n' + "x" * 400)
    assert texts == ["one thing", "two things", "three", "four"]
    assert dropped == {"preamble": 1, "empty": 1, "too_long": 1}


def test_the_prompt_shows_the_route_its_examples_and_the_routes_to_avoid(
        scripted: tuple[Path, Path, Any]) -> None:
    routes = load_routes(scripted[0])
    greet, code = (next(r for r in routes.routes if r.name == n) for n in ("greet", "code"))
    prompt = augment_prompt(greet, [code], 7)
    assert "Intent 'greet': Greetings and small talk." in prompt
    assert "- good morning friend" in prompt
    assert "- code: Writing code." in prompt and "Write 7 new messages" in prompt


def test_only_new_on_topic_paraphrases_become_utterances(
        scripted: tuple[Path, Path, Any]) -> None:
    routes, index, _ = scripted
    router = Router.load(routes, index, classifier=False)
    calls: list[tuple[str, str]] = []

    def ask(model: str, system: str, prompt: str) -> tuple[str, float, str | None]:
        calls.append((model, prompt))
        return SCRIPTED, 0.001, "req-1"

    found = augment(router, ["greet"], ask, model="fast", n=8, per_route=5)
    (greet,) = found.routes
    added = [p.text for p in greet.proposals]
    assert calls and calls[0][0] == "fast"
    assert "good evening, how have you been?" in added
    assert "howdy partner, lovely day isn't it" in added
    assert "hey hey, long time no see!" in added
    assert [d.text for d in greet.drifted] == ["write a python function to reverse a string"]
    assert greet.drifted[0].index_route == "code"
    assert greet.dropped["duplicate"] == 2  # "hi there", "hello, how are you"
    assert greet.dropped["personal_data"] == 1
    assert not any("@" in t for t in added)
    diff = found.patch.diff()
    assert "+- good evening, how have you been?" in diff and "jo@example.com" not in diff
    assert "Here are some messages" not in diff


def test_unknown_routes_are_named(scripted: tuple[Path, Path, Any]) -> None:
    routes, index, _ = scripted
    router = Router.load(routes, index, classifier=False)
    with pytest.raises(SemrouteError, match=r"no route named 'billing'.*routes: code, greet"):
        augment(router, ["billing"], lambda *a: ("", 0.0, None), model="fast")


def test_cli_asks_the_configured_model_and_writes_only_with_write(
        scripted: tuple[Path, Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    routes, index, server = scripted
    before = (routes / "greet.yaml").read_text()
    assert main(["augment", "greet", "--routes", str(routes), "--index", str(index)]) == 0
    out = capsys.readouterr().out
    assert "+- good evening, how have you been?" in out
    assert "drifted, not added: 'write a python function to reverse a string'" in out
    assert (routes / "greet.yaml").read_text() == before  # nothing written without --write
    body = server.bodies[-1]
    assert body["model"] == "local" and "Intent 'greet'" in body["messages"][-1]["content"]
    assert body.get("temperature") == 0.9

    assert main(["augment", "--thin", "6", "--routes", str(routes), "--index", str(index),
                 "--write", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {r["route"] for r in report["routes"]} == {"greet", "code"}
    greet = load_routes(routes).route("greet")
    assert "good evening, how have you been?" in greet.utterances
    build_index(routes, index)  # the patched set builds


def test_cli_with_the_real_local_model_gives_a_valid_patch(
        tmp_path: Path, llm_server: LLMServer, capsys: pytest.CaptureFixture[str]) -> None:
    routes = write_set(tmp_path / "routes", llm_server.openai_base_url)
    build_index(routes, tmp_path / "index")
    out = tmp_path / "augment.patch"
    assert main(["augment", "code", "--routes", str(routes), "--index", str(tmp_path / "index"),
                 "--n", "6", "--out", str(out), "--write"]) == 0
    text = capsys.readouterr().out
    assert "code: the model 'fast' wrote" in text
    load_routes(routes)  # whatever the small model wrote, the route files still load
    assert out.is_file()
