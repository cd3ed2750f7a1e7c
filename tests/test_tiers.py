"""Outcome-learned tiers: a route's ladder picks, per query, the cheapest model its nearest
outcome records predict to clear the target.

- the cheap model serves queries whose neighbours it handled, the strong one the others;
- too few neighbours, or no outcomes store, and the route's static `model` serves, and the
  Decision's reason says why;
- the Decision's `tier`, its `tiers` timing, the trace's `tier` (text hashes, never text) and
  `semroute route` show the choice; dispatch puts the chosen model first in the chain;
- with `router.outcomes.record`, a cascade's gate verdicts land in the store in the
  background, and a failing store never costs the answer;
- `semroute outcomes fit` sets the target for an exact share of strong calls;
- ladder config errors name the file, the route and the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from semroute.cli.app import main
from semroute.config import load_routes
from semroute.dispatching import Dispatcher
from semroute.encoders import Fingerprint
from semroute.errors import ConfigError
from semroute.outcomes import (
    KnnSettings,
    OutcomeRecord,
    OutcomeStore,
    QualityPredictor,
    TierPredictor,
    import_file,
    text_features,
    text_hash,
)
from semroute.quality.tier_fit import HeldOut, fit_target, outcome_at, target_for_share
from semroute.routing import Router
from semroute.telemetry import read_trace
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import entry, shared_index, write_set

LADDER = {"models": ["cheap", "strong"], "target": 0.8, "min_support": 5}
CODE_QUERY = "write a python function to reverse a string"
MATH_QUERY = "what is 37 times 12 plus 5, minus 3 percent?"
VERBS = ["sort", "reverse", "merge", "split", "parse", "filter", "flatten", "dedupe"]
THINGS = ["list", "string", "dictionary", "linked list", "json file", "csv table",
          "binary tree", "set of words", "log file", "queue", "matrix", "url"]
LANGS = ["python", "javascript", "rust", "go"]


def outcome_csv(path: Path) -> Path:
    """A long-form outcome file: the cheap model gets coding requests right and arithmetic
    word problems wrong; the strong model gets both right. 192 + 120 texts."""
    rows = ["text,model,score"]
    code = [f"write a {lang} function to {v} a {t}" for lang in LANGS for v in VERBS
            for t in THINGS[:6]]
    math = [f"what is {a} times {b} plus {c}?" for a in (12, 23, 34, 45, 56, 67)
            for b in (3, 7, 11, 13, 17) for c in (2, 9, 14, 31)]
    for text in code:
        rows += [f"{text},cheap,1", f"{text},strong,1"]
    for text in math:
        rows += [f"{text},cheap,0", f"{text},strong,1"]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("tiers"))


@pytest.fixture(scope="module")
def store_file(index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The outcome file imported with the index's encoder (as `outcomes import` does)."""
    folder = tmp_path_factory.mktemp("store")
    routes = write_set(folder / "routes", {"m": {"provider": "openai", "model": "x"}}, ["m"])
    router = Router.load(routes, index, classifier=False)
    with OutcomeStore(folder / "outcomes.db") as store:
        import_file(store, outcome_csv(folder / "outcomes.csv"), router.matcher.encoder)
    return folder / "outcomes.db"


def models(cheap: str = "http://127.0.0.1:9", strong: str = "http://127.0.0.1:9",
           ) -> dict[str, dict[str, Any]]:
    return {"cheap": entry("openai", cheap, input_price=0.1, output_price=0.4),
            "strong": entry("openai", strong, input_price=5.0, output_price=15.0)}


def tiered_set(directory: Path, store: Path, *, ladder: dict[str, Any] | None = None,
               chain: list[str] | None = None, **router: Any) -> Path:
    """TINY_ROUTES, every route's static model `strong`, `router.ladder` = LADDER."""
    outcomes = {"path": str(store), **router.pop("outcomes", {})}
    return write_set(directory, router.pop("models", None) or models(), chain or ["strong"],
                     ladder=ladder or LADDER, outcomes=outcomes, **router)


