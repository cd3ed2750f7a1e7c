"""Reading labelled outcome files: which model did how well (and at what cost) on which text.

One reader, `read_outcome_file`, detects the form from the CSV header:

- long: `text,model,score[,cost]`, one row per (text, model); rows are grouped by text;
- wide: `text,<model>_score[,<model>_cost]...`, one row per text;
- routellm: `prompt,<model>_correct...[,contaminated]` (RouteLLM's eval CSVs; optional
  `subject`, ignored `<model>_response`); rows with `contaminated` true are left out;
- mt_bench: `question_id,category,turn,model,score,judge,question_turns` (scores 1-10);
- routerarena: `global_index,source,category,question,...,<model>_score,<model>_cost,...`.

Every problem names file, line and column and what to fix; up to 20 are reported at once.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semroute.config import normalise_text
from semroute.errors import OutcomeDataError

MAX_PROBLEMS = 20
FORMS = ("long", "wide", "routellm", "mt_bench", "routerarena")
ACCEPTED = ("long: text,model,score[,cost]; "
            "wide: text,<model>_score[,<model>_cost]...; "
            "routellm: prompt,<model>_correct...[,contaminated]; "
            "mt_bench: question_id,category,turn,model,score,judge,question_turns; "
            "routerarena: global_index,...,question,<model>_score,<model>_cost...")
GROUP_COLUMNS = ("category", "subject", "group")
MISSING = ("", "nan", "na", "null", "none")
TRUE = ("true", "yes")
FALSE = ("false", "no")
MT_BENCH_FAILED = -1.0  # FastChat's mark for a judgement it could not parse: no score
# RouterArena's scores come from its metrics as they are; METEOR can go slightly below 0
# (one row of the shared file: -0.033). Scores in [ARENA_LOW, 0) count as 0 and are counted.
ARENA_LOW = -1.0


@dataclass(frozen=True)
class OutcomeTable:
    """An outcome file read into arrays: one row per example, one column per model."""

    source: str
    form: str
    texts: list[str]
    models: list[str]
    scores: np.ndarray  # float64 [n, m] in [0, 1]; NaN where the file has no score
    costs: np.ndarray | None  # float64 [n, m] USD per call; None without cost columns
    lines: list[int]  # 1-based line of each example's first row
    groups: list[str] | None  # category per example, when the file has one
    dropped: int = 0  # rows left out on purpose (routellm: contaminated)
    clipped: int = 0  # scores raised to 0 (routerarena: METEOR-style metrics dip below 0)
    answers: dict[str, list[str]] | None = None  # model -> answer text per example, if given

    def __len__(self) -> int:
        return len(self.texts)


class Problems:
    """Collects up to `MAX_PROBLEMS` problems of one file; `check` raises them together."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []
        self.more = 0

    def add(self, line: int, column: str | None, what: str) -> None:
        if len(self.items) >= MAX_PROBLEMS:
            self.more += 1
            return
        where = f"{self.path}:{line}" + (f": column '{column}'" if column else "")
        self.items.append(f"{where}: {what}")

    def check(self) -> None:
        if self.items:
            more = [f"... and {self.more} more"] if self.more else []
            raise OutcomeDataError(self.items + more)


