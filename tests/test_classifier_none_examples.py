"""When the route set has out-of-scope examples and `Classifier.none_examples` is on, the
fallback classifier's prompt shows those nearest the query as examples of `none` (found with
the index's one search), and says so in the ClassifierCall; without any (or off, the
default), the prompt is exactly what it was before."""

from __future__ import annotations

from pathlib import Path

import pytest

from semroute.index import build_index
from semroute.routing import Router
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import load, write_set

UNDECIDED = {"margin_threshold": 1.5}  # no margin reaches it: every query goes to the classifier
OOS = ["what's the weather in paris today", "book me a flight to rome",
       "what is the capital of peru", "play some jazz music", "how tall is mount everest"]
QUERY = "will it rain in paris tomorrow"
# The prompt as it was before out-of-scope examples could be shown (routing/classifier.py).
HEAD = ("You are a request router. Read the user's message and choose the ONE handler below "
        "that should answer it. Reply with the handler's name only. Reply none when the "
        "message fits none of the handlers.\n\nHandlers:\n")
TAIL = "\n- none: the message fits none of the handlers above."


def router_for(root: Path, url: str, *, oos: bool) -> Router:
    """TINY_ROUTES (with `oos.txt` as the out-of-scope file when `oos`), index built, the
    classifier pointed at `url`."""
    models = {"clf": {"provider": "openai", "model": "c", "base_url": url},
              "m": {"provider": "openai", "model": "x"}}
    extra = {"oos_examples": "oos.txt"} if oos else {}
    routes = write_set(root / "routes", models, ["m"], classifier_model="clf", **UNDECIDED,
                       **extra)
    if oos:
        (routes / "oos.txt").write_text("".join(f"{t}\n" for t in OOS))
    build_index(routes, root / "index")
    return load(routes, root / "index")


def system_of(body: dict[str, object]) -> str:
    messages = body["messages"]
    assert isinstance(messages, list)
    content = messages[0]["content"]
    assert isinstance(content, str)
    return content


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {k: tmp_path_factory.mktemp(k) for k in ("with_oos", "without_oos")}


def test_none_shows_the_out_of_scope_examples_nearest_the_query(
        roots: dict[str, Path], fault_server: MakeFaultServer) -> None:
    server = fault_server([200, 200], reply_text='{"label": "none"}')
    router = router_for(roots["with_oos"], server.openai_base_url, oos=True)
    assert router.classifier is not None and router.classifier.none_examples == 0  # off
    router.classifier.none_examples = 3
    d = router.route(QUERY)
    near = [n.text for n in d.oos_neighbours]
    sims = [n.similarity for n in d.oos_neighbours]
    assert near[0] == "what's the weather in paris today" and len(near) == 3
    assert sims == sorted(sims, reverse=True)
    system = system_of(server.bodies[0])
    shown = "; ".join(f'"{t}"' for t in near)
    assert system.endswith(f"{TAIL} Examples: {shown}"), system
    assert d.classifier is not None and d.classifier.none_examples == tuple(near)
    assert d.to_dict()["classifier"]["none_examples"] == near  # traced with the decision
    assert d.route == "greet" and "the classifier chose none" in d.reason

    router.classifier.none_examples = 0  # switched off: the prompt is the old one again
    router.classifier.clear_cache()
    router.route(QUERY)
    assert system_of(server.bodies[1]).endswith(TAIL)


def test_without_out_of_scope_examples_the_prompt_is_unchanged(
        roots: dict[str, Path], fault_server: MakeFaultServer) -> None:
    server = fault_server([200, 200], reply_text='{"label": "none"}')
    plain = router_for(roots["without_oos"], server.openai_base_url, oos=False)
    assert plain.classifier is not None
    plain.classifier.none_examples = 3  # on, but there is nothing to show
    d = plain.route(QUERY)
    assert d.oos_neighbours == () and d.classifier is not None
    assert d.classifier.none_examples == ()
    system = system_of(server.bodies[0])
    assert system.startswith(HEAD) and system.endswith(TAIL)
    handlers = system[len(HEAD):-len(TAIL)]
    assert handlers.count("\n- ") == 1 and "none" not in handlers  # code and greet only
    # the same routes with out-of-scope examples, off by default: the old prompt's shape
    with_oos = router_for(roots["with_oos"], server.openai_base_url, oos=True)
    assert with_oos.classifier is not None  # none_examples left at its default: off
    d = with_oos.route(QUERY)
    assert d.oos_neighbours and d.classifier is not None and d.classifier.none_examples == ()
    other = system_of(server.bodies[1])
    assert other.startswith(HEAD) and other.endswith(TAIL) and "paris" not in other
