"""The outcomes store: SQLite in WAL mode, records and vectors per encoder, `matrix` for a kNN
predictor, imports that are atomic and idempotent, and writers in several threads and
processes. Real SQLite and the real encoder throughout."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semroute import OutcomeDataError, OutcomeStoreError
from semroute.cli import main
from semroute.config import load_routes
from semroute.encoders import Fingerprint, SentenceTransformerEncoder
from semroute.outcomes import (
    SCHEMA_VERSION,
    OutcomeRecord,
    OutcomeStore,
    import_file,
    store_path,
    text_hash,
)
from tests.conftest import CATALOGUE, WriteRoutes

REPO = Path(__file__).resolve().parent.parent
FP = Fingerprint("test-encoder", "torch", 4, "0" * 64)
LONG = ("text,model,score,cost\n"
        "what is the capital of France,small,1,0.001\n"
        "what is the capital of France,big,1,0.01\n"
        "prove that there are infinitely many primes,small,0,0.002\n"
        "prove that there are infinitely many primes,big,0.5,0.05\n")


@pytest.fixture(scope="module")
def encoder() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutcomeStore]:
    s = OutcomeStore(tmp_path / "outcomes.db")
    yield s
    s.close()


def rec(text: str, model: str, score: float, *, source: str = "gate",
        **kw: Any) -> OutcomeRecord:
    return OutcomeRecord(text_hash=text_hash(text), model=model, score=score, source=source,
                         **kw)


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def table_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as c:
        return {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("records", "texts", "vectors", "datasets", "encoders")}


# ------------------------------------------------------------------ the file


def test_the_store_is_sqlite_in_wal_mode_with_a_schema_version(store: OutcomeStore) -> None:
    with sqlite3.connect(store.path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(c.execute("SELECT key, value FROM meta"))
    assert meta["kind"] == "semroute-outcomes"
    assert meta["schema_version"] == str(SCHEMA_VERSION)


def test_a_store_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    OutcomeStore(tmp_path / "o.db").close()
    with sqlite3.connect(tmp_path / "o.db") as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    refused = (r"o\.db: outcomes store schema version 99, but this semroute reads version "
               f"{SCHEMA_VERSION}")
    with pytest.raises(OutcomeStoreError, match=refused):
        OutcomeStore(tmp_path / "o.db")


def test_files_that_are_not_stores_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database at all, just some text " * 100)
    with pytest.raises(OutcomeStoreError, match=r"notes\.txt: not a semroute outcomes store"):
        OutcomeStore(tmp_path / "notes.txt")
    with sqlite3.connect(tmp_path / "other.db") as c:
        c.execute("CREATE TABLE x(a)")
    with pytest.raises(OutcomeStoreError, match="an SQLite file, but not a semroute outcomes"):
        OutcomeStore(tmp_path / "other.db")
    with pytest.raises(OutcomeStoreError, match="does not exist"):
        OutcomeStore(tmp_path / "no" / "such" / "o.db")


# ------------------------------------------------------------------ records and vectors


def test_records_round_trip_and_filter(store: OutcomeStore) -> None:
    first = store.add(rec("hi", "small", 0.9, route="chat", cost_usd=0.001, latency_ms=120.0,
                          request_id="r1", ts=100.0))
    store.add_many([rec("hi", "big", 1.0, route="chat", source="judge", ts=200.0),
                    rec("sum this", "small", 0.2, route="summary", ts=300.0)])
    assert store.count() == 3 and store.count(route="chat") == 2
    got = store.records(route="chat", model="small")
    assert [(r.id, r.text_hash, r.score, r.cost_usd, r.latency_ms, r.request_id)
            for r in got] == [(first, text_hash("hi"), 0.9, 0.001, 120.0, "r1")]
    assert [r.model for r in store.records(source="judge")] == ["big"]
    assert [r.route for r in store.records(since=250.0)] == ["summary"]


def test_an_invalid_record_names_the_field_and_nothing_is_written(store: OutcomeStore) -> None:
    with pytest.raises(OutcomeStoreError, match="field 'score' must be a number in"):
        store.add_many([rec("a", "m", 0.5), rec("b", "m", 1.5)])
    with pytest.raises(OutcomeStoreError, match="field 'source' must be one of gate"):
        store.add(rec("a", "m", 0.5, source="guess"))
    with pytest.raises(OutcomeStoreError, match="field 'text_hash'"):
        store.add(OutcomeRecord(text_hash="hello", model="m", score=1.0, source="gate"))
    assert store.count() == 0


def test_raw_text_is_never_stored_unless_asked(store: OutcomeStore) -> None:
    store.add(rec("my secret medical question", "m", 1.0), vector=unit(1, 0, 0, 0),
              fingerprint=FP)
    store.add(rec("a text I chose to keep", "m", 1.0), text="a text I chose to keep")
    store.close()
    raw = b"".join(p.read_bytes() for p in store.path.parent.glob("outcomes.db*"))
    assert b"secret medical" not in raw and b"a text I chose to keep" in raw


def test_vectors_are_kept_per_encoder(store: OutcomeStore) -> None:
    other = Fingerprint("test-encoder", "onnx", 4, "0" * 64)
    store.add(rec("q1", "m", 1.0), vector=unit(1, 0, 0, 0), fingerprint=FP)
    store.add(rec("q2", "m", 0.0), vector=unit(0, 1, 0, 0), fingerprint=FP)
    store.add(rec("q1", "n", 1.0), vector=unit(0, 0, 0, 1), fingerprint=other)
    hashes, mat = store.vectors(FP)
    assert hashes == [text_hash("q1"), text_hash("q2")] and mat.dtype == np.float32
    np.testing.assert_array_equal(mat, [unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
    assert store.vectors(other)[0] == [text_hash("q1")]
    assert store.vectors(Fingerprint("x", "torch", 4, "1" * 64))[1].shape == (0, 4)
    with pytest.raises(OutcomeStoreError, match=r"vectors must have shape \(1, 4\)"):
        store.add(rec("q3", "m", 1.0), vector=unit(1, 0, 0), fingerprint=FP)


def test_matrix_groups_by_text_and_averages_repeated_scores(store: OutcomeStore) -> None:
    store.add(rec("q1", "small", 1.0, cost_usd=0.01), vector=unit(1, 0, 0, 0), fingerprint=FP)
    store.add_many([rec("q1", "small", 0.0, cost_usd=0.03), rec("q1", "big", 1.0),
                    rec("q2", "big", 0.5, cost_usd=0.2), rec("no vector", "small", 1.0)])
    store.add(rec("q2", "big", 1.0, cost_usd=0.4), vector=unit(0, 1, 0, 0), fingerprint=FP)
    vectors, scores, costs, models = store.matrix(FP)
    assert models == ["small", "big"] and vectors.shape == (2, 4)
    m = store.matrix(FP)
    row = {h: i for i, h in enumerate(m.text_hashes)}
    q1, q2 = row[text_hash("q1")], row[text_hash("q2")]
    np.testing.assert_array_equal(vectors[q1], unit(1, 0, 0, 0))
    assert scores[q1].tolist() == [0.5, 1.0] and scores[q2, 1] == 0.75
    assert np.isnan(scores[q2, 0]) and costs[q1, 0] == pytest.approx(0.02)
    assert np.isnan(costs[q1, 1]) and costs[q2, 1] == pytest.approx(0.3)
    only_big = store.matrix(FP, models=["big"])
    assert only_big.scores.shape == (2, 1) and only_big.models == ["big"]
    assert store.matrix(FP, source="judge").models == []  # no judged records
    assert store.matrix(FP, ["small", "big"], source="judge").scores.shape == (0, 2)


# ------------------------------------------------------------------ importing


def test_an_import_writes_records_and_vectors_and_is_idempotent(
        tmp_path: Path, store: OutcomeStore, encoder: SentenceTransformerEncoder) -> None:
    path = tmp_path / "long.csv"
    path.write_text(LONG)
    first = import_file(store, path, encoder, dataset="demo")
    assert (first.form, first.examples, first.records, first.encoded) == ("long", 2, 4, 2)
    assert not first.already_imported and "imported 'demo'" in first.describe()
    again = import_file(store, path, encoder)
    assert again.already_imported and (again.records, again.encoded) == (0, 0)
    assert "already imported as 'demo'" in again.describe()
    assert store.count() == 4 and store.count(dataset=first.dataset) == 4
    m = store.matrix(encoder_fp := Fingerprint.of(encoder))
    assert m.scores.shape == (2, 2) and sorted(m.scores[:, 1].tolist()) == [0.5, 1.0]
    expected = encoder.encode(["what is the capital of France"])[0]
    np.testing.assert_allclose(m.vectors[m.text_hashes.index(
        text_hash("what is the capital of France"))], expected, atol=1e-5)
    assert len(store.vectors(encoder_fp)[0]) == 2


def test_a_bad_row_at_the_end_leaves_the_store_unchanged(
        tmp_path: Path, store: OutcomeStore, encoder: SentenceTransformerEncoder) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(LONG + "a last row,big,7,0.1\n")
    with pytest.raises(OutcomeDataError, match=r"bad\.csv:6: column 'score': 7 is outside"):
        import_file(store, path, encoder)
    assert table_counts(store.path) == dict.fromkeys(table_counts(store.path), 0)


def test_a_failure_inside_the_import_transaction_rolls_all_of_it_back(
        tmp_path: Path, store: OutcomeStore, encoder: SentenceTransformerEncoder) -> None:
    path = tmp_path / "long.csv"
    path.write_text(LONG)
    with sqlite3.connect(store.path) as c:  # the 4th record insert fails, after the others
        c.execute("CREATE TRIGGER crash BEFORE INSERT ON records WHEN NEW.id = 4 "
                  "BEGIN SELECT RAISE(ABORT, 'simulated crash'); END")
    with pytest.raises(OutcomeStoreError, match=r"rolled back .*simulated crash"):
        import_file(store, path, encoder)
    assert table_counts(store.path) == dict.fromkeys(table_counts(store.path), 0)
    with sqlite3.connect(store.path) as c:
        c.execute("DROP TRIGGER crash")
    assert import_file(store, path, encoder).records == 4  # and then it imports


def test_an_exception_inside_a_transaction_writes_nothing(store: OutcomeStore) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as tx:
        tx.add_many([rec("q", "m", 1.0)])
        tx.put_vectors(FP, [text_hash("q")], unit(1, 1, 1, 1).reshape(1, 4))
        raise RuntimeError("boom")
    assert table_counts(store.path) == dict.fromkeys(table_counts(store.path), 0)
    with store.transaction() as tx:
        tx.add_many([rec("q", "m", 1.0)])
        with pytest.raises(OutcomeStoreError, match="already open in this thread"):
            store.add(rec("r", "m", 1.0))
    assert store.count() == 1


def test_a_process_killed_mid_transaction_leaves_the_store_unchanged(tmp_path: Path) -> None:
    OutcomeStore(tmp_path / "o.db").close()
    script = textwrap.dedent(f"""
        import os
        from semroute.outcomes import OutcomeRecord, OutcomeStore, text_hash
        s = OutcomeStore({str(tmp_path / "o.db")!r})
        with s.transaction() as tx:
            tx.add_many([OutcomeRecord(text_hash=text_hash(str(i)), model="m", score=1.0,
                                       source="imported") for i in range(1000)])
            os._exit(9)  # dies holding the write transaction
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH":
                          str(REPO)}, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 9, proc.stderr
    with OutcomeStore(tmp_path / "o.db") as s:
        assert s.count() == 0
        s.add(rec("after", "m", 1.0))  # the lock died with the process
        assert s.count() == 1