def read_outcome_file(path: str | Path) -> OutcomeTable:
    """Read an outcome CSV in any of the accepted forms (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise OutcomeDataError([f"{path}: outcome file not found"])
    if not path.is_file():
        raise OutcomeDataError([f"{path}: not a file"])
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # answers and prompts can be huge
    problems = Problems(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            form = detect_form(header, problems)
            table = READERS[form](path, header, rows(reader, header, problems), problems)
    except UnicodeDecodeError as exc:
        raise OutcomeDataError([f"{path}: not UTF-8 text (byte {exc.start}); save the file "
                                f"as UTF-8"]) from None
    except csv.Error as exc:
        raise OutcomeDataError([f"{path}: not a readable CSV ({exc})"]) from None
    except OSError as exc:
        raise OutcomeDataError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    problems.check()
    if not table.texts:
        problems.add(2, None, "no examples (only a header, or every row left out)")
        problems.check()
    return table


def detect_form(header: list[str], problems: Problems) -> str:
    """The form a header belongs to; an unknown header is a problem listing the forms."""
    cols, form = set(header), ""
    if not header:
        problems.add(1, None, f"empty file: expected a CSV header of one of the forms ({ACCEPTED})")
    elif "question_turns" in cols:
        form = "mt_bench"
        require(header, ("question_id", "turn", "model", "score"), problems)
    elif "question" in cols and suffixed(header, "_score"):
        form = "routerarena"
    elif "prompt" in cols:
        form = "routellm"
        if not suffixed(header, "_correct"):
            problems.add(1, None, "column '<model>_correct' is missing: a routellm file needs "
                         "one per model (e.g. gpt4_1106_correct)")
    elif "text" in cols and "model" in cols:
        form = "long"
        require(header, ("score",), problems)
    elif "text" in cols and suffixed(header, "_score"):
        form = "wide"
    else:
        problems.add(1, None, f"unknown header ({', '.join(header)[:200]}): expected one of "
                     f"the forms {ACCEPTED}")
    problems.check()
    return form


def require(header: list[str], columns: tuple[str, ...], problems: Problems) -> None:
    for col in columns:
        if col not in header:
            problems.add(1, col, f"missing from the header (columns: {', '.join(header)})")


def suffixed(header: list[str], suffix: str) -> list[str]:
    """Model names of the columns `<model><suffix>`, in header order."""
    return [h[: -len(suffix)] for h in header if h.endswith(suffix) and len(h) > len(suffix)]


def rows(reader: Iterator[list[str]], header: list[str],
         problems: Problems) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line, row) per non-blank record; rows of the wrong width are problems."""
    end = getattr(reader, "line_num", 1)
    for raw in reader:
        start, end = end + 1, getattr(reader, "line_num", end + 1)
        if not raw or (len(raw) == 1 and not raw[0].strip()):
            continue
        if len(raw) != len(header):
            problems.add(start, None, f"{len(raw)} fields, but the header has {len(header)}: "
                         f"quote fields holding commas or newlines")
            continue
        yield start, dict(zip(header, raw, strict=True))


def number(value: str, line: int, column: str, problems: Problems, *, low: float = 0.0,
           high: float = 1.0, what: str = "a score") -> float:
    """A value in [low, high] (true/false read as 1/0); NaN for an empty cell."""
    v = value.strip().lower()
    if v in MISSING:
        return math.nan
    if v in TRUE or v in FALSE:
        return 1.0 if v in TRUE else 0.0
    try:
        x = float(v)
    except ValueError:
        problems.add(line, column, f"{value[:40]!r} is not a number: write {what} "
                     f"in [{low:g}, {high:g}]")
        return math.nan
    if not low <= x <= high:  # also catches inf; NaN is taken above
        problems.add(line, column, f"{value} is outside [{low:g}, {high:g}]: write {what} "
                     f"in that range")
        return math.nan
    return x


def cost(value: str, line: int, column: str, problems: Problems) -> float:
    """A cost in USD per call (>= 0); NaN for an empty cell."""
    try:
        if float(value) < 0:
            problems.add(line, column, f"the cost {value} is negative: write USD per call >= 0")
            return math.nan
    except ValueError:
        pass
    return number(value, line, column, problems, high=math.inf, what="a cost in USD")


def text_of(row: dict[str, str], column: str, line: int, problems: Problems) -> str:
    text = row[column]
    if not text.strip():
        problems.add(line, column, "the text is empty: give the prompt the scores are for")
    return text


def group_column(header: list[str]) -> str | None:
    return next((c for c in GROUP_COLUMNS if c in header), None)


