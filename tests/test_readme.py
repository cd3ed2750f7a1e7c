"""The README's Python examples are part of the contract: each ```python block runs, as
written, against the example routes and the `local` profile (a real llama-server), so an
example that breaks fails CI."""

from __future__ import annotations

import ast
import asyncio
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from semroute.index import build_index
from tests.support.llm_server import LLMServer

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of the README."""
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_the_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 2


@pytest.fixture(scope="module")
def readme_workdir(tmp_path_factory: pytest.TempPathFactory, llm_server: LLMServer) -> Path:
    """A copy of the example routes whose `local` profile points at the test's llama-server."""
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "routes", work / "routes")
    catalogue = work / "routes" / "models.yaml"
    text = catalogue.read_text()
    assert "127.0.0.1:8088" in text, "the local profile's address moved; update this test"
    catalogue.write_text(text.replace("127.0.0.1:8088", f"127.0.0.1:{llm_server.port}"))
    build_index(work / "routes", work / "indexes" / "default")  # blocks may run alone (-k)
    return work


def run_block(code: str, cwd: Path) -> dict[str, Any]:
    """Execute one example in `cwd`; top-level `await` is allowed, as in a notebook."""
    tree = compile(textwrap.dedent(code), "README.md", "exec",
                   flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": "__readme__"}

    async def main() -> None:
        result = eval(tree, namespace)  # the README's own code
        if asyncio.iscoroutine(result):
            await result

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        asyncio.run(main())
    return namespace


@pytest.mark.parametrize(("line", "code"), python_blocks(),
                         ids=[f"README.md:{line}" for line, _ in python_blocks()])
def test_readme_example_runs(line: int, code: str, readme_workdir: Path) -> None:
    try:
        run_block(code, readme_workdir)
    except Exception as exc:  # say which example broke, and where
        raise AssertionError(f"the README example at line {line} fails: "
                             f"{type(exc).__name__}: {exc}") from exc
