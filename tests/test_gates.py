"""Quality gates, as pure checks of an answer's text (no model involved):

- the refusal detector catches the usual refusals and leaves ordinary answers alone, even
  answers that use the same words ("I can't help but notice", "is not allowed");
- a model's self-assessed confidence is read in the forms models write it and stripped from
  the answer; a missing or garbled one is reported as such, never guessed;
- `json` accepts a whole JSON answer or one fenced ```json block; `json_schema` validates it
  (reasons name the path and the rule, never the answer's text); `regex` searches;
- gate settings are validated at load: a bad regex or schema, an unknown gate, a gate
  that needs settings written bare, all named by their field.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from semroute.config import CascadeSpec, GateSpec
from semroute.dispatching.gates import check, json_value, parse_confidence, refusal

REFUSALS = [
    "I can't help with that.",
    "I\u2019m sorry, but I cannot assist with this request.",
    "As an AI language model, I don't have personal opinions.",
    "I am sorry, but as an AI I cannot give medical advice.",
    "I must respectfully decline to write that.",
    "Sorry, I can't provide real-time stock prices.",
    "I'm afraid I am unable to browse the internet.",
    "I don't have access to real-time information, so I cannot tell you the weather.",
    "Unfortunately, I cannot comply with that request.",
    "I won't write malware, even for a test.",
    "I'm not able to help with that request.",
    "That goes against my guidelines, so I will not answer.",
    "I'm not allowed to share that.",
    "I cannot fulfill this request.",
    "I don't know.",
    "I decline to answer questions about specific people.",
]
NOT_REFUSALS = [
    "Paris is the capital of France.",
    "I can't help but notice the loop never ends: add a break.",
    "The function can't handle negative numbers, so add a check.",
    "In Python, reassigning a tuple element is not allowed.",
    "Sorry to hear that! Here are some tips to sleep better: keep a schedule.",
    "I don't know if you've tried this, but restarting fixes it.",
    "Step 1: I cannot overstate how important testing is.",
    "As an AI researcher would say, data quality matters most.",
    'The error "permission denied" means you cannot write to that folder.',
    "I'm sorry for your loss. Grief takes time; here are ways to cope.",
    "You can't divide by zero; the result is undefined.",
    "Unfortunately, the train was late, so Tom arrived at 5.",
    'He said: "I won\'t go."',
    "I decline any responsibility for typos - here is the poem:",
    "Janet sells 16 - 3 - 4 = 9 eggs, so she makes 9 * 2 = $18.",
    # the same words far from the opening are about something else
    "Here is a long explanation. " * 12 + "As an AI, I cannot be sure of this detail.",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_the_usual_refusals_are_caught(text: str) -> None:
    assert refusal(text) is not None


@pytest.mark.parametrize("text", NOT_REFUSALS)
def test_ordinary_answers_with_the_same_words_are_not_refusals(text: str) -> None:
    assert refusal(text) is None


@pytest.mark.parametrize(("text", "value", "left"), [
    ("Paris is the capital.\nConfidence: 0.8", 0.8, "Paris is the capital."),
    ("Paris.\nconfidence: 80%", 0.8, "Paris."),
    ("Paris. (confidence 8/10)", 0.8, "Paris."),
    ("Paris.\n**Confidence:** 0.95", 0.95, "Paris."),
    ("Paris.\nConfidence: 7", 0.7, "Paris."),  # a bare number up to 10 is out of 10
    ("Paris.\nConfidence level: 85 percent", 0.85, "Paris."),
    ("Paris.\n\n(Confidence: 0,7)", 0.7, "Paris."),
    ("Paris. [Confidence: 9 out of 10]", 0.9, "Paris."),
    ("Answer: 4. Confidence = .9", 0.9, "Answer: 4."),
    ('{"answer": "Paris", "confidence": 0.9}', 0.9, '{"answer": "Paris"}'),
    ('{"answer": "Paris", "confidence": "75%"}', 0.75, '{"answer": "Paris"}'),
    ('```json\n{"a": 1}\n```\nConfidence: 0.6', 0.6, '```json\n{"a": 1}\n```'),
    ("Confidence: 0.2 first\nConfidence: 0.9", 0.9, "Confidence: 0.2 first"),  # the last counts
])
def test_confidence_is_read_in_the_forms_models_write_it_and_stripped(
        text: str, value: float, left: str) -> None:
    got = parse_confidence(text)
    assert got.value == pytest.approx(value) and got.problem is None
    assert got.text == left


@pytest.mark.parametrize(("text", "problem", "left"), [
    ("Paris.", "missing", "Paris."),
    ("The 95% confidence interval is wide.", "missing", "The 95% confidence interval is wide."),
    ("Paris.\nConfidence: high", "garbled", "Paris."),
    ("Paris.\nConfidence: 150%", "garbled", "Paris."),
    ('{"answer": "Paris", "confidence": "sure"}', "garbled", '{"answer": "Paris"}'),
])
def test_a_missing_or_garbled_confidence_says_so_and_is_never_guessed(
        text: str, problem: str, left: str) -> None:
    got = parse_confidence(text)
    assert got.value is None and got.problem is not None and got.problem.startswith(problem)
    assert got.text == left


def gate(raw: object) -> GateSpec:
    return GateSpec.model_validate(raw)


def test_json_takes_a_whole_answer_or_one_fenced_block() -> None:
    assert json_value('  {"a": [1, 2]} ') == {"a": [1, 2]}
    assert json_value('```json\n{"a": 1}\n```') == {"a": 1}
    assert json_value("```\n[1, 2]\n```") == [1, 2]
    with pytest.raises(ValueError, match="not valid JSON"):
        json_value('Here you go: {"a": 1}')
    assert check(gate("json"), '```json\n{"a": 1}\n```').passed
    assert not check(gate("json"), "{'a': 1}").passed


def test_json_schema_failures_name_the_path_and_rule_but_not_the_answer() -> None:
    g = gate({"json_schema": {"type": "object", "required": ["age"],
                              "properties": {"age": {"type": "integer"}}}})
    assert check(g, '{"age": 41}').passed
    bad = check(g, '{"age": "forty-one"}')
    assert not bad.passed and "$.age" in bad.why and "'type'" in bad.why
    assert "forty" not in bad.why, "the answer's text never reaches the reason (or the trace)"
    assert "required" in check(g, "{}").why
    assert "not valid JSON" in check(g, "no json here").why


def test_regex_searches_case_sensitively_and_non_empty_needs_a_letter_or_digit() -> None:
    g = gate({"regex": r"^(positive|negative|neutral)$"})
    assert check(g, "positive").passed and not check(g, "Positive").passed
    assert not check(gate("non_empty"), " \n ... ").passed
    assert check(gate("non_empty"), "0").passed
    assert not check(gate("not_refusal"), "I can't help with that.").passed


@pytest.mark.parametrize(("raw", "field", "message"), [
    ({"regex": "(unclosed"}, "gates.0.regex", "invalid regular expression"),
    ({"json_schema": {"type": "nope"}}, "gates.0.json_schema", "not a valid JSON schema"),
    ("regex", "gates.0", "takes settings"),
    ("jsn", "gates.0", "unknown gate 'jsn'"),
    ({"regex": "a", "json": True}, "gates.0", "one gate per list item"),
    ({"self_confidence": {"min": 1.5}}, "gates.0.self_confidence.min", "less than or equal"),
    ({"judge": {"min_score": 0.5}}, "gates.0.judge.model", "Field required"),
])
def test_bad_gates_are_config_errors_naming_the_field(raw: object, field: str,
                                                       message: str) -> None:
    with pytest.raises(ValidationError) as info:
        CascadeSpec.model_validate({"models": ["a", "b"], "gates": [raw]})
    [error] = info.value.errors()
    assert ".".join(map(str, error["loc"])) == field
    assert message in str(info.value)


def test_a_cascade_needs_two_distinct_steps_and_a_gate() -> None:
    for models, gates in ([["a"], ["json"]], [["a", "a"], ["json"]], [["a", "b"], []],
                          [["a", ["b", "b"]], ["json"]]):
        with pytest.raises(ValidationError):
            CascadeSpec.model_validate({"models": models, "gates": gates})
    spec = CascadeSpec.model_validate({"models": ["a", ["b", "c"]], "gates": ["json"]})
    assert spec.steps == (("a",), ("b", "c")) and spec.stream == "gated"