def read_wide(path: Path, header: list[str], records: Iterator[tuple[int, dict[str, str]]],
              problems: Problems) -> OutcomeTable:
    """One example per row: text, `<model>_score` and optional `<model>_cost` columns."""
    models = suffixed(header, "_score")
    for m in suffixed(header, "_cost"):
        if m not in models:
            problems.add(1, f"{m}_cost", f"has no '{m}_score' column: add it or rename")
    return per_row(path, "wide", header, records, problems, text_col="text", models=models,
                   score_col="{}_score", cost_col="{}_cost", answer_col=None)


def read_routerarena(path: Path, header: list[str],
                     records: Iterator[tuple[int, dict[str, str]]],
                     problems: Problems) -> OutcomeTable:
    """RouterArena: one example per question, `<model>_score`/`_cost`/`_answer` columns."""
    return per_row(path, "routerarena", header, records, problems, text_col="question",
                   models=suffixed(header, "_score"), score_col="{}_score",
                   cost_col="{}_cost", answer_col="{}_answer", low=ARENA_LOW)


def read_routellm(path: Path, header: list[str], records: Iterator[tuple[int, dict[str, str]]],
                  problems: Problems) -> OutcomeTable:
    """RouteLLM's eval CSVs: `<model>_correct` booleans; contaminated rows are left out."""
    return per_row(path, "routellm", header, records, problems, text_col="prompt",
                   models=suffixed(header, "_correct"), score_col="{}_correct",
                   cost_col=None, answer_col="{}_response", drop_col="contaminated")


def per_row(path: Path, form: str, header: list[str],
            records: Iterator[tuple[int, dict[str, str]]], problems: Problems, *,
            text_col: str, models: list[str], score_col: str, cost_col: str | None,
            answer_col: str | None, drop_col: str | None = None,
            low: float = 0.0) -> OutcomeTable:
    """The forms with one example per row and per-model columns; scores in [low, 0) are
    raised to 0 and counted as `clipped`."""
    group_col = group_column(header)
    cost_cols = {m: cost_col.format(m) for m in models
                 if cost_col and cost_col.format(m) in header}
    answer_cols = {m: answer_col.format(m) for m in models
                   if answer_col and answer_col.format(m) in header}
    has_drop = drop_col is not None and drop_col in header
    texts: list[str] = []
    lines: list[int] = []
    groups: list[str] = []
    scores: list[list[float]] = []
    costs: list[list[float]] = []
    answers: dict[str, list[str]] = {m: [] for m in answer_cols}
    dropped = clipped = 0
    for line, row in records:
        if has_drop and drop_col is not None:
            flag = number(row[drop_col], line, drop_col, problems, what="true or false")
            if flag == 1.0:
                dropped += 1
                continue
        texts.append(text_of(row, text_col, line, problems))
        lines.append(line)
        groups.append(row[group_col] if group_col else "")
        row_scores = [number(row[score_col.format(m)], line, score_col.format(m), problems,
                             low=low) for m in models]
        clipped += sum(1 for x in row_scores if x < 0)
        scores.append([max(x, 0.0) if x < 0 else x for x in row_scores])
        costs.append([cost(row[cost_cols[m]], line, cost_cols[m], problems)
                      if m in cost_cols else math.nan for m in models])
        for m, col in answer_cols.items():
            answers[m].append(row[col])
    return OutcomeTable(str(path), form, texts, models, matrix(scores, len(models)),
                        matrix(costs, len(models)) if cost_cols else None, lines,
                        groups if group_col else None, dropped, clipped, answers or None)


