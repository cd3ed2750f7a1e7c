"""The outcome predictor's neighbour search and its bounds.

- up to the flat limit the search is exact; above it an IVF index of about sqrt(n) lists finds
  nearly the same neighbours on real sentence vectors;
- a large store's built index is cached beside it, keyed by the vectors: the next load
  reuses it (same neighbours), a changed store rebuilds, an unwritable folder only skips
  the cache;
- predictions stay in [0, 1];
- a query unlike every outcome text gets no learned choice: the static model serves and the
  Decision says why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semroute.config import load_routes
from semroute.encoders import Fingerprint
from semroute.outcomes import (
    KnnSettings,
    OutcomeRecord,
    OutcomeStore,
    QualityPredictor,
    TierPredictor,
    feature_row,
    load_tiers,
    text_features,
    text_hash,
)
from semroute.outcomes.search import cached_index, ivf_lists, search_index
from semroute.outcomes.tiers import search_cache_path
from semroute.routing import Router
from tests.test_tiers import CODE_QUERY, LADDER, index, store_file, tiered_set

__all__ = ["index", "store_file"]  # module fixtures shared with test_tiers

TOPICS = ["pay my credit card bill", "book a table for two tonight", "reset my router password",
          "what is the capital of Peru", "play some jazz in the kitchen",
          "translate good morning into German", "how many grams in a pound",
          "set an alarm for six thirty", "find a flight to Lisbon on Friday",
          "why is the sky blue", "convert 30 celsius to fahrenheit", "order more coffee beans"]
STYLES = ["please {t}", "can you {t}?", "I need to {t} now", "{t} for me", "quickly, {t}",
          "help me {t} today", "{t}, thanks", "could you {t} later", "hey, {t}", "{t} asap",
          "I'd like to {t}", "would you {t}", "{t} again", "just {t}", "{t} if possible",
          "remind me to {t}", "let's {t}", "try to {t}", "{t} this week", "{t} right away"]


@pytest.fixture(scope="module")
def sentences(index: Path) -> np.ndarray:
    """240 real sentence vectors (the index's encoder), 12 topics x 20 phrasings."""
    router = Router.load(tiered_set(index.parent / "enc", Path("none.db")), index,
                         classifier=False)
    texts = [s.format(t=t) for t in TOPICS for s in STYLES]
    return np.asarray(router.matcher.encoder.encode(texts), dtype=np.float32)


def neighbours(idx: object, queries: np.ndarray, k: int) -> list[set[int]]:
    _, ids = idx.search(queries, k)  # type: ignore[attr-defined]
    return [set(row.tolist()) for row in ids]


def test_above_the_flat_limit_an_ivf_index_finds_nearly_the_exact_neighbours(
        sentences: np.ndarray) -> None:
    exact = search_index(sentences, flat_limit=10_000)
    ivf = search_index(sentences, flat_limit=100)
    assert type(exact).__name__ == "IndexFlatIP" and type(ivf).__name__ == "IndexIVFScalarQuantizer"
    assert ivf.nlist == ivf_lists(240) == 16 and ivf.ntotal == 240
    truth, found = neighbours(exact, sentences[:60], 20), neighbours(ivf, sentences[:60], 20)
    recall = np.mean([len(a & b) / 20 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.95


def test_trained_centroids_are_cached_beside_the_store_and_keyed_by_its_vectors(
        sentences: np.ndarray, tmp_path: Path) -> None:
    cache = tmp_path / "outcomes.db.abc.ivf"
    first, how1 = cached_index(sentences, cache, flat_limit=100, salt="enc")
    again, how2 = cached_index(sentences, cache, flat_limit=100, salt="enc")
    assert (how1, how2) == ("built", "cached") and cache.exists()
    assert neighbours(first, sentences[:30], 10) == neighbours(again, sentences[:30], 10)
    assert cached_index(sentences, cache, flat_limit=100, salt="other")[1] == "built"
    assert cached_index(sentences[:-1], cache, flat_limit=100, salt="other")[1] == "built"
    assert cached_index(sentences[:50], cache, flat_limit=100)[1] == "exact"
    cache.write_bytes(b"garbage")
    assert cached_index(sentences, cache, flat_limit=100, salt="enc")[1] == "built"


def test_an_unwritable_cache_folder_only_costs_the_training(sentences: np.ndarray,
                                                             tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    idx, how = cached_index(sentences, blocked / "x.ivf", flat_limit=100)
    assert how == "built" and idx.ntotal == 240


def test_predictions_are_clipped_to_the_unit_interval(sentences: np.ndarray) -> None:
    # long texts score 1 and short ones 0 on a steep feature line: extrapolation overshoots
    texts = [("word " * (3 + 40 * (i % 2))) for i in range(240)]
    scores = np.column_stack([np.arange(240) % 2, np.ones(240)]).astype(float)
    queries = ["word", "word " * 400]
    qv = sentences[:2]
    ref = QualityPredictor(sentences, scores, texts=texts, settings=KnnSettings(k=5))
    tier = TierPredictor.build(sentences, scores, text_features(texts), ("a", "b"),
                               KnnSettings(k=5))
    for pred in (ref.predict(qv, queries), tier.predict(qv, text_features(queries))):
        assert pred.quality.min() >= 0.0 and pred.quality.max() <= 1.0
    raw = QualityPredictor(sentences, scores, texts=texts, settings=KnnSettings(k=5),
                           bounds=None).predict(qv, queries)
    assert raw.quality.min() < 0.0 or raw.quality.max() > 1.0  # so the clip did something


def test_one_query_fast_path_gives_the_batch_predictions(sentences: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    texts = [f"what is {i} plus {i * 7}? {'half ' * (i % 3)}" for i in range(240)]
    scores = rng.uniform(size=(240, 2))
    scores[rng.uniform(size=240) < 0.2, 0] = np.nan
    for st in (KnnSettings(), KnnSettings(k=20, prior=2.0, temperature=0.1),
               KnnSettings(k=500)):  # more neighbours than rows: FAISS pads with -1
        for limit in (10_000, 100):  # exact and IVF
            ref = QualityPredictor(sentences[:200], scores[:200], texts=texts[:200],
                                   settings=st, flat_limit=limit)
            tier = TierPredictor.build(sentences[:200], scores[:200],
                                       text_features(texts[:200]), ("a", "b"), st)
            batch = ref.predict(sentences[200:], texts[200:])
            tbatch = tier.predict(sentences[200:], text_features(texts[200:]))
            for i in range(40):
                one = ref.predict_one(sentences[200 + i], feature_row(texts[200 + i]))
                np.testing.assert_allclose(one.quality, batch.quality[i], atol=1e-9)
                np.testing.assert_allclose(one.support, batch.support[i], atol=1e-9)
                assert one.ids == [j for j in batch.ids[i].tolist() if j >= 0]
                tone = tier.predict_one(sentences[200 + i], feature_row(texts[200 + i]))
                np.testing.assert_allclose(tone.quality, tbatch.quality[i], atol=1e-9)


def test_a_query_far_from_every_outcome_text_serves_the_static_model(
        tmp_path: Path, index: Path, store_file: Path) -> None:
    router = Router.load(tiered_set(tmp_path / "r", store_file), index, classifier=False)
    far = router.route("the orchestra tuned their violins before the symphony")
    assert far.tier is not None and (far.tier.chosen, far.tier.learned) == ("strong", False)
    assert "no outcome text is near this query" in far.tier.reason
    assert "min_similarity 0.3" in far.tier.reason and far.tier.quality  # still shown
    near = router.route(CODE_QUERY)
    assert near.tier is not None and near.tier.learned
    loose = Router.load(tiered_set(tmp_path / "l", store_file,
                                   ladder={**LADDER, "min_similarity": -1.0}), index,
                        classifier=False)
    assert loose.route("the orchestra tuned their violins before the symphony").tier.learned


def test_a_large_store_builds_its_index_once_and_the_next_load_reads_it(
        sentences: np.ndarray, tmp_path: Path) -> None:
    """2,400 outcome texts (over the flat limit): the first load builds the IVF index and
    caches it beside the store; the second reads it and finds the same neighbours."""
    fp = Fingerprint(name="test", backend="test", dim=sentences.shape[1], weights_hash="0")
    rng = np.random.default_rng(5)
    texts = [f"outcome {i}" for i in range(2400)]
    vecs = sentences[np.arange(2400) % 240] + 0.02 * rng.standard_normal((2400, 384))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    store = tmp_path / "outcomes.db"
    with OutcomeStore(store) as s, s.transaction() as tx:
        tx.add_many([OutcomeRecord(text_hash=text_hash(t), model=m, score=float(i % 2 or
                                                                                m == "strong"),
                                   source="imported")
                     for i, t in enumerate(texts) for m in ("cheap", "strong")])
        tx.put_vectors(fp, [text_hash(t) for t in texts], vecs)
        tx.put_features([text_hash(t) for t in texts], text_features(texts))
    routes = load_routes(tiered_set(tmp_path / "r", store))
    first, second = load_tiers(routes, fp), load_tiers(routes, fp)
    assert "IVF search" in first.status and "index built" in first.status
    assert "index cached" in second.status
    assert search_cache_path(store, fp).exists()
    a, b = first.predict(vecs[0], texts[0]), second.predict(vecs[0], texts[0])
    assert a.ids == b.ids and a.quality == b.quality
