"""`lint` finds planted problems (cross-route near-duplicate, misplaced utterance, tiny route,
alike utterances, short description), names file, route and utterance, and sets exit codes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.cli import main
from semroute.config import load_routes
from semroute.errors import StaleIndexError
from semroute.index import RouteIndex, build_index
from semroute.quality import LintFinding, lint, lint_dir
from tests.conftest import CATALOGUE, WriteRoutes

DUP_BILLING = "why was I charged twice on my invoice"
DUP_SHIPPING = "why was I charged twice on my invoice?"
MISPLACED = "how do I update the payment card for my invoices and bills"

PLANTED: dict[str, dict[str, Any]] = {
    "billing": {"name": "billing", "model": "fast",
                "description": "Invoices, charges, payment methods and billing questions.",
                "utterances": [DUP_BILLING, "update the credit card on my account",
                               "I need a copy of last month's invoice",
                               "what payment methods do you accept",
                               "my card was declined when paying the bill",
                               "how do I change my billing address",
                               "can I pay annually instead of monthly",
                               "explain the extra fee on my statement",
                               "when will I be billed next", "I was overcharged this month"]},
    "shipping": {"name": "shipping", "model": "fast",
                 "description": "Delivery times, tracking and shipping of orders.",
                 "utterances": ["where is my package", "how long does delivery take",
                                "track my order", "my parcel has not arrived yet",
                                "do you ship internationally",
                                "can I change the delivery address",
                                "the courier left my box at the wrong house",
                                "what are the shipping costs to canada", DUP_SHIPPING,
                                MISPLACED]},
    "refunds": {"name": "refunds", "model": "fast", "description": "Refunds.",
                "utterances": ["I want my money back", "how do I get a refund",
                               "refund my last order"]},
    "password": {"name": "password", "model": "fast",
                 "description": "Resetting or changing the account password.",
                 "utterances": ["reset my password", "reset my password please",
                                "please reset my password", "I need to reset my password",
                                "can you reset my password", "help me reset my password",
                                "reset password", "password reset please",
                                "I want to reset my password", "how to reset my password"]},
}


def torch_catalogue() -> dict[str, Any]:
    cat = copy.deepcopy(CATALOGUE)
    cat["router"]["backend"] = "torch"
    return cat


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lint")
    routes = root / "routes"
    routes.mkdir()
    for stem, spec in PLANTED.items():
        (routes / f"{stem}.yaml").write_text(yaml.safe_dump(spec))
    cat = torch_catalogue()
    cat["router"]["default_route"] = "billing"
    (routes / "models.yaml").write_text(yaml.safe_dump(cat))
    build_index(routes, root / "index")
    return routes, root / "index"


@pytest.fixture(scope="module")
def findings(planted: tuple[Path, Path]) -> list[LintFinding]:
    routes, index = planted
    return lint_dir(routes, index)


def test_cross_route_near_duplicate_is_an_error_with_both_texts(
        findings: list[LintFinding]) -> None:
    dups = [f for f in findings if "near-duplicate" in f.message]
    assert len(dups) == 1
    f = dups[0]
    assert f.level == "error"
    assert (Path(f.file).name, f.route, f.utterance) == ("billing.yaml", "billing", DUP_BILLING)
    assert repr(DUP_SHIPPING) in f.message and "'shipping'" in f.message
    assert "shipping.yaml" in f.message and "similarity 0.9" in f.message


def test_misplaced_utterance_names_the_other_route(findings: list[LintFinding]) -> None:
    f = next(f for f in findings if f.utterance == MISPLACED)
    assert f.level == "warning" and f.route == "shipping"
    assert Path(f.file).name == "shipping.yaml"
    assert "closer to route 'billing'" in f.message and "leave-one-out" in f.message


def test_route_level_findings(findings: list[LintFinding]) -> None:
    by = {(f.route, f.level, f.message.split(" ")[0]) for f in findings if f.utterance is None}
    assert ("refunds", "error", "only") in by                  # 3 utterances
    assert ("refunds", "warning", "description") in by         # 8 characters
    assert ("password", "warning", "utterances") in by         # too alike
    assert not any(f.route == "billing" and f.utterance is None for f in findings)
    assert [f.level for f in findings] == sorted(f.level for f in findings)  # errors first


def test_format_is_file_route_utterance_why(planted: tuple[Path, Path],
                                            findings: list[LintFinding]) -> None:
    routes, _ = planted
    f = next(f for f in findings if f.utterance == MISPLACED)
    assert f.format() == f"{routes / 'shipping.yaml'}: shipping: {MISPLACED!r}: warning: " \
        + f.message
    tiny = next(f for f in findings if f.route == "refunds" and f.level == "error")
    assert tiny.format() == f"{routes / 'refunds.yaml'}: refunds: error: only 3 " \
        "utterance(s); give at least 10 varied ways users ask"


def test_thresholds_are_adjustable(planted: tuple[Path, Path]) -> None:
    routes, index = planted
    rs = load_routes(routes)
    loose = lint(rs, RouteIndex.load(index, rs), near_dup=0.999)
    assert not any("near-duplicate" in f.message for f in loose)


def test_cli_lint_exits_1_on_errors(planted: tuple[Path, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    routes, index = planted
    assert main(["lint", "--routes", str(routes), "--index", str(index)]) == 1
    captured = capsys.readouterr()
    assert f"billing.yaml: billing: {DUP_BILLING!r}: error: near-duplicate" in captured.out
    assert "2 error(s)" in captured.err


def test_cli_lint_warnings_pass_unless_strict(write_routes: WriteRoutes, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    routes = write_routes(catalogue=torch_catalogue())  # two 5-utterance routes: warnings only
    build_index(routes, tmp_path / "index")
    args = ["lint", "--routes", str(routes), "--index", str(tmp_path / "index")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "greet.yaml: greet: warning: only 5 utterance(s)" in out
    assert main([*args, "--strict"]) == 1


def test_lint_refuses_a_stale_index(write_routes: WriteRoutes, tmp_path: Path,
                                    planted: tuple[Path, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    routes = write_routes(catalogue=torch_catalogue())
    _, index = planted
    with pytest.raises(StaleIndexError):
        lint_dir(routes, index)
    assert main(["lint", "--routes", str(routes), "--index", str(index)]) == 2
    assert "semroute build" in capsys.readouterr().err