def matrix(values: list[list[float]], m: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(len(values), m)


class Grouped:
    """Examples built from one row per (example, model): long form and MT-Bench."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.index: dict[object, int] = {}
        self.texts: list[str] = []
        self.lines: list[int] = []
        self.groups: list[str] = []
        self.models: dict[str, int] = {}
        self.cells: dict[tuple[int, int], tuple[float, float, int]] = {}

    def add(self, key: object, text: str, group: str, model: str, line: int, score: float,
            cost_usd: float, what: str) -> None:
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.texts)
            self.texts.append(text)
            self.lines.append(line)
            self.groups.append(group)
        j = self.models.setdefault(model, len(self.models))
        seen = self.cells.get((i, j))
        if seen is not None:
            self.problems.add(line, "model", f"the same {what} and model {model!r} as line "
                              f"{seen[2]}: keep one row per pair (or average them first)")
            return
        self.cells[(i, j)] = (score, cost_usd, line)

    def table(self, path: Path, form: str, *, with_costs: bool,
              with_groups: bool) -> OutcomeTable:
        n, m = len(self.texts), len(self.models)
        scores = np.full((n, m), np.nan)
        costs = np.full((n, m), np.nan)
        for (i, j), (s, c, _) in self.cells.items():
            scores[i, j], costs[i, j] = s, c
        return OutcomeTable(str(path), form, self.texts, list(self.models), scores,
                            costs if with_costs else None, self.lines,
                            self.groups if with_groups else None)


def read_long(path: Path, header: list[str], records: Iterator[tuple[int, dict[str, str]]],
              problems: Problems) -> OutcomeTable:
    """`text,model,score[,cost]`: rows of the same (normalised) text form one example."""
    grouped = Grouped(problems)
    group_col = group_column(header)
    has_cost = "cost" in header
    for line, row in records:
        text = text_of(row, "text", line, problems)
        model = row["model"].strip()
        if not model:
            problems.add(line, "model", "the model name is empty")
            continue
        score = number(row["score"], line, "score", problems)
        c = cost(row["cost"], line, "cost", problems) if has_cost else math.nan
        grouped.add(normalise_text(text), text, row[group_col] if group_col else "", model,
                    line, score, c, "text")
    return grouped.table(path, "long", with_costs=has_cost, with_groups=group_col is not None)


def read_mt_bench(path: Path, header: list[str], records: Iterator[tuple[int, dict[str, str]]],
                  problems: Problems) -> OutcomeTable:
    """MT-Bench single-answer judgements: one example per (question, turn); the text of turn
    t is the question's turns 1..t joined by blank lines; scores 1-10 become score / 10."""
    grouped = Grouped(problems)
    has_category = "category" in header
    for line, row in records:
        qid, model = row["question_id"].strip(), row["model"].strip()
        if not qid or not model:
            problems.add(line, "question_id" if not qid else "model", "is empty")
            continue
        try:
            turn = int(row["turn"])
        except ValueError:
            problems.add(line, "turn", f"{row['turn'][:20]!r} is not a turn number (1, 2, ...)")
            continue
        try:
            turns = json.loads(row["question_turns"])
        except json.JSONDecodeError as exc:
            problems.add(line, "question_turns", f"not a JSON list of strings ({exc.msg})")
            continue
        if not (isinstance(turns, list) and all(isinstance(t, str) for t in turns)):
            problems.add(line, "question_turns", "not a JSON list of strings")
            continue
        if not 1 <= turn <= len(turns):
            problems.add(line, "turn", f"turn {turn} but the question has {len(turns)} turns")
            continue
        text = "\n\n".join(turns[:turn])
        if not text.strip():
            problems.add(line, "question_turns", "the question text is empty")
            continue
        raw = row["score"].strip()
        value = number(raw, line, "score", problems, low=MT_BENCH_FAILED, high=10.0,
                       what="a judge score 1-10 (-1: no judgement)")
        score = math.nan if value < 0 or math.isnan(value) else value / 10.0
        if raw.lower() in TRUE + FALSE:
            problems.add(line, "score", "a judge score is a number 1-10, not true/false")
        elif 0 > value > MT_BENCH_FAILED:
            problems.add(line, "score", f"{raw} is outside [0, 10]: write a judge score 1-10 "
                         f"(-1: no judgement)")
        grouped.add((qid, turn), text, row["category"] if has_category else "", model, line,
                    score, math.nan, f"question {qid} turn {turn}")
    return grouped.table(path, "mt_bench", with_costs=False, with_groups=has_category)


READERS = {"long": read_long, "wide": read_wide, "routellm": read_routellm,
           "mt_bench": read_mt_bench, "routerarena": read_routerarena}