def test_the_cheap_model_serves_queries_its_neighbours_show_it_handles(
        tmp_path: Path, index: Path, store_file: Path) -> None:
    router = Router.load(tiered_set(tmp_path / "r", store_file), index, classifier=False)
    code, math = router.route(CODE_QUERY), router.route(MATH_QUERY)
    assert code.tier is not None and math.tier is not None
    assert (code.tier.chosen, code.tier.learned) == ("cheap", True)
    assert code.tier.quality["cheap"] >= 0.8 > math.tier.quality["cheap"]
    assert (math.tier.chosen, math.tier.learned) == ("strong", True)
    assert "no model is predicted to reach target 0.8" not in math.tier.reason
    assert "'strong' is predicted" in math.tier.reason and "cheaper 'cheap'" in math.tier.reason
    assert code.tier.support == {"cheap": 50.0, "strong": 50.0}  # k = 50 neighbours, all scored
    assert code.tier.target_source == "router.ladder"
    near = code.tier.neighbours
    assert len(near) == 5 and all(re.fullmatch(r"[0-9a-f]{64}", n.text_hash) for n in near)
    assert near[0].similarity >= near[-1].similarity
    assert "tiers" in code.timings_ms and router.tiers is not None
    assert "feature line + kNN" in router.tiers.status


def test_rule_and_async_decisions_get_their_tier_too(tmp_path: Path, index: Path,
                                                     store_file: Path) -> None:
    routes = tiered_set(tmp_path / "r", store_file)
    code = routes / "code.yaml"
    spec = yaml.safe_load(code.read_text())
    code.write_text(yaml.safe_dump({**spec, "rules": [{"name": "py", "any": ["python"]}]}))
    router = Router.load(routes, index, classifier=False)
    ruled = router.route(CODE_QUERY)
    assert ruled.method == "rule" and ruled.tier is not None and ruled.tier.chosen == "cheap"
    later = asyncio.run(router.aroute(MATH_QUERY))
    assert later.tier is not None and later.tier.chosen == "strong"


def test_a_ladder_no_model_clears_serves_its_strongest(tmp_path: Path, index: Path,
                                                       store_file: Path) -> None:
    strict = {**LADDER, "models": ["cheap", "strong"], "target": 1.0}
    router = Router.load(tiered_set(tmp_path / "r", store_file, ladder=strict, chain=["cheap"]),
                         index, classifier=False)
    d = router.route(MATH_QUERY)
    assert d.tier is not None and d.tier.chosen == "strong"


def test_too_few_neighbours_serve_the_static_model(tmp_path: Path, index: Path,
                                                   store_file: Path) -> None:
    router = Router.load(tiered_set(tmp_path / "r", store_file,
                                    ladder={**LADDER, "min_support": 500}), index,
                         classifier=False)
    d = router.route(CODE_QUERY)
    assert d.tier is not None
    assert (d.tier.chosen, d.tier.learned) == ("strong", False)
    assert "too few neighbours" in d.tier.reason and "min_support 500" in d.tier.reason
    assert d.tier.quality  # the predictions are still shown


def test_without_an_outcomes_store_the_static_model_serves_and_the_reason_says_so(
        tmp_path: Path, index: Path) -> None:
    router = Router.load(tiered_set(tmp_path / "r", tmp_path / "none.db"), index,
                         classifier=False)
    d = router.route(CODE_QUERY)
    assert d.tier is not None
    assert (d.tier.chosen, d.tier.learned) == ("strong", False)
    assert "tiers inactive: no outcomes store at" in d.tier.reason
    assert d.to_dict()["tier"]["reason"] == d.tier.reason


def test_a_store_without_these_models_leaves_the_tiers_inactive(tmp_path: Path, index: Path,
                                                                store_file: Path) -> None:
    other = {"cheap": models()["cheap"], "strong": models()["strong"],
             "other": entry("openai", "http://127.0.0.1:9")}
    routes = tiered_set(tmp_path / "r", store_file, models=other,
                        ladder={**LADDER, "models": ["other", "strong"]})
    with OutcomeStore(store_file) as s:
        assert s.count(model="other") == 0
    d = Router.load(routes, index, classifier=False).route(CODE_QUERY)
    assert d.tier is not None and d.tier.learned  # 'strong' has records: only 'other' lacks
    assert d.tier.support["other"] == 0.0 and d.tier.chosen == "strong"


