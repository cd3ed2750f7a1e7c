"""Outcome files: every form is recognised from its header, the shared files read exactly as
they are, and every bad input is an `OutcomeDataError` naming file, line and column."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from semroute import OutcomeDataError
from semroute.outcomes import read_outcome_file

DATA = Path("/work/shared/data")
ROUTELLM = DATA / "routellm_evals"
needs_shared = pytest.mark.skipif(not ROUTELLM.is_dir(), reason="shared data not mounted")


def write(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(OutcomeDataError) as err:
        read_outcome_file(path)
    return err.value.problems


# ------------------------------------------------------------------ the forms


def test_long_form_groups_rows_by_text_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "text,model,score,cost\n"
                           "what is 2+2,small,1,0.001\n"
                           "write a poem,small,0.25,0.002\n"
                           "what  is 2+2 ,big,1,0.03\n"   # same text once normalised
                           "write a poem,big,0.75,\n")
    t = read_outcome_file(path)
    assert (t.form, t.texts, t.models, t.lines) == (
        "long", ["what is 2+2", "write a poem"], ["small", "big"], [2, 3])
    np.testing.assert_array_equal(t.scores, [[1.0, 1.0], [0.25, 0.75]])
    assert t.costs is not None
    assert t.costs[0].tolist() == [0.001, 0.03] and math.isnan(t.costs[1, 1])
    assert t.groups is None and t.source == str(path)


def test_long_form_without_cost_has_no_costs_and_missing_pairs_are_nan(tmp_path: Path) -> None:
    t = read_outcome_file(write(tmp_path, "text,model,score\na,m1,0.5\nb,m2,1\n"))
    assert t.costs is None
    assert t.scores[0, 0] == 0.5 and math.isnan(t.scores[0, 1]) and math.isnan(t.scores[1, 0])


def test_a_repeated_text_and_model_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "text,model,score\nhello,a,1\nhello,b,0\nhello,a,0\n")
    assert problems(path) == [f"{path}:4: column 'model': the same text and model 'a' as "
                              f"line 2: keep one row per pair (or average them first)"]


def test_wide_form_with_costs_for_some_models(tmp_path: Path) -> None:
    t = read_outcome_file(write(tmp_path, "text,category,cheap_score,cheap_cost,strong_score\n"
                                          "q1,math,0,0.001,1\nq2,code,1,0.002,\n"))
    assert (t.form, t.models, t.groups) == ("wide", ["cheap", "strong"], ["math", "code"])
    assert t.costs is not None and t.costs[:, 0].tolist() == [0.001, 0.002]
    assert np.isnan(t.costs[:, 1]).all() and math.isnan(t.scores[1, 1])


def test_routellm_form_reads_booleans_and_leaves_contaminated_rows_out(tmp_path: Path) -> None:
    path = write(tmp_path, "subject,prompt,a_correct,b_correct,a_response,contaminated\n"
                           's1,"multi\nline prompt",True,False,"an\nanswer",False\n'
                           "s2,second,1,0,x,True\n"
                           "s3,third,false,TRUE,y,0\n")
    t = read_outcome_file(path)
    assert (t.form, t.models, t.dropped) == ("routellm", ["a", "b"], 1)
    assert t.texts == ["multi\nline prompt", "third"] and t.lines == [2, 6]
    assert t.scores.tolist() == [[1.0, 0.0], [0.0, 1.0]] and t.costs is None
    assert t.groups == ["s1", "s3"] and t.answers == {"a": ["an\nanswer", "y"]}


def test_mt_bench_one_example_per_question_and_turn(tmp_path: Path) -> None:
    turns = '"[""Plan a trip."", ""Now make it cheaper.""]"'
    path = write(tmp_path, "question_id,category,turn,model,score,judge,question_turns\n"
                           f"81,writing,1,gpt-4,9,j,{turns}\n"
                           f"81,writing,2,gpt-4,7.5,j,{turns}\n"
                           f"81,writing,1,mixtral,-1,j,{turns}\n"
                           f"81,writing,2,mixtral,10,j,{turns}\n")
    t = read_outcome_file(path)
    assert t.form == "mt_bench" and t.models == ["gpt-4", "mixtral"]
    assert t.texts == ["Plan a trip.", "Plan a trip.\n\nNow make it cheaper."]
    assert t.scores[0, 0] == 0.9 and math.isnan(t.scores[0, 1])  # -1: no judgement
    assert t.scores[1].tolist() == [0.75, 1.0] and t.groups == ["writing", "writing"]


def test_routerarena_form_has_costs_and_categories(tmp_path: Path) -> None:
    path = write(tmp_path, "global_index,source,category,question,ground_truth,metric,"
                           "a_score,a_cost,b_score,b_cost,a_answer,b_answer\n"
                           "X_1,X,cat1,what?,4,em,1.0,0.0002,-0.03,0.001,four,5\n")
    t = read_outcome_file(path)
    assert (t.form, t.models, t.texts, t.groups) == ("routerarena", ["a", "b"], ["what?"],
                                                     ["cat1"])
    assert t.scores.tolist() == [[1.0, 0.0]] and t.clipped == 1  # METEOR below 0 counts as 0
    assert t.costs is not None and t.costs.tolist() == [[0.0002, 0.001]]


# ------------------------------------------------------------------ the shared files


@needs_shared
def test_mmlu_reads_every_row_but_the_contaminated_ones() -> None:
    t = read_outcome_file(ROUTELLM / "mmlu_mixtral_vs_gpt4.csv")
    assert (t.form, len(t), t.dropped) == ("routellm", 14042 - 5, 5)
    assert t.models == ["mixtral_8x7b", "gpt4_1106"] and not np.isnan(t.scores).any()
    assert t.groups is not None and len(set(t.groups)) == 57
    assert t.scores.mean(axis=0) == pytest.approx([0.6809, 0.8059], abs=1e-4)


@needs_shared
def test_gsm8k_keeps_the_responses_and_drops_twelve_rows() -> None:
    t = read_outcome_file(ROUTELLM / "gsm8k_mixtral_vs_gpt4.csv")
    assert (len(t), t.dropped, t.groups) == (1319 - 12, 12, None)
    assert t.answers is not None and len(t.answers["gpt4_1106"]) == len(t)


@needs_shared
def test_mt_bench_has_80_questions_times_2_turns() -> None:
    t = read_outcome_file(ROUTELLM / "mt_bench_judgements.csv")
    assert (len(t), t.models) == (160, ["gpt-4-1106-preview",
                                         "mistralai/Mixtral-8x7B-Instruct-v0.1"])
    assert not np.isnan(t.scores).any() and t.scores.min() >= 0.1


@needs_shared
def test_routerarena_reads_809_questions_with_dollar_costs() -> None:
    t = read_outcome_file(DATA / "routerarena" / "routerarena_sub10_2models.csv")
    assert (len(t), t.models, t.clipped) == (809, ["claude-3-haiku", "gemini-2.0-flash"], 1)
    assert t.costs is not None and (t.costs > 0).all()
    assert ((t.scores >= 0) & (t.scores <= 1)).all()


# ------------------------------------------------------------------ bad input


def test_every_bad_cell_is_named_by_line_and_column_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "text,a_score,b_score,a_cost\n"
                           "ok,1,0,0.1\n"
                           "x,1.5,abc,-2\n"
                           ",0.5,0.5,0\n")
    assert problems(path) == [
        f"{path}:3: column 'a_score': 1.5 is outside [0, 1]: write a score in that range",
        f"{path}:3: column 'b_score': 'abc' is not a number: write a score in [0, 1]",
        f"{path}:3: column 'a_cost': the cost -2 is negative: write USD per call >= 0",
        f"{path}:4: column 'text': the text is empty: give the prompt the scores are for",
    ]


def test_an_unknown_header_lists_the_accepted_forms(tmp_path: Path) -> None:
    (msg,) = problems(write(tmp_path, "query,label\nhi,greet\n"))
    assert msg.startswith(f"{tmp_path / 'f.csv'}:1: unknown header (query, label)")
    for form in ("long:", "wide:", "routellm:", "mt_bench:", "routerarena:"):
        assert form in msg


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    (msg,) = problems(write(tmp_path, "text,model,cost\nhi,a,0.1\n"))
    assert msg.startswith(f"{tmp_path / 'f.csv'}:1: column 'score': missing from the header")
    (msg,) = problems(write(tmp_path, "prompt,contaminated\nhi,False\n"))
    assert "column '<model>_correct' is missing" in msg


def test_a_row_of_the_wrong_width_is_named_by_its_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'text,a_score\n"two\nlines",1\nthree,1,extra\n')
    assert problems(path) == [f"{path}:4: 3 fields, but the header has 2: quote fields "
                              f"holding commas or newlines"]


def test_mt_bench_problems_name_turn_and_question_turns(tmp_path: Path) -> None:
    path = write(tmp_path, "question_id,category,turn,model,score,judge,question_turns\n"
                           '1,c,3,m,5,j,"[""only one turn""]"\n'
                           "2,c,1,m,5,j,not json\n"
                           '3,c,1,m,11,j,"[""q""]"\n')
    got = problems(path)
    assert got[0] == f"{path}:2: column 'turn': turn 3 but the question has 1 turns"
    assert got[1].startswith(f"{path}:3: column 'question_turns': not a JSON list of strings")
    assert got[2].startswith(f"{path}:4: column 'score': 11 is outside [-1, 10]")


def test_at_most_twenty_problems_are_listed(tmp_path: Path) -> None:
    rows = "".join(f"t{i},2\n" for i in range(30))
    got = problems(write(tmp_path, "text,a_score\n" + rows))
    assert len(got) == 21 and got[-1] == "... and 10 more"


def test_missing_empty_and_unreadable_files_are_clear(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.csv") == [f"{tmp_path / 'nope.csv'}: outcome file not found"]
    assert problems(tmp_path) == [f"{tmp_path}: not a file"]
    (msg,) = problems(write(tmp_path, ""))
    assert "empty file" in msg
    (msg,) = problems(write(tmp_path, "text,a_score\n"))
    assert "no examples" in msg
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,a_score\ncaf\xe9,1\n".encode("latin-1"))
    (msg,) = problems(latin1)
    assert "not UTF-8 text" in msg