# ------------------------------------------------------------------ concurrency


def test_two_threads_write_at_once_without_losing_records(store: OutcomeStore) -> None:
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(150):
                store.add(rec(f"{name} {i}", name, 0.5), vector=unit(1, i + 1, 0, 0),
                          fingerprint=FP)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and store.count(model="a") == store.count(model="b") == 150
    assert len({r.id for r in store.records()}) == 300 and len(store.vectors(FP)[0]) == 300


def test_readers_and_new_connections_never_wait_for_a_writer(store: OutcomeStore) -> None:
    store.add(rec("before", "m", 1.0))
    with store.transaction() as tx:  # a long import holds the write lock
        tx.add_many([rec("during", "m", 1.0)])
        with OutcomeStore(store.path, busy_timeout=0.2) as other:  # would time out if blocked
            assert other.count() == 1  # sees the last commit, not the open transaction
            with pytest.raises(OutcomeStoreError, match="cannot start a write"):
                other.add(rec("x", "m", 1.0))
    assert store.count() == 2


def test_two_processes_write_at_once_without_losing_records(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    script = textwrap.dedent(f"""
        import sys
        from semroute.outcomes import OutcomeRecord, OutcomeStore, text_hash
        name = sys.argv[1]
        with OutcomeStore({str(db)!r}) as s:
            for i in range(200):
                s.add(OutcomeRecord(text_hash=text_hash(f"{{name}} {{i}}"), model=name,
                                    score=1.0, source="feedback"))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script, name], env=env,
                              stderr=subprocess.PIPE, text=True) for name in ("p1", "p2")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with OutcomeStore(db) as s:
        assert s.count(model="p1") == s.count(model="p2") == 200
        assert len({r.id for r in s.records()}) == 400


# ------------------------------------------------------------------ settings and CLI


def test_the_store_path_is_relative_to_the_routes_folder(write_routes: WriteRoutes) -> None:
    custom = {**CATALOGUE, "router": {**CATALOGUE["router"], "outcomes": {"path": "data/o.db"}}}
    folder = write_routes(catalogue=custom)
    assert store_path(load_routes(folder)) == folder / "data" / "o.db"
    plain = write_routes(name="plain")
    assert store_path(load_routes(plain)) == plain / "outcomes.db"


def test_cli_imports_a_file_and_shows_stats(tmp_path: Path, example_routes: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "long.csv").write_text(LONG)
    args = ["--store", str(tmp_path / "o.db"), "--routes", str(example_routes),
            "--index", str(tmp_path / "no-index")]
    assert main(["outcomes", "import", str(tmp_path / "long.csv"), *args]) == 0
    assert "imported 'long.csv' (long form" in capsys.readouterr().out
    assert main(["outcomes", "import", str(tmp_path / "long.csv"), *args]) == 0
    assert "already imported" in capsys.readouterr().out
    assert main(["outcomes", "stats", "--store", str(tmp_path / "o.db")]) == 0
    out = capsys.readouterr().out
    assert "records  4 over 2 texts" in out and "long.csv (long" in out
    assert main(["outcomes", "stats", "--json", "--store", str(tmp_path / "o.db")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["records"] == 4 and [m["model"] for m in d["models"]] == ["small", "big"]


def test_cli_import_encodes_with_the_index_encoder_into_the_routes_store(
        tmp_path: Path, example_routes: Path, example_index: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "long.csv").write_text(LONG)
    assert main(["outcomes", "import", str(tmp_path / "long.csv"), "--routes",
                 str(example_routes), "--index", str(example_index), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["store"] == str(example_routes / "outcomes.db")  # router.outcomes.path
    assert main(["outcomes", "stats", "--routes", str(example_routes), "--json"]) == 0
    (enc,) = json.loads(capsys.readouterr().out)["encoders"]
    assert enc["encoder"].split("|")[1] == "onnx-int8" and enc["vectors"] == 2
    for f in example_routes.glob("outcomes.db*"):  # the route set is shared by the session
        f.unlink()


def test_cli_errors_name_the_file_and_exit_2(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.csv").write_text("text,a_score\nx,2\n")
    assert main(["outcomes", "import", str(tmp_path / "bad.csv"), "--store",
                 str(tmp_path / "o.db")]) == 2
    assert f"{tmp_path / 'bad.csv'}:2: column 'a_score'" in capsys.readouterr().err
    assert not (tmp_path / "o.db").exists()
    assert main(["outcomes", "stats", "--store", str(tmp_path / "none.db")]) == 2
    assert "no outcomes store there" in capsys.readouterr().err