def test_records_added_without_features_keep_the_feature_line(tmp_path: Path, index: Path,
                                                              store_file: Path) -> None:
    store = tmp_path / "outcomes.db"
    store.write_bytes(store_file.read_bytes())
    routes = tiered_set(tmp_path / "r", store)
    router = Router.load(routes, index, classifier=False)
    query = "write a kotlin function to rotate an image"
    vec = router.matcher.cache.encode([query])[0][0]
    with OutcomeStore(store) as s:  # e.g. user feedback, stored without features
        s.add(OutcomeRecord(text_hash=text_hash(query), model="cheap", score=1.0,
                            source="feedback"), vector=vec,
              fingerprint=Fingerprint.of(router.matcher.encoder))
    tiers = Router.load(routes, index, classifier=False).tiers
    assert tiers is not None and len(tiers.text_hashes) == 313
    assert "feature line + kNN, 1 texts without stored features given the mean" in tiers.status


def test_dispatch_serves_the_chosen_model_first_and_traces_the_tier(
        tmp_path: Path, index: Path, store_file: Path, fault_server: MakeFaultServer) -> None:
    cheap, strong = fault_server([200], reply_text="cheap says"), \
        fault_server([200], reply_text="strong says")
    routes = tiered_set(tmp_path / "r", store_file, models=models(cheap.base_url,
                                                                  strong.base_url))
    d = Dispatcher(Router.load(routes, index, classifier=False), trace=tmp_path / "t.jsonl")
    r1, r2 = d.dispatch(CODE_QUERY), d.dispatch(MATH_QUERY)
    assert (r1.model_key, r1.text) == ("cheap", "cheap says")
    assert (r2.model_key, r2.text) == ("strong", "strong says")
    t1, t2 = read_trace(tmp_path / "t.jsonl")
    assert t1["tier"]["chosen"] == "cheap" and t2["tier"]["chosen"] == "strong"
    assert set(t1["tier"]) >= {"ladder", "target", "target_source", "quality", "support",
                               "neighbours", "reason", "min_support"}
    assert "route.tiers" in t1["latency_ms"]
    dumped = json.dumps(t1)
    assert CODE_QUERY not in dumped and "python function" not in dumped  # hashes, no text


def test_a_failing_cheap_model_fails_over_along_the_route_chain(
        tmp_path: Path, index: Path, store_file: Path, fault_server: MakeFaultServer) -> None:
    broken, strong = fault_server([500]), fault_server([200], reply_text="strong says")
    routes = tiered_set(tmp_path / "r", store_file, models=models(broken.base_url,
                                                                  strong.base_url))
    r = Dispatcher(Router.load(routes, index, classifier=False)).dispatch(CODE_QUERY)
    assert r.decision.tier is not None and r.decision.tier.chosen == "cheap"
    assert r.model_key == "strong" and r.attempts[0].model_key == "cheap"


def test_budgets_may_still_downgrade_the_tier(tmp_path: Path, index: Path, store_file: Path,
                                             fault_server: MakeFaultServer) -> None:
    cheap, strong = fault_server([200], reply_text="cheap says"), \
        fault_server([200], reply_text="strong says")
    routes = tiered_set(tmp_path / "r", store_file, models=models(cheap.base_url,
                                                                  strong.base_url))
    r = Dispatcher(Router.load(routes, index, classifier=False)).dispatch(
        MATH_QUERY, max_cost_usd=0.001)  # 'strong' is bounded at ~$0.008, 'cheap' fits
    assert r.decision.tier is not None and r.decision.tier.chosen == "strong"
    assert r.model_key == "cheap" and r.budget is not None
    assert (r.budget["from_model"], r.budget["to_model"]) == ("strong", "cheap")


def test_semroute_route_shows_the_tier(tmp_path: Path, index: Path, store_file: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    routes = tiered_set(tmp_path / "r", store_file)
    assert main(["route", "--routes", str(routes), "--index", str(index), CODE_QUERY]) == 0
    out = capsys.readouterr().out
    assert "tier    cheap  (ladder cheap < strong; target 0.8 from router.ladder)" in out
    assert "cheap: predicted" in out and "nearest outcomes:" in out
    assert main(["routes", "--routes", str(routes)]) == 0
    assert "(ladder: cheap < strong; target 0.8, router.ladder)" in capsys.readouterr().out


# ---------------------------------------------------------------- recording gate outcomes

CASCADE = {"models": ["cheap", "strong"], "gates": ["not_refusal"]}


def cascade_set(directory: Path, store: Path, cheap_url: str, strong_url: str) -> Path:
    routes = write_set(directory, models(cheap_url, strong_url), ["strong"],
                       outcomes={"path": str(store), "record": True})
    for f in routes.glob("*.yaml"):
        if f.name != "models.yaml":
            data = yaml.safe_load(f.read_text())
            f.write_text(yaml.safe_dump({**data, "cascade": CASCADE}))
    return routes


def test_cascade_gate_verdicts_land_in_the_outcomes_store(
        tmp_path: Path, index: Path, fault_server: MakeFaultServer) -> None:
    refusing = fault_server([200], reply_text="I'm sorry, but I can't help with that.")
    strong = fault_server([200], reply_text="def rev(s): return s[::-1]")
    store = tmp_path / "live.db"
    d = Dispatcher(Router.load(cascade_set(tmp_path / "r", store, refusing.base_url,
                                           strong.base_url), index, classifier=False))
    r = d.dispatch(CODE_QUERY)
    assert r.model_key == "strong" and d.recorder is not None
    d.recorder.join()
    assert (d.recorder.written, d.recorder.failed) == (1, 0)
    with OutcomeStore(store) as s:
        (rec,) = s.records()
        assert (rec.model, rec.score, rec.source) == ("cheap", 0.0, "gate")
        assert rec.route == r.decision.route and rec.request_id == r.request_id
        assert rec.text_hash == text_hash(CODE_QUERY)
        encoder = d.router.matcher.encoder
        hashes, vecs = s.vectors(Fingerprint.of(encoder))
        assert hashes == [rec.text_hash] and vecs.shape == (1, encoder.dim)
        assert not np.isnan(s.features(hashes)).any()


def test_an_accepted_cheap_answer_scores_one(tmp_path: Path, index: Path,
                                             fault_server: MakeFaultServer) -> None:
    cheap = fault_server([200], reply_text="def rev(s): return s[::-1]")
    store = tmp_path / "live.db"
    d = Dispatcher(Router.load(cascade_set(tmp_path / "r", store, cheap.base_url,
                                           "http://127.0.0.1:9"), index, classifier=False))
    assert d.dispatch(CODE_QUERY).model_key == "cheap"
    assert d.recorder is not None
    d.recorder.join()
    with OutcomeStore(store) as s:
        assert [(r.model, r.score, r.source) for r in s.records()] == [("cheap", 1.0, "gate")]


def test_a_failing_store_never_costs_the_answer(tmp_path: Path, index: Path,
                                                fault_server: MakeFaultServer,
                                                caplog: pytest.LogCaptureFixture) -> None:
    cheap = fault_server([200], reply_text="def rev(s): return s[::-1]")
    store = tmp_path / "no such folder" / "live.db"
    d = Dispatcher(Router.load(cascade_set(tmp_path / "r", store, cheap.base_url,
                                           "http://127.0.0.1:9"), index, classifier=False))
    with caplog.at_level(logging.WARNING, logger="semroute.dispatching.recording"):
        r = d.dispatch(CODE_QUERY)
        assert d.recorder is not None
        d.recorder.join()
    assert r.text == "def rev(s): return s[::-1]"
    assert (d.recorder.written, d.recorder.failed) == (0, 1)
    assert "the answer was served, the outcome is lost" in caplog.text


# ---------------------------------------------------------------- the predictor and the fit

def test_the_stored_feature_line_predicts_exactly_what_the_predictor_does_from_texts() -> None:
    rng = np.random.default_rng(0)
    texts = [f"what is {i} plus {i * 7}? and {'x' * (i % 9)}" for i in range(120)]
    vecs = rng.normal(size=(120, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = rng.uniform(size=(120, 2))
    scores[rng.uniform(size=120) < 0.2, 0] = np.nan
    for st in (KnnSettings(), KnnSettings(k=20, prior=2.0, temperature=0.1)):
        ref = QualityPredictor(vecs[:100], scores[:100], ("a", "b"), texts=texts[:100],
                               settings=st).predict(vecs[100:], texts[100:])
        ours = TierPredictor.build(vecs[:100], scores[:100], text_features(texts[:100]),
                                   ("a", "b"), st).predict(vecs[100:], text_features(texts[100:]))
        np.testing.assert_allclose(ours.quality, ref.quality, atol=1e-9)
        np.testing.assert_allclose(ours.support, ref.support)


def test_fit_hits_the_wanted_strong_share_exactly_on_a_known_table() -> None:
    rng = np.random.default_rng(1)
    cheap = rng.uniform(size=200)
    h = HeldOut(np.column_stack([cheap, np.full(200, 0.9)]),
                np.column_stack([(cheap > 0.5).astype(float), np.ones(200)]))
    for share in (0.0, 0.1, 0.3, 0.55, 1.0):
        assert outcome_at(h, target_for_share(h, share))[0] == pytest.approx(share, abs=1e-12)
    fitted = fit_target(h, ["cheap", "strong"], quality=0.9)
    assert fitted.achieved_quality >= 0.9  # of the best single model's 1.0
    lower = fitted.target - 1e-3  # any cheaper target misses it
    assert outcome_at(h, lower)[1] < 0.9 or outcome_at(h, lower)[0] == fitted.achieved_strong_share


def test_outcomes_fit_writes_the_target_the_router_applies(
        tmp_path: Path, index: Path, store_file: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "outcomes.db"
    store.write_bytes(store_file.read_bytes())  # tiers.json goes beside the store
    routes = tiered_set(tmp_path / "r", store)
    assert main(["outcomes", "fit", "--target-strong-share", "0.25", "--routes", str(routes),
                 "--index", str(index), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["achieved_strong_share"] == 78 / 312  # round(0.25 * 312) texts exactly
    assert out["route"] == "*" and Path(out["written"]) == tmp_path / "tiers.json"
    d = Router.load(routes, index, classifier=False).route(CODE_QUERY)
    assert d.tier is not None and d.tier.target == pytest.approx(out["target"])
    assert d.tier.target_source.startswith("tiers.json (every route, fitted for strong_share")


# ---------------------------------------------------------------- config

def test_ladder_config_errors_name_file_route_and_field(tmp_path: Path) -> None:
    routes = write_set(tmp_path / "r", models(), ["strong"])
    code = routes / "code.yaml"
    data = yaml.safe_load(code.read_text())
    code.write_text(yaml.safe_dump({**data, "ladder": {"models": ["cheap", "nope"]}}))
    with pytest.raises(ConfigError) as err:
        load_routes(routes)
    assert f"{code}: route 'code': field 'ladder.models': 'nope' is not in profile 'test'" \
        in str(err.value)
    code.write_text(yaml.safe_dump({**data, "ladder": {"models": ["cheap", "strong"]},
                                    "parallel": {"models": ["cheap", "strong"],
                                                 "pick": "first"}}))
    with pytest.raises(ConfigError, match=r"route 'code': field 'ladder': a ladder picks one "
                                          r"model per query; `parallel` asks several"):
        load_routes(routes)
    code.write_text(yaml.safe_dump({**data, "ladder": {"models": ["cheap", "cheap"],
                                                       "target": 1.5}}))
    with pytest.raises(ConfigError) as err:
        load_routes(routes)
    assert "field 'ladder.models': each model may appear once" in str(err.value)
    assert "field 'ladder.target': Input should be less than or equal to 1" in str(err.value)
    write_set(tmp_path / "r", models(), ["strong"], ladder={"models": ["cheap", "gone"]})
    code.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"models\.yaml: field 'router\.ladder\.models': "
                                          r"'gone' is not in profile 'test'"):
        load_routes(routes)
